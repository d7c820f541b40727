//! Queries answered from a projection's view (`view_<projection>`), with
//! read-your-writes on demand: a query carrying `Jetsource-Min-Seq` waits, bounded,
//! until the projection's checkpoint has reached that sequence.

use super::reply::{Rejection, Status};
use crate::projection::{storage, versions};
use async_nats::jetstream::context::CreateKeyValueError;
use async_nats::jetstream::kv;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
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

/// A string field a query needs, or a 400 naming it.
///
/// ```
/// let fields = serde_json::json!({"email": "a@b.co"}).as_object().unwrap().clone();
/// assert_eq!(jetsource::node::views::string_field(&fields, "email").unwrap(), "a@b.co");
/// assert!(jetsource::node::views::string_field(&fields, "id").is_err());
/// ```
pub fn string_field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, Rejection> {
    fields.get(name).and_then(Value::as_str).ok_or_else(|| {
        Rejection::new(
            Status::Malformed,
            "malformed",
            format!("body needs an \"{name}\" string"),
        )
    })
}

/// An id field a query needs: a string of the id grammar
/// ([`validate_id`](crate::subjects::validate_id)), or a 400/422 naming it.
///
/// ```
/// let fields = serde_json::json!({"id": "p-1", "bad": "a b"}).as_object().unwrap().clone();
/// assert_eq!(jetsource::node::views::id_field(&fields, "id").unwrap(), "p-1");
/// assert_eq!(jetsource::node::views::id_field(&fields, "bad").unwrap_err().status.code(), 422);
/// ```
pub fn id_field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, Rejection> {
    let id = string_field(fields, name)?;
    crate::subjects::validate_id(id).map_err(|reason| {
        Rejection::new(
            Status::Invalid,
            "invalid_id",
            format!("\"{name}\" {reason}"),
        )
    })?;
    Ok(id)
}

/// Read access to a view's rows.
#[derive(Debug, Clone)]
pub struct Rows {
    kv: kv::Store,
    store: crate::store::EventStore,
}

/// One page of rows in the order they were last written, and where the next
/// page starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Keys and values.
    pub rows: Vec<(String, Value)>,
    /// The cursor to pass as `after` for the next page.
    pub next: Option<u64>,
}

/// Most bytes one page of rows may carry from the server.
const MAX_PAGE_BYTES: usize = 1024 * 1024;

fn unavailable(e: impl std::fmt::Display) -> Rejection {
    Rejection::new(Status::Unavailable, "store_unavailable", e)
}

impl Rows {
    /// A row's value (`None` if absent or deleted). A key no row can have (too
    /// long, or not a KV key: built from a client's bad input) is a 422, never a
    /// request to the server.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, Rejection> {
        let invalid = |why: String| {
            let shown: String = key.chars().take(64).collect();
            Rejection::new(Status::Invalid, "invalid_key", format!("{shown:?}: {why}"))
        };
        if key.len() > crate::projection::MAX_KEY_BYTES {
            return Err(invalid(format!(
                "{} bytes, more than a row key may have",
                key.len()
            )));
        }
        crate::subjects::validate_kv_key(key).map_err(|reason| invalid(format!("it {reason}")))?;
        if !storage::is_row_key(key) {
            return Ok(None);
        }
        let Some(bytes) = self.kv.get(key).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let row = storage::decode_row(&bytes)
            .ok_or_else(|| unavailable(format!("row {key} is not a stored row")))?;
        Ok(row.value)
    }

    /// Up to `limit` live rows whose keys start with `prefix` (ending in `.`),
    /// in the order they were last written, starting after cursor `after` (0 for
    /// the first page). A row written while a client pages through may show up
    /// again on a later page, but no row present throughout is skipped.
    ///
    /// One direct get per row (`next_by_subj` from the cursor), so a page costs
    /// `limit + 1` lookups whatever the view's size. Not one batched direct get:
    /// the server answers a batch with a pending count that it computes over
    /// every key after the cursor, which made a page's time grow with the view.
    pub async fn page(&self, prefix: &str, after: u64, limit: usize) -> Result<Page, Rejection> {
        let bucket_prefix = format!("$KV.{}.", self.kv.name);
        let filter = format!("{bucket_prefix}{prefix}>");
        let mut rows = Vec::with_capacity(limit);
        let mut cursor = after;
        let mut bytes = 0;
        loop {
            let request = serde_json::json!({"seq": cursor + 1, "next_by_subj": filter});
            let (messages, _) = self
                .store
                .direct_get_on(&self.kv.stream_name, &request, false)
                .await
                .map_err(unavailable)?;
            let Some(msg) = messages.first() else {
                return Ok(Page { rows, next: None });
            };
            if rows.len() == limit || bytes > MAX_PAGE_BYTES {
                // Something follows this page.
                return Ok(Page {
                    rows,
                    next: Some(cursor),
                });
            }
            let header = |name: &str| msg.headers.as_ref().and_then(|h| h.get(name));
            cursor = header("Nats-Sequence")
                .and_then(|s| s.as_str().parse().ok())
                .ok_or_else(|| unavailable("a direct get reply without Nats-Sequence"))?;
            if header("KV-Operation").is_some() {
                continue; // a deleted row's marker
            }
            let Some(key) = header("Nats-Subject")
                .and_then(|s| s.as_str().strip_prefix(&bucket_prefix))
                .filter(|key| storage::is_row_key(key))
            else {
                continue;
            };
            let row = storage::decode_row(&msg.payload)
                .ok_or_else(|| unavailable(format!("row {key} is not a stored row")))?;
            if let Some(value) = row.value {
                bytes += msg.payload.len();
                rows.push((key.to_string(), value));
            }
        }
    }
}

pub(crate) struct Served {
    pub(crate) queries: Box<dyn ViewQueries>,
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

async fn open_bucket(
    store: &crate::store::EventStore,
    name: String,
) -> Result<kv::Store, CreateKeyValueError> {
    let config = crate::store::buckets::plain(name, store.config().replicas);
    crate::store::buckets::ensure(store.jetstream(), config).await
}

impl Rows {
    /// The rows in bucket `name`, created if missing.
    async fn open(
        store: &crate::store::EventStore,
        name: String,
    ) -> Result<Rows, CreateKeyValueError> {
        Ok(Rows {
            kv: open_bucket(store, name).await?,
            store: store.clone(),
        })
    }
}

impl Served {
    pub(crate) async fn open(
        store: &crate::store::EventStore,
        queries: Box<dyn ViewQueries>,
    ) -> Result<Served, CreateKeyValueError> {
        let projection = queries.projection();
        let registry = open_bucket(store, versions::BUCKET.to_string()).await?;
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
            tokio::spawn(async move {
                use futures::StreamExt;
                let Ok(mut updates) = registry.watch(projection).await else {
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
            queries,
            store: store.clone(),
            active,
            current: tokio::sync::RwLock::new((version, rows)),
            watcher,
        })
    }

    /// The rows of the active version (reopened after a rebuild switched it).
    pub(crate) async fn rows(&self) -> Result<(u32, Rows), Rejection> {
        let active = self.active.load(Ordering::Relaxed);
        {
            let current = self.current.read().await;
            if current.0 == active {
                return Ok(current.clone());
            }
        }
        let name = versions::bucket_name(self.queries.projection(), active);
        let rows = Rows::open(&self.store, name).await.map_err(unavailable)?;
        *self.current.write().await = (active, rows.clone());
        Ok((active, rows))
    }

    /// Waits until the view whose rows are `rows` has applied `min_seq` (its
    /// checkpoint lives beside its rows), or answers 503.
    pub(crate) async fn wait_for(
        &self,
        rows: &Rows,
        min_seq: u64,
        timeout: Duration,
    ) -> Result<(), Rejection> {
        let deadline = Instant::now() + timeout;
        loop {
            let applied = storage::read_checkpoint(&rows.kv)
                .await
                .map_err(unavailable)?
                .value;
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
