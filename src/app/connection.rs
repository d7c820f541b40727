//! Connection flags shared by every subcommand, as natscli has them: the same
//! names, the same nine environment variables, and natscli's contexts (ADR-21:
//! `~/.config/nats/context/<name>.json`, the selected one named in
//! `~/.config/nats/context.txt`). A flag or variable wins over the context, the
//! context over the defaults.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The URL when neither flag, variable nor context names one.
const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// Where the server is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Connection {
    /// Server URL(s), comma-separated [default: the context's, else nats://127.0.0.1:4222].
    #[arg(
        short = 's',
        long = "server",
        visible_alias = "nats-url",
        global = true,
        env = "NATS_URL"
    )]
    server: Option<String>,
    /// User name (or token, as natscli takes it, when no password is given).
    #[arg(long, global = true, env = "NATS_USER")]
    user: Option<String>,
    /// Password.
    #[arg(long, global = true, env = "NATS_PASSWORD")]
    password: Option<String>,
    /// Credentials file (JWT + nkey seed).
    #[arg(long, global = true, env = "NATS_CREDS")]
    creds: Option<PathBuf>,
    /// File holding an nkey seed.
    #[arg(long, global = true, env = "NATS_NKEY")]
    nkey: Option<PathBuf>,
    /// Token.
    #[arg(long, global = true, env = "NATS_TOKEN")]
    token: Option<String>,
    /// Client certificate (PEM), with --tlskey.
    #[arg(long, visible_alias = "tls-cert", global = true, env = "NATS_CERT")]
    tlscert: Option<PathBuf>,
    /// Client key (PEM), with --tlscert.
    #[arg(long, visible_alias = "tls-key", global = true, env = "NATS_KEY")]
    tlskey: Option<PathBuf>,
    /// CA certificate to trust (PEM).
    #[arg(long, visible_alias = "tls-ca", global = true, env = "NATS_CA")]
    tlsca: Option<PathBuf>,
    /// Require TLS.
    #[arg(long, global = true)]
    tls: bool,
    /// How long to wait for a reply: `5s`, `500ms`, `2m` or seconds.
    #[arg(long, global = true, env = "NATS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// natscli context to take the settings above from [default: the selected one].
    #[arg(long, global = true, env = "NATS_CONTEXT")]
    context: Option<String>,
    /// Ignore natscli contexts (what `up` gives its children).
    #[arg(long, global = true, hide = true)]
    no_context: bool,
    /// Subject prefix of this deployment (default none).
    #[arg(long, global = true, env = "JETSOURCE_PREFIX", default_value = "")]
    pub(crate) prefix: String,
}

/// A natscli context file (the fields jetsource uses; the others are ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Context {
    url: String,
    token: String,
    user: String,
    password: String,
    creds: String,
    nkey: String,
    cert: String,
    key: String,
    ca: String,
}

/// `5s`, `250ms`, `2m`, `1h`, `30d` or a number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// natscli's configuration directory (`$XDG_CONFIG_HOME/nats` or `~/.config/nats`).
fn nats_config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("nats"))
}

/// The named context, or the selected one if any; an error for a named context
/// that cannot be read.
fn load_context(name: Option<&str>) -> super::Result<Context> {
    let Some(dir) = nats_config_dir() else {
        return Ok(Context::default());
    };
    let name = match name.filter(|n| !n.is_empty()) {
        Some(name) => name.to_string(),
        None => match std::fs::read_to_string(dir.join("context.txt")) {
            Ok(selected) if !selected.trim().is_empty() => selected.trim().to_string(),
            _ => return Ok(Context::default()),
        },
    };
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(format!("{name:?} is not a context name").into());
    }
    let path = dir.join("context").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("reading context {name:?} ({}): {e}", path.display()))?;
    Ok(serde_json::from_str(&text)
        .map_err(|e| format!("context {name:?} ({}): {e}", path.display()))?)
}

/// `value` unless empty.
fn given(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

impl Connection {
    /// The settings in force: flags and variables over the context.
    fn resolved(&self) -> super::Result<Connection> {
        let context = if self.no_context {
            Context::default()
        } else {
            load_context(self.context.as_deref())?
        };
        let path = |flag: &Option<PathBuf>, from: &str| {
            flag.clone().or_else(|| given(from).map(PathBuf::from))
        };
        Ok(Connection {
            server: self.server.clone().or_else(|| given(&context.url)),
            user: self.user.clone().or_else(|| given(&context.user)),
            password: self.password.clone().or_else(|| given(&context.password)),
            token: self.token.clone().or_else(|| given(&context.token)),
            creds: path(&self.creds, &context.creds),
            nkey: path(&self.nkey, &context.nkey),
            tlscert: path(&self.tlscert, &context.cert),
            tlskey: path(&self.tlskey, &context.key),
            tlsca: path(&self.tlsca, &context.ca),
            ..self.clone()
        })
    }

    /// The server URL(s) in force.
    pub(crate) fn url(&self) -> String {
        self.resolved()
            .ok()
            .and_then(|c| c.server)
            .unwrap_or_else(|| DEFAULT_URL.to_string())
    }

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
        let c = self.resolved()?;
        let mut options = options.name(name).request_timeout(Some(c.timeout));
        if let Some(path) = &c.creds {
            options = options.credentials_file(path).await?;
        }
        match (&c.user, &c.password) {
            (Some(user), Some(password)) => {
                options = options.user_and_password(user.clone(), password.clone());
            }
            // natscli: a user without a password is a token.
            (Some(token), None) if c.token.is_none() => options = options.token(token.clone()),
            _ => {}
        }
        if let Some(token) = &c.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &c.nkey {
            options = options.nkey(read_seed(path)?);
        }
        if let Some(ca) = &c.tlsca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&c.tlscert, &c.tlskey) {
            (Some(cert), Some(key)) => {
                options = options
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => return Err("--tlscert and --tlskey go together".into()),
        }
        if c.tls {
            options = options.require_tls(true);
        }
        let url = c.server.unwrap_or_else(|| DEFAULT_URL.to_string());
        Ok(crate::connect_with(&url, options).await?)
    }

    /// Connects and opens the event store under this deployment's prefix.
    pub(crate) async fn open_store(&self, name: &str) -> super::Result<crate::EventStore> {
        let client = self.connect(name).await?;
        Ok(crate::EventStore::open(client, self.store_config()).await?)
    }

    /// The store's configuration under this deployment's prefix.
    pub(crate) fn store_config(&self) -> crate::StoreConfig {
        crate::StoreConfig {
            prefix: self.prefix.clone(),
            ..Default::default()
        }
    }

    pub(crate) fn subjects(&self) -> crate::Subjects {
        crate::Subjects::new(&self.prefix)
    }
}

fn read_seed(path: &Path) -> super::Result<String> {
    let seed =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(seed.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_natscli_writes_them() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
