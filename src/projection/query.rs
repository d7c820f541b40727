//! Typed queries over a projection's view: what a projection declares it answers,
//! and the read access ([`Rows`]) its answers use.
//!
//! A projection lists its queries in [`Projection::queries`](super::Projection::queries);
//! every node serves them as `qry.<view>.<query>` without knowing the domain. The
//! node decodes the body into the query's request type (a body that does not fit is
//! a 400 naming the field), runs the answer under its query limits and
//! `Jetsource-Min-Seq`, and encodes the response as JSON.
//!
//! ```no_run
//! use jetsource::projection::query::{valid_id, QueryError, Queries, Rows};
//! #[derive(serde::Deserialize)]
//! struct ById { id: String }
//!
//! fn order_queries() -> Queries {
//!     Queries::on("orders").query("get", |rows: Rows, ById { id }| async move {
//!         let id = valid_id("id", &id)?;
//!         rows.get(&format!("order.{id}"))
//!             .await?
//!             .ok_or_else(|| QueryError::not_found(format!("no order {id}")))
//!     })
//! }
//! ```

use super::storage;
use crate::error::Error;
use crate::store::EventStore;
use async_nats::jetstream::context::CreateKeyValueError;
use async_nats::jetstream::kv;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// Why a query was not answered.
pub type QueryError = Error<QueryErrorKind>;

/// The kinds of [`QueryError`], each with the reply status the node sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryErrorKind {
    /// 400 `malformed`: the request cannot be read (the node's answer to a body
    /// that does not fit the request type).
    Malformed(String),
    /// 404 `not_found`: nothing answers the request.
    NotFound(String),
    /// 422 `<code>`: a value in the request is invalid (an id with a `.`, say).
    Invalid {
        /// A stable snake_case code, e.g. `invalid_id`.
        code: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// 503 `store_unavailable`: the view could not be read; retrying is safe.
    Unavailable,
}

impl fmt::Display for QueryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryErrorKind::Malformed(m) | QueryErrorKind::NotFound(m) => f.write_str(m),
            QueryErrorKind::Invalid { message, .. } => f.write_str(message),
            QueryErrorKind::Unavailable => f.write_str("the view could not be read; retry"),
        }
    }
}

impl QueryError {
    /// A 404: nothing answers the request.
    pub fn not_found(message: impl Into<String>) -> QueryError {
        QueryError::new(QueryErrorKind::NotFound(message.into()))
    }

    /// A 422 with a stable `code`: a value in the request is invalid.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> QueryError {
        QueryError::new(QueryErrorKind::Invalid {
            code,
            message: message.into(),
        })
    }

    /// A 400: the request cannot be read.
    pub fn malformed(message: impl Into<String>) -> QueryError {
        QueryError::new(QueryErrorKind::Malformed(message.into()))
    }

    fn unavailable(cause: impl Into<crate::error::BoxError>) -> QueryError {
        QueryError::with_source(QueryErrorKind::Unavailable, cause)
    }
}

/// `value` if it is an id of the id grammar ([`validate_id`](crate::subjects::validate_id)),
/// else a 422 `invalid_id` naming `field`. Check ids a client sends before building
/// row keys from them.
///
/// ```
/// use jetsource::projection::query::valid_id;
/// assert_eq!(valid_id("id", "p-1").unwrap(), "p-1");
/// assert!(valid_id("id", "a b").is_err());
/// ```
pub fn valid_id<'a>(field: &str, value: &'a str) -> Result<&'a str, QueryError> {
    crate::subjects::validate_id(value)
        .map_err(|reason| QueryError::invalid("invalid_id", format!("\"{field}\" {reason}")))?;
    Ok(value)
}

/// The queries one view answers, served as `qry.<view>.<query>`.
///
/// See the [module docs](self) for an example.
#[derive(Clone, Default)]
pub struct Queries {
    view: Option<&'static str>,
    queries: Vec<(&'static str, Arc<dyn Answer>)>,
}

impl fmt::Debug for Queries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queries")
            .field("view", &self.view)
            .field("queries", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

/// One query with its request and response types erased: JSON fields in, JSON out.
trait Answer: Send + Sync + 'static {
    fn answer(&self, rows: Rows, request: Value) -> BoxFuture<'static, Result<Value, Answered>>;
}

/// Why an erased answer failed: the query refused, or its response would not encode.
pub(crate) enum Answered {
    Refused(QueryError),
    Unencodable(serde_json::Error),
}

struct Typed<F, Request> {
    answer: F,
    request: std::marker::PhantomData<fn(Request)>,
}

impl<F, Fut, Request, Response> Answer for Typed<F, Request>
where
    F: Fn(Rows, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, QueryError>> + Send + 'static,
    Request: DeserializeOwned + 'static,
    Response: Serialize,
{
    fn answer(&self, rows: Rows, request: Value) -> BoxFuture<'static, Result<Value, Answered>> {
        let request = match serde_json::from_value::<Request>(request) {
            Ok(request) => request,
            Err(e) => {
                let refused = QueryError::malformed(format!("body: {e}"));
                return Box::pin(async move { Err(Answered::Refused(refused)) });
            }
        };
        let answered = (self.answer)(rows, request);
        Box::pin(async move {
            let response = answered.await.map_err(Answered::Refused)?;
            serde_json::to_value(response).map_err(Answered::Unencodable)
        })
    }
}

impl Queries {
    /// No queries (a projection's default).
    pub fn none() -> Queries {
        Queries::default()
    }

    /// Queries served as `qry.<view>.<query>`; `view` is a subject token.
    pub fn on(view: &'static str) -> Queries {
        Queries {
            view: Some(view),
            queries: Vec::new(),
        }
    }

    /// Adds query `name`: the request body is decoded into `Request` (an empty body
    /// as `{}`), `answer` reads the view's rows, and its `Response` goes back as JSON.
    pub fn query<Request, Response, F, Fut>(mut self, name: &'static str, answer: F) -> Queries
    where
        F: Fn(Rows, Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response, QueryError>> + Send + 'static,
        Request: DeserializeOwned + 'static,
        Response: Serialize,
    {
        self.queries.retain(|(n, _)| *n != name);
        self.queries.push((
            name,
            Arc::new(Typed {
                answer,
                request: std::marker::PhantomData,
            }),
        ));
        self
    }

    /// The `<view>` subject token, if any query was declared on one.
    pub fn view(&self) -> Option<&'static str> {
        self.view.filter(|_| !self.queries.is_empty())
    }

    /// The `<query>` tokens, in the order they were added.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.queries.iter().map(|(name, _)| *name)
    }

    /// Answers query `name` with `request` (the body's JSON) over `rows`.
    pub(crate) fn answer(
        &self,
        name: &str,
        rows: Rows,
        request: Value,
    ) -> Option<BoxFuture<'static, Result<Value, Answered>>> {
        let (_, query) = self.queries.iter().find(|(n, _)| *n == name)?;
        Some(query.answer(rows, request))
    }
}

/// Read access to a view's rows.
#[derive(Debug, Clone)]
pub struct Rows {
    kv: kv::Store,
    store: EventStore,
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

impl Rows {
    /// The rows in bucket `name`, created if missing.
    pub(crate) async fn open(
        store: &EventStore,
        name: String,
    ) -> Result<Rows, CreateKeyValueError> {
        Ok(Rows {
            kv: crate::store::buckets::open_plain(store, name).await?,
            store: store.clone(),
        })
    }

    /// The stream sequence this view has applied up to (its checkpoint).
    pub(crate) async fn applied(&self) -> Result<u64, QueryError> {
        storage::read_applied(&self.kv)
            .await
            .map_err(QueryError::unavailable)
    }

    /// A row's value (`None` if absent or deleted). A key no row can have (too
    /// long, or not a KV key: built from a client's bad input) is a 422
    /// `invalid_key`, never a request to the server.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, QueryError> {
        let invalid = |why: String| {
            let shown: String = key.chars().take(64).collect();
            QueryError::invalid("invalid_key", format!("{shown:?}: {why}"))
        };
        if key.len() > super::MAX_KEY_BYTES {
            return Err(invalid(format!(
                "{} bytes, more than a row key may have",
                key.len()
            )));
        }
        crate::subjects::validate_kv_key(key).map_err(|reason| invalid(format!("it {reason}")))?;
        if !storage::is_row_key(key) {
            return Ok(None);
        }
        let Some(bytes) = self.kv.get(key).await.map_err(QueryError::unavailable)? else {
            return Ok(None);
        };
        let row = storage::decode_row(&bytes)
            .ok_or_else(|| QueryError::unavailable(format!("row {key} is not a stored row")))?;
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
    pub async fn page(&self, prefix: &str, after: u64, limit: usize) -> Result<Page, QueryError> {
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
                .map_err(QueryError::unavailable)?;
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
                .ok_or_else(|| {
                    QueryError::unavailable("a direct get reply without Nats-Sequence")
                })?;
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
                .ok_or_else(|| QueryError::unavailable(format!("row {key} is not a stored row")))?;
            if let Some(value) = row.value {
                bytes += msg.payload.len();
                rows.push((key.to_string(), value));
            }
        }
    }
}
