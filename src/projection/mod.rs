//! Projections: read models kept in KV buckets by a durable consumer.
//!
//! A [`Projection`] names the aggregate types it reads and applies one event at a
//! time to a [`View`]: the rows of bucket `view_<name>`. `apply` is pure and
//! synchronous; when it asks for a row not loaded yet, the runner loads it and runs
//! `apply` again for that event, so projection code never does I/O.
//!
//! - [`runner`]: the consumer `proj_<name>`, batching, checkpoints in KV
//!   `checkpoints`, idempotence, dead letters in stream `DLQ`.
//! - [`lease`]: one active instance per projection, the others hot standbys.
//! - [`dlq`]: listing, showing, retrying and discarding parked events.
//! - [`rebuild`]: building the next version while the active one answers.
//! - [`versions`]: which version of a view queries read; rebuilds fill the next.
//! - [`query`]: the typed queries a projection's view answers, and [`Rows`](query::Rows).
//! - [`storage`]: rows and checkpoint in one bucket, committed as one atomic batch.
//! - [`status`]: checkpoint, lag, redeliveries and parked events per consumer.

pub mod dlq;
pub mod lease;
pub mod query;
pub mod rebuild;
pub mod runner;
pub mod status;
pub mod storage;
pub mod versions;

pub use runner::{PoisonPolicy, ProjectionRunner, RunnerConfig, RunnerError, RunnerErrorKind};

use crate::store::RecordedEvent;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// A read model built from events.
///
/// ```
/// use jetsource::projection::{ApplyError, Projection, View};
/// struct Counts;
/// impl Projection for Counts {
///     fn name(&self) -> &str { "counts" }
///     fn aggregates(&self) -> &[&'static str] { &["person"] }
///     fn apply(&self, view: &mut View, event: &jetsource::RecordedEvent) -> Result<(), ApplyError> {
///         let n = view.get(&event.event_type)?.and_then(|v| v.as_u64()).unwrap_or(0);
///         view.put(&event.event_type, serde_json::json!(n + 1));
///         Ok(())
///     }
/// }
/// ```
pub trait Projection: Send + Sync + 'static {
    /// The name: consumer `proj_<name>`, bucket `view_<name>`. Letters, digits, `_`.
    fn name(&self) -> &str;
    /// The aggregate types whose events it reads.
    fn aggregates(&self) -> &[&'static str];
    /// Applies one event to the view's rows.
    ///
    /// What it may and may not do:
    /// - **Pure and synchronous.** No I/O, no clock: the rows it reads come from
    ///   [`View::get`]; a row not loaded yet is a miss to propagate with `?`, and
    ///   the runner loads it and calls `apply` again for the same event.
    /// - **Deterministic.** It may run more than once for one event (after a miss,
    ///   after a crash before the commit); it must write the same rows each time.
    ///   [`View::put`] leaves alone a row that this or a later event already wrote,
    ///   so a replay never counts twice.
    /// - **No panics.** Return [`ApplyError::Failed`] for an event that cannot be
    ///   applied: it is retried, then parked in `DLQ`, and the projection goes on.
    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError>;
    /// The queries its view answers, which every node of the app serves as
    /// `qry.<view>.<query>` (none by default). See [`query`] for an example.
    fn queries(&self) -> query::Queries {
        query::Queries::none()
    }
}

/// Why an event was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// A row the event needs is not loaded yet (the runner loads it and retries).
    Missing(String),
    /// The event cannot be applied.
    Failed(String),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Missing(key) => write!(f, "row {key} is not loaded"),
            ApplyError::Failed(reason) => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// A row as stored: its value (or a deletion) and the stream sequence of the event
/// that last wrote it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    /// Stream sequence of the last event that changed it.
    pub seq: u64,
    /// The row; `None` once deleted.
    pub value: Option<Value>,
}

/// Longest row key a view may write, in bytes (a KV key is a subject).
pub const MAX_KEY_BYTES: usize = 1024;

/// The rows of one view as a batch sees them: loaded rows plus this batch's changes.
#[derive(Debug, Default)]
pub struct View {
    loaded: HashMap<String, Option<Row>>,
    changed: HashMap<String, Row>,
    seq: u64,
    /// What the current event overwrote, to undo it if the event does not apply.
    undo: Vec<(String, Option<Row>)>,
}

impl View {
    /// A row's current value, `Ok(None)` if there is none.
    pub fn get(&self, key: &str) -> Result<Option<&Value>, ApplyError> {
        if let Some(row) = self.changed.get(key) {
            return Ok(row.value.as_ref());
        }
        match self.loaded.get(key) {
            Some(row) => Ok(row.as_ref().and_then(|r| r.value.as_ref())),
            None => Err(ApplyError::Missing(key.to_string())),
        }
    }

    /// Sets a row. A stored row already written by this or a later event is left
    /// alone, so replaying an event changes nothing.
    pub fn put(&mut self, key: &str, value: Value) {
        self.write(key, Some(value));
    }

    /// Deletes a row (with the same replay rule as [`put`](Self::put)).
    pub fn delete(&mut self, key: &str) {
        self.write(key, None);
    }

    fn write(&mut self, key: &str, value: Option<Value>) {
        // A stored row that this or a later event already wrote keeps its value
        // (a replay after a crash must not, say, count twice); within the batch,
        // only a later event's write wins over this one.
        let done = match (self.changed.get(key), self.loaded.get(key)) {
            (Some(row), _) => row.seq > self.seq,
            (None, Some(Some(row))) => row.seq >= self.seq,
            _ => false,
        };
        if !done {
            let before = self.changed.insert(
                key.to_string(),
                Row {
                    seq: self.seq,
                    value,
                },
            );
            self.undo.push((key.to_string(), before));
        }
    }

    /// The bytes the current event's writes take, or why they cannot be stored: a
    /// key the bucket refuses, or a row larger than `max_row_bytes`. The runner
    /// treats the latter like a failed event (retried, then parked), so it never
    /// stalls on a write.
    fn written_bytes(&self, max_row_bytes: usize) -> Result<usize, String> {
        let mut total = 0;
        for (key, _) in &self.undo {
            let shown: String = key.chars().take(80).collect();
            if key.len() > MAX_KEY_BYTES {
                return Err(format!(
                    "row key {shown:?}... is {} bytes (at most {MAX_KEY_BYTES})",
                    key.len()
                ));
            }
            if !storage::is_row_key(key) {
                return Err(format!("row key {shown:?} is reserved for jetsource"));
            }
            if let Err(reason) = crate::subjects::validate_kv_key(key) {
                return Err(format!("row key {shown:?} is no valid KV key: it {reason}"));
            }
            let size = self
                .changed
                .get(key)
                .map_or(0, |row| storage::encode_row(row).len());
            if size > max_row_bytes {
                return Err(format!(
                    "row {shown} is {size} bytes, more than the {max_row_bytes} a row may take"
                ));
            }
            total += size + key.len();
        }
        Ok(total)
    }

    /// Starts applying the event at `seq`.
    fn begin(&mut self, seq: u64) {
        self.seq = seq;
        self.undo.clear();
    }

    /// Takes back what the current event wrote.
    fn rollback(&mut self) {
        while let Some((key, before)) = self.undo.pop() {
            match before {
                Some(row) => self.changed.insert(key, row),
                None => self.changed.remove(&key),
            };
        }
    }
}
