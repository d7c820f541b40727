//! How a view is stored: its rows and its projection's checkpoint live in one KV
//! bucket, `view_<name>` (or `view_<name>_v<n>`), and every commit writes them
//! together as one ADR-50 atomic batch.
//!
//! So a commit is all or nothing: after a crash at any instruction the rows are
//! exactly those of the checkpoint, and the events after it replay onto the state
//! they were first applied to (no row from the future, which is how secondary rows
//! such as a by-email index went stale). The checkpoint's message carries the
//! revision its writer last saw (`Nats-Expected-Last-Subject-Sequence`): a second
//! instance, or one that was paused while another took over, has its whole batch
//! refused and writes nothing. That is the fence; leases only keep standbys idle.
//!
//! This module owns the read side's stored formats: rows (`{seq, value}` JSON),
//! checkpoints (a projection's beside its rows, a saga's in `checkpoints`) and view
//! versions (`view_versions`), the last two as decimal text (`encode_number`,
//! `decode_number`) so `nats kv get` shows them as they are.

use super::Row;
use crate::consumer::{js_err, JetStreamError, JetStreamErrorKind};
use crate::store::append::OutMsg;
use crate::store::{AppendErrorKind, EventStore};
use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use serde_json::{json, Value};
use std::str::FromStr;

/// The key of the checkpoint inside a view's bucket (no row key starts with `_`).
pub const CHECKPOINT_KEY: &str = "_jetsource.checkpoint";

/// Most rows one commit may write: the server's atomic batch holds 1000 messages,
/// one of which is the checkpoint.
pub const MAX_ROWS_PER_COMMIT: usize = 999;

/// Most bytes of rows one commit may write; a batch that would pass it is cut
/// after the event before.
pub const MAX_COMMIT_BYTES: usize = 8 * 1024 * 1024;

/// True for a key that holds a row (not the checkpoint).
///
/// ```
/// use jetsource::projection::storage::{is_row_key, CHECKPOINT_KEY};
/// assert!(is_row_key("person.p1"));
/// assert!(!is_row_key(CHECKPOINT_KEY));
/// ```
pub fn is_row_key(key: &str) -> bool {
    !key.starts_with("_jetsource.")
}

/// The view bucket `name`, created if missing, with atomic batches allowed.
pub(crate) async fn open(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<kv::Store, JetStreamError> {
    let kv = crate::consumer::bucket(js, name, replicas).await?;
    let info: Value = js
        .request(format!("STREAM.INFO.{}", kv.stream_name), &json!({}))
        .await
        .map_err(js_err)?;
    let mut config = info["config"].clone();
    if config.is_null() {
        return Err(JetStreamError::new(JetStreamErrorKind::Unfit(format!(
            "no stream behind bucket {name}"
        ))));
    }
    if config["allow_atomic"] != json!(true) {
        config["allow_atomic"] = json!(true);
        crate::store::stream::update(js, &kv.stream_name, &config)
            .await
            .map_err(|e| {
                JetStreamError::with_source(
                    JetStreamErrorKind::Unfit(format!("bucket {name} cannot take atomic batches")),
                    e,
                )
            })?;
    }
    Ok(kv)
}

/// A row's bytes as stored.
/// A checkpoint or view version as stored: decimal text.
pub(crate) fn encode_number(n: impl std::fmt::Display) -> bytes::Bytes {
    n.to_string().into_bytes().into()
}

/// A stored checkpoint or view version; `None` if the bytes are not one.
pub(crate) fn decode_number<T: FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

pub(crate) fn encode_row(row: &Row) -> Vec<u8> {
    serde_json::to_vec(row).expect("a row of JSON values serializes")
}

/// A stored row, or `None` for bytes that are not one.
pub(crate) fn decode_row(bytes: &[u8]) -> Option<Row> {
    serde_json::from_slice(bytes).ok()
}

/// A view's checkpoint as its writer last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The last stream sequence applied.
    pub(crate) value: u64,
    /// The KV revision it was read or written at (0: never written).
    pub(crate) revision: u64,
}

/// The checkpoint stored in `kv`.
pub(crate) async fn read_checkpoint(kv: &kv::Store) -> Result<Checkpoint, JetStreamError> {
    Ok(match kv.entry(CHECKPOINT_KEY).await.map_err(js_err)? {
        Some(entry) if entry.operation == kv::Operation::Put => Checkpoint {
            value: decode_number(&entry.value).unwrap_or(0),
            revision: entry.revision,
        },
        Some(entry) => Checkpoint {
            value: 0,
            revision: entry.revision,
        },
        None => Checkpoint::default(),
    })
}

/// The applied sequence of the view in bucket `bucket` (0 if none), for readers.
pub async fn applied(store: &EventStore, bucket: &str) -> Result<u64, JetStreamError> {
    let kv = store
        .jetstream()
        .get_key_value(bucket)
        .await
        .map_err(js_err)?;
    Ok(read_checkpoint(&kv).await?.value)
}

/// Why a commit did not land.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// Another writer moved the checkpoint: nothing of this batch was written.
    #[error("another instance committed to {0}: this batch was refused whole")]
    Fenced(String),
    /// The server refused or did not answer; nothing or everything was written
    /// (a batch is atomic), and the checkpoint says which.
    #[error("commit to {bucket}: {reason}")]
    Failed {
        /// The bucket.
        bucket: String,
        /// What went wrong.
        reason: String,
    },
}

/// Writes `rows` and moves the checkpoint to `to` as one atomic batch, fenced on
/// the checkpoint's revision; on success `checkpoint` is the new one.
pub(crate) async fn commit(
    store: &EventStore,
    kv: &kv::Store,
    rows: impl IntoIterator<Item = (String, Row)>,
    checkpoint: &mut Checkpoint,
    to: u64,
) -> Result<(), CommitError> {
    let prefix = kv.put_prefix.as_ref().unwrap_or(&kv.prefix);
    let mut fence = HeaderMap::new();
    fence.insert(
        crate::store::headers::NATS_EXPECTED_LAST_SUBJECT_SEQ,
        checkpoint.revision.to_string().as_str(),
    );
    let mut msgs = vec![OutMsg {
        subject: format!("{prefix}{CHECKPOINT_KEY}"),
        headers: fence,
        payload: encode_number(to),
    }];
    msgs.extend(rows.into_iter().map(|(key, row)| OutMsg {
        subject: format!("{prefix}{key}"),
        headers: HeaderMap::new(),
        payload: encode_row(&row).into(),
    }));
    let refs: Vec<&OutMsg> = msgs.iter().collect();
    let ack = match store.send(&refs, Some(checkpoint.revision)).await {
        Ok(ack) => ack,
        Err(e) if matches!(e.kind(), AppendErrorKind::Conflict { .. }) => {
            return Err(CommitError::Fenced(kv.name.clone()))
        }
        Err(e) => {
            return Err(CommitError::Failed {
                bucket: kv.name.clone(),
                reason: e.to_string(),
            })
        }
    };
    // The checkpoint is the batch's first message.
    *checkpoint = Checkpoint {
        value: to,
        revision: ack.last_seq + 1 - msgs.len() as u64,
    };
    Ok(())
}
