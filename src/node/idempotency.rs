//! The `commands` KV bucket: the ack of every executed command, under its command
//! id, for a window. A retry inside the window gets the stored ack back.
//!
//! The bucket is an accelerator, not the truth: every event carries its
//! `Jetsource-Command-Id`, and the repository answers a retry of any of an
//! aggregate's last commands from the stream itself. So the bucket defaults to
//! memory storage: a server crash loses only acks the events can vouch for, and
//! safe mode pays one fsync per command, not two.

use super::reply::{Rejection, Status};
use async_nats::jetstream::{self, kv, stream::StorageType};
use bytes::Bytes;
use std::time::Duration;

/// The bucket's name.
pub const BUCKET: &str = "commands";

/// How the `commands` bucket is kept.
#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// How long an ack is kept (the bucket's TTL).
    pub window: Duration,
    /// Memory (default) or file.
    pub storage: StorageType,
    /// Upper bound on the bucket's size; the oldest acks go first.
    pub max_bytes: i64,
    /// Replicas in a cluster.
    pub replicas: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            window: Duration::from_secs(10 * 60),
            storage: StorageType::Memory,
            max_bytes: 256 * 1024 * 1024,
            replicas: 1,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Acks {
    js: jetstream::Context,
    config: kv::Config,
    kv: std::sync::Arc<tokio::sync::RwLock<kv::Store>>,
}

fn unavailable(e: impl std::fmt::Display) -> Rejection {
    Rejection::new(
        Status::Unavailable,
        "store_unavailable",
        format!("idempotency lookup: {e}"),
    )
}

impl Acks {
    pub(crate) async fn open(
        js: &jetstream::Context,
        cfg: &IdempotencyConfig,
    ) -> Result<Acks, jetstream::context::CreateKeyValueError> {
        let config = kv::Config {
            description: "jetsource: acks of executed commands, by command id".into(),
            max_age: cfg.window,
            max_bytes: cfg.max_bytes,
            storage: cfg.storage,
            ..crate::store::buckets::plain(BUCKET, cfg.replicas)
        };
        let kv = crate::store::buckets::ensure(js, config.clone()).await?;
        Ok(Acks {
            js: js.clone(),
            config,
            kv: std::sync::Arc::new(tokio::sync::RwLock::new(kv)),
        })
    }

    /// A memory bucket is gone after a server restart: make it again. The acks it
    /// held are not lost for good: the events carry their command ids.
    async fn reopen(&self) -> Result<kv::Store, Rejection> {
        let kv = crate::store::buckets::ensure(&self.js, self.config.clone())
            .await
            .map_err(unavailable)?;
        *self.kv.write().await = kv.clone();
        tracing::info!(bucket = BUCKET, "idempotency bucket re-created");
        Ok(kv)
    }

    pub(crate) async fn get(&self, command_id: &str) -> Result<Option<Bytes>, Rejection> {
        let kv = self.kv.read().await.clone();
        match kv.get(command_id).await {
            Ok(ack) => Ok(ack),
            Err(_) => self
                .reopen()
                .await?
                .get(command_id)
                .await
                .map_err(unavailable),
        }
    }

    /// Stores an ack without holding up the reply: a retry that overtakes it is
    /// answered from the aggregate's own events.
    pub(crate) fn put(&self, command_id: String, ack: Bytes) {
        let acks = self.clone();
        tokio::spawn(async move {
            let kv = acks.kv.read().await.clone();
            if kv.put(&command_id, ack.clone()).await.is_ok() {
                return;
            }
            let retried = match acks.reopen().await {
                Ok(kv) => kv
                    .put(&command_id, ack)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = retried {
                tracing::warn!(command_id, error = %e, "could not store the command's ack");
            }
        });
    }
}
