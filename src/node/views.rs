//! Queries answered from a projection's view (`view_<projection>`), with
//! read-your-writes on demand: a query carrying `Jetsource-Min-Seq` waits, bounded,
//! until the projection's checkpoint has reached that sequence.

use super::reply::{Rejection, Status};
use async_nats::jetstream::kv;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// Queries over one projection's rows, served as `qry.<view>.<query>`.
pub trait ViewQueries: Send + Sync + 'static {
    /// The `<view>` subject token, e.g. `person`.
    fn view(&self) -> &'static str;
    /// The projection whose rows these are, e.g. `person_directory`.
    fn projection(&self) -> &'static str;
    /// The `<query>` tokens served.
    fn queries(&self) -> &[&'static str];
    /// Answers `query` with the request body's fields over the view's rows.
    fn answer<'a>(
        &'a self,
        rows: &'a Rows,
        query: &'a str,
        fields: Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, Rejection>>;
}

/// Read access to a view's rows.
#[derive(Debug, Clone)]
pub struct Rows {
    kv: kv::Store,
}

fn unavailable(e: impl std::fmt::Display) -> Rejection {
    Rejection::new(Status::Unavailable, "store_unavailable", e)
}

impl Rows {
    /// A row's value (`None` if absent or deleted).
    pub async fn get(&self, key: &str) -> Result<Option<Value>, Rejection> {
        let Some(bytes) = self.kv.get(key).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let row: crate::projection::Row = serde_json::from_slice(&bytes).map_err(unavailable)?;
        Ok(row.value)
    }

    /// Every live row whose key starts with `prefix` (a full scan: for modest views).
    pub async fn scan(&self, prefix: &str) -> Result<Vec<(String, Value)>, Rejection> {
        use futures::StreamExt;
        let mut keys = self.kv.keys().await.map_err(unavailable)?;
        let mut wanted = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            if key.starts_with(prefix) {
                wanted.push(key);
            }
        }
        let rows = futures::stream::iter(wanted)
            .map(|key| async move { self.get(&key).await.map(|v| v.map(|v| (key, v))) })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        rows.into_iter().filter_map(Result::transpose).collect()
    }
}

pub(crate) struct Served {
    pub(crate) queries: Box<dyn ViewQueries>,
    pub(crate) rows: Rows,
    checkpoints: kv::Store,
}

impl Served {
    pub(crate) async fn open(
        js: &async_nats::jetstream::Context,
        queries: Box<dyn ViewQueries>,
        replicas: usize,
    ) -> Result<Served, async_nats::jetstream::context::CreateKeyValueError> {
        let open = |name: String| async move {
            match js.get_key_value(&name).await {
                Ok(kv) => Ok(kv),
                Err(_) => {
                    js.create_key_value(kv::Config {
                        bucket: name,
                        history: 1,
                        num_replicas: replicas,
                        ..Default::default()
                    })
                    .await
                }
            }
        };
        let rows = Rows {
            kv: open(format!("view_{}", queries.projection())).await?,
        };
        let checkpoints = open(crate::projection::runner::CHECKPOINTS.to_string()).await?;
        Ok(Served {
            queries,
            rows,
            checkpoints,
        })
    }

    /// Waits until the projection has applied `min_seq`, or answers 503.
    pub(crate) async fn wait_for(&self, min_seq: u64, timeout: Duration) -> Result<(), Rejection> {
        let key = format!("proj_{}", self.queries.projection());
        let deadline = Instant::now() + timeout;
        loop {
            let applied = self
                .checkpoints
                .get(&key)
                .await
                .map_err(unavailable)?
                .and_then(|b| String::from_utf8_lossy(&b).parse::<u64>().ok())
                .unwrap_or(0);
            if applied >= min_seq {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Rejection::new(
                    Status::Unavailable,
                    "view_behind",
                    format!(
                        "view {} has applied sequence {applied}, not yet {min_seq}; retry",
                        self.queries.projection()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
