//! Connection flags shared by every subcommand, natscli-style.

use std::path::PathBuf;

/// Where the server is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Connection {
    /// Server URL(s), comma-separated.
    #[arg(
        long,
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub(crate) nats_url: String,
    /// Credentials file (JWT + nkey seed).
    #[arg(long, global = true, env = "NATS_CREDS")]
    creds: Option<PathBuf>,
    /// User name.
    #[arg(long, global = true, env = "NATS_USER")]
    user: Option<String>,
    /// Password.
    #[arg(long, global = true, env = "NATS_PASSWORD")]
    password: Option<String>,
    /// Token.
    #[arg(long, global = true, env = "NATS_TOKEN")]
    token: Option<String>,
    /// File holding an nkey seed.
    #[arg(long, global = true, env = "NATS_NKEY")]
    nkey: Option<PathBuf>,
    /// CA certificate to trust (PEM).
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), with --tls-key.
    #[arg(long, global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Client key (PEM), with --tls-cert.
    #[arg(long, global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require TLS.
    #[arg(long, global = true)]
    tls: bool,
    /// Subject prefix of this deployment (default none).
    #[arg(long, global = true, env = "JETSOURCE_PREFIX", default_value = "")]
    pub(crate) prefix: String,
}

impl Connection {
    pub(crate) async fn connect(&self, name: &str) -> super::Result<async_nats::Client> {
        self.connect_with(name, async_nats::ConnectOptions::new())
            .await
    }

    /// [`connect`](Self::connect) starting from `options` (a node's bounded
    /// subscription queues, say).
    pub(crate) async fn connect_with(
        &self,
        name: &str,
        options: async_nats::ConnectOptions,
    ) -> super::Result<async_nats::Client> {
        let mut options = options.name(name);
        if let Some(path) = &self.creds {
            options = options.credentials_file(path).await?;
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &self.nkey {
            let seed = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            options = options.nkey(seed.trim().to_string());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        if self.tls {
            options = options.require_tls(true);
        }
        Ok(crate::connect_with(&self.nats_url, options).await?)
    }

    /// Connects and opens the event store under this deployment's prefix.
    pub(crate) async fn open_store(&self, name: &str) -> super::Result<crate::EventStore> {
        let client = self.connect(name).await?;
        let config = crate::StoreConfig {
            prefix: self.prefix.clone(),
            ..Default::default()
        };
        Ok(crate::EventStore::open(client, config).await?)
    }

    pub(crate) fn subjects(&self) -> crate::Subjects {
        crate::Subjects::new(&self.prefix)
    }
}
