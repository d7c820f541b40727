//! Running a runner while holding its lease: what `project` and `saga` share.

use super::telemetry::Running;
use super::Result;
use crate::projection::lease::Lease;
use crate::EventStore;
use std::future::Future;
use tokio::sync::watch;

/// Why [`while_holding`] returned.
pub(crate) enum Ended {
    /// SIGINT or SIGTERM (or the runner finished).
    Done,
    /// The caller's `interrupt` resolved.
    Interrupted,
    /// The lease was lost (not renewed for a whole TTL, or taken over): the runner
    /// stopped writing; the caller may stand by for the lease again.
    LeaseLost,
}

/// Runs `run` (a runner's loop, given its stop signal) until SIGINT/SIGTERM or
/// `interrupt` resolves or the lease is lost, then stops it, waits for it and
/// releases `lease`. A runner that ends by itself ends this too.
pub(crate) async fn while_holding<F, E>(
    lease: Lease,
    key: &str,
    run: impl FnOnce(watch::Receiver<bool>) -> F,
    interrupt: impl Future<Output = ()>,
) -> Result<Ended>
where
    F: Future<Output = std::result::Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let (stop, stopped) = watch::channel(false);
    let mut task = tokio::spawn(run(stopped));
    let mut lost = lease.lost();
    let ended = tokio::select! {
        _ = super::wait_for_signal() => Ended::Done,
        () = interrupt => Ended::Interrupted,
        _ = lost.wait_for(|l| *l) => {
            tracing::warn!(key, "lease lost: stopping, then standing by");
            Ended::LeaseLost
        }
        result = &mut task => {
            lease.release().await;
            result??;
            return Ok(Ended::Done);
        }
    };
    let _ = stop.send(true);
    let stopped = (&mut task).await?;
    lease.release().await;
    match (stopped, &ended) {
        (Ok(()), _) => Ok(ended),
        // Writes refused because another instance took over: expected once lost.
        (Err(_), Ended::LeaseLost) => Ok(ended),
        (Err(e), _) => Err(e.into()),
    }
}

/// Stands by until this instance holds the lease on `key` (`Some`), or
/// SIGINT/SIGTERM arrives (`None`); its health and metrics say which role it is in.
pub(crate) async fn take_lease(
    store: &EventStore,
    key: &str,
    ttl: std::time::Duration,
    telemetry: &Running,
) -> Result<Option<Lease>> {
    telemetry.consumer(key, false);
    let lease = tokio::select! {
        lease = Lease::acquire(store, key, ttl) => lease?,
        _ = super::wait_for_signal() => return Ok(None),
    };
    telemetry.consumer(key, true);
    Ok(Some(lease))
}

/// Tries `attempt` until it succeeds, once a second (the server may be away), or
/// returns `None` once SIGINT/SIGTERM has arrived.
pub(crate) async fn until_ok<T, E, F>(what: &str, mut attempt: impl FnMut() -> F) -> Option<T>
where
    E: std::fmt::Display,
    F: Future<Output = std::result::Result<T, E>>,
{
    loop {
        tokio::select! {
            result = attempt() => match result {
                Ok(value) => return Some(value),
                Err(e) => tracing::warn!(error = %e, "{what}: trying again"),
            },
            _ = super::wait_for_signal() => return None,
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = super::wait_for_signal() => return None,
        }
    }
}
