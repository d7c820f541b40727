//! One active instance per projection: a lease in KV `leases`.
//!
//! The holder creates `<consumer>` with its instance id and renews it (compare-and-
//! set on the revision) every third of the TTL; the bucket's max age expires a
//! lease whose holder died. Another instance waits as a hot standby until it can
//! create the key. A holder that fails to renew learns it through
//! [`Lease::lost`] and must stop writing.

use crate::store::EventStore;
use async_nats::jetstream::kv;
use std::time::Duration;
use tokio::sync::watch;

/// The bucket's name.
pub const BUCKET: &str = "leases";

/// A held lease; renewed in the background until released or lost.
#[derive(Debug)]
pub struct Lease {
    kv: kv::Store,
    key: String,
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Waits until this instance holds the lease on `key`.
    pub async fn acquire(store: &EventStore, key: &str, ttl: Duration) -> Result<Lease, String> {
        let config = kv::Config {
            max_age: ttl,
            ..crate::store::buckets::plain(BUCKET, store.config().replicas)
        };
        let kv = crate::store::buckets::ensure(store.jetstream(), config)
            .await
            .map_err(|e| e.to_string())?;
        let holder = uuid::Uuid::now_v7().to_string();
        let mut announced = false;
        let revision = loop {
            match kv.create(key, holder.clone().into_bytes().into()).await {
                Ok(revision) => break revision,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if !announced {
                        tracing::info!(key, "standby: another instance holds the lease");
                        announced = true;
                    }
                    tokio::time::sleep(ttl / 4).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        tracing::info!(key, "lease acquired");
        let (lost_tx, lost) = watch::channel(false);
        let renewer = {
            let (kv, key) = (kv.clone(), key.to_string());
            tokio::spawn(async move {
                let mut revision = revision;
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match kv
                        .update(&key, holder.clone().into_bytes().into(), revision)
                        .await
                    {
                        Ok(r) => revision = r,
                        Err(e) => {
                            tracing::error!(key, error = %e, "lease lost");
                            let _ = lost_tx.send(true);
                            return;
                        }
                    }
                }
            })
        };
        Ok(Lease {
            kv,
            key: key.to_string(),
            lost,
            renewer,
        })
    }

    /// Turns true if the lease could not be renewed.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Gives the lease up at once, so a standby need not wait for the TTL.
    pub async fn release(self) {
        self.renewer.abort();
        let _ = self.kv.delete(&self.key).await;
    }
}
