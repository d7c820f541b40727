//! One active instance per projection: a lease in KV `leases`.
//!
//! The holder creates `<consumer>` with `<pid>/<instance id>` and renews it (compare-and-
//! set on the revision) every third of the TTL; the bucket's max age expires a
//! lease whose holder died. Another instance waits as a hot standby until it can
//! create the key. A holder rides out a server outage shorter than the TTL; one
//! that could not renew for a whole TTL, or whose key another instance took,
//! learns it through [`Lease::lost`], must stop writing, and may stand by again.

use crate::store::EventStore;
use async_nats::jetstream::kv;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The bucket's name.
pub const BUCKET: &str = "leases";

/// What went wrong taking a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseErrorKind {
    /// The leases bucket could not be opened or created.
    Bucket,
}

impl std::fmt::Display for LeaseErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseErrorKind::Bucket => write!(f, "the {BUCKET} bucket could not be opened"),
        }
    }
}

/// Error of [`Lease::acquire`].
pub type LeaseError = crate::error::Error<LeaseErrorKind>;

/// A held lease; renewed in the background until released or lost.
#[derive(Debug)]
pub struct Lease {
    kv: kv::Store,
    key: String,
    /// The key's revision as this holder last wrote it.
    revision: Arc<AtomicU64>,
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Waits until this instance holds the lease on `key`.
    pub async fn acquire(
        store: &EventStore,
        key: &str,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        let config = kv::Config {
            max_age: ttl,
            ..crate::store::buckets::plain(BUCKET, store.config().replicas)
        };
        let kv = crate::store::buckets::ensure(store.jetstream(), config)
            .await
            .map_err(|e| LeaseError::with_source(LeaseErrorKind::Bucket, e))?;
        let holder = format!("{}/{}", std::process::id(), uuid::Uuid::now_v7());
        let mut announced = false;
        let revision = loop {
            match kv.create(key, holder.clone().into_bytes().into()).await {
                Ok(revision) => break revision,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if !announced {
                        tracing::info!(key, "standby: another instance holds the lease");
                        announced = true;
                    }
                }
                // The server is away (restarting, failing over): ask again later.
                Err(e) => tracing::warn!(key, error = %e, "lease not acquired yet"),
            }
            // A dead holder's key expires a TTL after its last renewal: look often,
            // so the takeover follows within a fraction of a second.
            tokio::time::sleep((ttl / 8).min(Duration::from_millis(250))).await;
        };
        tracing::info!(key, "lease acquired");
        let (lost_tx, lost) = watch::channel(false);
        let revision = Arc::new(AtomicU64::new(revision));
        let renewer = tokio::spawn(renew(
            kv.clone(),
            key.to_string(),
            holder,
            revision.clone(),
            ttl,
            lost_tx,
        ));
        Ok(Lease {
            kv,
            key: key.to_string(),
            revision,
            lost,
            renewer,
        })
    }

    /// Turns true if the lease could not be renewed.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Gives the lease up at once, so a standby need not wait for the TTL. Only
    /// the key as this holder last wrote it is deleted: a lease lost to another
    /// instance stays that instance's (deleting it let the two swap for ever).
    pub async fn release(self) {
        self.renewer.abort();
        let revision = self.revision.load(Ordering::SeqCst);
        let _ = self
            .kv
            .delete_expect_revision(&self.key, Some(revision))
            .await;
    }
}

/// Renews the lease every third of `ttl` until it is lost, which is when another
/// instance holds the key, or when no renewal got through for a whole `ttl` (by
/// then the server may have expired it). A renewal that fails for another reason
/// (the server is away) is retried every second meanwhile; one that timed out may
/// still have landed, so a wrong revision is checked against the key's holder.
async fn renew(
    kv: kv::Store,
    key: String,
    holder: String,
    shared: Arc<AtomicU64>,
    ttl: Duration,
    lost: watch::Sender<bool>,
) {
    let mut renewed = tokio::time::Instant::now();
    let mut wait = ttl / 3;
    let mut revision = shared.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(wait).await;
        let outcome = kv
            .update(&key, holder.clone().into_bytes().into(), revision)
            .await;
        let error = match outcome {
            Ok(r) => {
                (revision, renewed, wait) = (r, tokio::time::Instant::now(), ttl / 3);
                shared.store(r, Ordering::SeqCst);
                continue;
            }
            Err(e) => e,
        };
        let stolen = match kv.entry(&key).await {
            Ok(Some(entry))
                if entry.operation == kv::Operation::Put && *entry.value == *holder.as_bytes() =>
            {
                // Still ours (a renewal that timed out may have landed): renew
                // from its revision straight away.
                (revision, wait) = (entry.revision, Duration::from_millis(100));
                shared.store(revision, Ordering::SeqCst);
                continue;
            }
            Ok(_) => true,
            Err(_) => error.kind() == kv::UpdateErrorKind::WrongLastRevision,
        };
        if stolen || renewed.elapsed() >= ttl {
            tracing::error!(key, error = %error, "lease lost");
            let _ = lost.send(true);
            return;
        }
        tracing::warn!(key, error = %error, "lease not renewed yet: retrying");
        wait = wait.min(Duration::from_secs(1));
    }
}
