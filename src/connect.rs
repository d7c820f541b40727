//! Connecting: a NATS connection checked to be a JetStream server new enough for
//! atomic batches (2.12+).

use crate::error::Error;
use crate::nats_server::{Version, MIN_VERSION};
use std::fmt;

/// What went wrong connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// The server could not be reached or refused the connection.
    Connect,
    /// The server is older than jetsource needs.
    ServerTooOld {
        /// The version it reported.
        found: String,
    },
    /// The server runs without JetStream.
    NoJetStream,
}

impl fmt::Display for ConnectErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect => write!(f, "could not connect to NATS"),
            Self::ServerTooOld { found } => write!(
                f,
                "nats-server {found} is too old: jetsource needs {MIN_VERSION} or newer (atomic batch publish, ADR-50)"
            ),
            Self::NoJetStream => write!(
                f,
                "the NATS server runs without JetStream: start it with -js (or a jetstream {{}} block)"
            ),
        }
    }
}

/// Error of [`connect`] and [`connect_with`].
pub type ConnectError = Error<ConnectErrorKind>;

/// Connects to `url` with default options and checks the server.
///
/// ```no_run
/// # async fn demo() -> Result<(), jetsource::ConnectError> {
/// let client = jetsource::connect("nats://127.0.0.1:4222").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<async_nats::Client, ConnectError> {
    connect_with(url, async_nats::ConnectOptions::new()).await
}

/// Connects with the given options (credentials, TLS, names) and checks the server.
/// `url` may list several servers separated by commas, as `NATS_URL` does for natscli.
///
/// ```no_run
/// # async fn demo() -> Result<(), jetsource::ConnectError> {
/// let options = async_nats::ConnectOptions::with_user_and_password("app".into(), "secret".into());
/// let client = jetsource::connect_with("nats://127.0.0.1:4222", options).await?;
/// # Ok(()) }
/// ```
pub async fn connect_with(
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, ConnectError> {
    let addrs = url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectError::with_source(ConnectErrorKind::Connect, e))?;
    let client = options
        .connect(addrs)
        .await
        .map_err(|e| ConnectError::with_source(ConnectErrorKind::Connect, e))?;
    check_server(&client.server_info())?;
    Ok(client)
}

/// Refuses a server older than [`MIN_VERSION`] or without JetStream.
pub(crate) fn check_server(info: &async_nats::ServerInfo) -> Result<(), ConnectError> {
    let too_old = || {
        ConnectError::new(ConnectErrorKind::ServerTooOld {
            found: info.version.clone(),
        })
    };
    let version: Version = info.version.parse().map_err(|_| too_old())?;
    if version < MIN_VERSION {
        return Err(too_old());
    }
    if !info.jetstream {
        return Err(ConnectError::new(ConnectErrorKind::NoJetStream));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str, jetstream: bool) -> async_nats::ServerInfo {
        async_nats::ServerInfo {
            version: version.into(),
            jetstream,
            ..Default::default()
        }
    }

    #[test]
    fn a_2_11_server_is_refused_with_the_minimum_named() {
        let e = check_server(&info("2.11.9", true)).unwrap_err();
        assert_eq!(
            e.kind(),
            &ConnectErrorKind::ServerTooOld {
                found: "2.11.9".into()
            }
        );
        assert!(e.to_string().contains("2.12.0"), "{e}");
        assert!(check_server(&info("2.12.0", true)).is_ok());
        assert!(check_server(&info("2.15.1-RC.2", true)).is_ok());
        assert_eq!(
            check_server(&info("2.15.1", false)).unwrap_err().kind(),
            &ConnectErrorKind::NoJetStream
        );
    }
}
