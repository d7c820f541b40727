//! Queries answered from a projection's view (`view_<projection>`), with
//! read-your-writes on demand: a query carrying `Jetsource-Min-Seq` waits, bounded,
//! until the projection's checkpoint has reached that sequence.

use super::reply::{Rejection, Status};
use crate::projection::query::{Answered, Queries, QueryError, QueryErrorKind, Rows};
use crate::projection::{storage, versions};
use async_nats::jetstream::context::CreateKeyValueError;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One projection's view as the node serves it: its declared queries, over the
/// rows of whichever version is active.
pub(crate) struct Served {
    pub(crate) view: &'static str,
    projection: String,
    queries: Queries,
    store: crate::store::EventStore,
    /// The active version, kept current by a watch on `view_versions`.
    active: Arc<AtomicU32>,
    /// The rows of the version last opened.
    current: tokio::sync::RwLock<(u32, Rows)>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn unavailable(e: impl std::fmt::Display) -> Rejection {
    Rejection::new(Status::Unavailable, "store_unavailable", e)
}

/// The reply a query's refusal becomes.
pub(crate) fn rejection(error: QueryError) -> Rejection {
    match error.kind() {
        QueryErrorKind::Malformed(m) => Rejection::new(Status::Malformed, "malformed", m),
        QueryErrorKind::NotFound(m) => Rejection::new(Status::NotFound, "not_found", m),
        QueryErrorKind::Invalid { code, message } => {
            Rejection::new(Status::Invalid, *code, message)
        }
        QueryErrorKind::Unavailable => unavailable(&error),
    }
}

impl Served {
    /// Serves `queries` (declared on view `view`) over projection `projection`'s rows.
    pub(crate) async fn open(
        store: &crate::store::EventStore,
        projection: &str,
        view: &'static str,
        queries: Queries,
    ) -> Result<Served, CreateKeyValueError> {
        let registry = crate::store::buckets::open_plain(store, versions::BUCKET).await?;
        let version = registry
            .get(projection)
            .await
            .ok()
            .flatten()
            .and_then(|b| storage::decode_number(&b))
            .unwrap_or(1);
        let active = Arc::new(AtomicU32::new(version));
        let watcher = {
            let active = active.clone();
            let registry = registry.clone();
            let projection = projection.to_string();
            tokio::spawn(async move {
                use futures::StreamExt;
                let Ok(mut updates) = registry.watch(&projection).await else {
                    return;
                };
                while let Some(Ok(entry)) = updates.next().await {
                    if let Some(v) = storage::decode_number(&entry.value) {
                        active.store(v, Ordering::Relaxed);
                    }
                }
            })
        };
        let rows = Rows::open(store, versions::bucket_name(projection, version)).await?;
        Ok(Served {
            view,
            projection: projection.to_string(),
            queries,
            store: store.clone(),
            active,
            current: tokio::sync::RwLock::new((version, rows)),
            watcher,
        })
    }

    /// The `<query>` tokens served.
    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.queries.names()
    }

    /// The rows of the active version (reopened after a rebuild switched it).
    pub(crate) async fn rows(&self) -> Result<Rows, Rejection> {
        let active = self.active.load(Ordering::Relaxed);
        {
            let current = self.current.read().await;
            if current.0 == active {
                return Ok(current.1.clone());
            }
        }
        let name = versions::bucket_name(&self.projection, active);
        let rows = Rows::open(&self.store, name).await.map_err(unavailable)?;
        *self.current.write().await = (active, rows.clone());
        Ok(rows)
    }

    /// Answers `query` with `request` (the body's fields) over `rows`.
    pub(crate) async fn answer(
        &self,
        query: &str,
        rows: Rows,
        request: Value,
    ) -> Result<Value, Rejection> {
        let Some(answering) = self.queries.answer(query, rows, request) else {
            return Err(Rejection::new(
                Status::NotFound,
                "unknown_query",
                format!("view {} has no query {query}", self.view),
            ));
        };
        match answering.await {
            Ok(value) => Ok(value),
            Err(Answered::Refused(e)) => Err(rejection(e)),
            Err(Answered::Unencodable(e)) => {
                tracing::error!(view = self.view, query, error = %e, "a query's answer cannot be encoded as JSON");
                Err(Rejection::new(
                    Status::Internal,
                    "internal",
                    format!("the answer to {}.{query} cannot be encoded: {e}", self.view),
                ))
            }
        }
    }

    /// Waits until the view whose rows are `rows` has applied `min_seq` (its
    /// checkpoint lives beside its rows), or answers 503.
    pub(crate) async fn wait_for(
        &self,
        rows: &Rows,
        min_seq: u64,
        timeout: Duration,
    ) -> Result<(), Rejection> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut waited = false;
        loop {
            let applied = rows.applied().await.map_err(rejection)?;
            if applied >= min_seq {
                if waited {
                    crate::telemetry::metrics::min_seq_wait(self.view, true, started.elapsed());
                }
                return Ok(());
            }
            waited = true;
            if Instant::now() >= deadline {
                crate::telemetry::metrics::min_seq_wait(self.view, false, started.elapsed());
                return Err(Rejection::new(
                    Status::Unavailable,
                    "view_behind",
                    format!(
                        "view {} has applied sequence {applied}, not yet {min_seq}; retry",
                        self.projection
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
