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
//! `decode_number`) so `nats kv get` shows them as they are. A checkpoint's
//! message also names its event by the time it was stored
//! ([`CHECKPOINT_STORED_AT`]), so a runner can tell that the stream it reads is
//! still the one the checkpoint was made from (`check_stream`).

use super::Row;
use crate::consumer::{js_err, JetStreamError, JetStreamErrorKind};
use crate::store::append::OutMsg;
use crate::store::{AppendErrorKind, EventStore};
use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
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

/// The header on a view's checkpoint naming when the event at the checkpoint was
/// stored (RFC 3339, nanoseconds): with the sequence, which event that was. A
/// stream recreated, restored to an earlier point or cut short by a power loss
/// has no such event there any more, which is how a runner notices.
pub const CHECKPOINT_STORED_AT: &str = "Jetsource-Checkpoint-Stored-At";

/// A view's checkpoint as its writer last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The last stream sequence applied.
    pub(crate) value: u64,
    /// When the event at `value` was stored; `None` for a checkpoint written
    /// before this was recorded, or at 0.
    pub(crate) stored_at: Option<DateTime<Utc>>,
    /// The KV revision it was read or written at (0: never written).
    pub(crate) revision: u64,
}

/// The checkpoint stored in `kv`, read raw (from the stream's leader) for its
/// header: what a runner starts from.
pub(crate) async fn read_checkpoint(kv: &kv::Store) -> Result<Checkpoint, JetStreamError> {
    read_checkpoint_at(kv, CHECKPOINT_KEY).await
}

/// The checkpoint stored under `key` in `kv` (a view's, or a saga's in
/// `checkpoints`).
pub(crate) async fn read_checkpoint_at(
    kv: &kv::Store,
    key: &str,
) -> Result<Checkpoint, JetStreamError> {
    let subject = format!("{}{key}", kv.prefix);
    let message = match kv.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => message,
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            return Ok(Checkpoint::default())
        }
        Err(e) => return Err(js_err(e)),
    };
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
    let removed = header("KV-Operation").is_some_and(|op| op == "DEL" || op == "PURGE");
    if removed {
        return Ok(Checkpoint {
            revision: message.sequence,
            ..Checkpoint::default()
        });
    }
    Ok(Checkpoint {
        value: decode_number(&message.payload).unwrap_or(0),
        stored_at: header(CHECKPOINT_STORED_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
        revision: message.sequence,
    })
}

/// Whether the event a checkpoint names is still in the stream where it was:
/// `Some` says what is there instead (nothing, or an event stored at another
/// time); `Err`, that the stream could not be asked. A checkpoint at 0 names
/// nothing; one written before the time was recorded is only checked for an
/// event at its sequence.
pub(crate) async fn check_stream(
    store: &EventStore,
    checkpoint: &Checkpoint,
) -> Result<Option<StreamChanged>, crate::store::ReadError> {
    if checkpoint.value == 0 {
        return Ok(None);
    }
    let found = store.stored_at(checkpoint.value).await?;
    let changed = |found: String| StreamChanged {
        checkpoint: checkpoint.value,
        found,
    };
    Ok(match (found, checkpoint.stored_at) {
        (None, _) => Some(changed("no event".into())),
        (Some(found), Some(expected)) if found != expected => Some(changed(format!(
            "an event stored at {}, not at {}",
            found.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            expected.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        ))),
        _ => None,
    })
}

/// The event stream no longer holds the event a checkpoint was made at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the checkpoint is at sequence {checkpoint}, but the event stream has {found} there: \
     it was recreated, restored to an earlier point, or lost events in a power cut"
)]
pub struct StreamChanged {
    /// The checkpoint's sequence.
    pub checkpoint: u64,
    /// What the stream has at that sequence.
    pub found: String,
}

/// The applied sequence of the view in bucket `bucket` (0 if none), for readers.
pub async fn applied(store: &EventStore, bucket: &str) -> Result<u64, JetStreamError> {
    let kv = store
        .jetstream()
        .get_key_value(bucket)
        .await
        .map_err(js_err)?;
    read_applied(&kv).await
}

/// The checkpoint's sequence alone, read the way queries read rows (a direct
/// get, which any replica answers): what `Jetsource-Min-Seq` waits on.
pub(crate) async fn read_applied(kv: &kv::Store) -> Result<u64, JetStreamError> {
    Ok(match kv.entry(CHECKPOINT_KEY).await.map_err(js_err)? {
        Some(entry) if entry.operation == kv::Operation::Put => {
            decode_number(&entry.value).unwrap_or(0)
        }
        _ => 0,
    })
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

/// Writes `rows` and moves the checkpoint to `to` (the event stored at
/// `to_stored_at`) as one atomic batch, fenced on the checkpoint's revision; on
/// success `checkpoint` is the new one.
pub(crate) async fn commit(
    store: &EventStore,
    kv: &kv::Store,
    rows: impl IntoIterator<Item = (String, Row)>,
    checkpoint: &mut Checkpoint,
    to: u64,
    to_stored_at: Option<DateTime<Utc>>,
) -> Result<(), CommitError> {
    commit_at(
        store,
        kv,
        CHECKPOINT_KEY,
        rows,
        checkpoint,
        (to, to_stored_at),
    )
    .await
}

/// [`commit`] with the checkpoint under `key` (a saga's, in `checkpoints`, with no
/// rows).
pub(crate) async fn commit_at(
    store: &EventStore,
    kv: &kv::Store,
    key: &str,
    rows: impl IntoIterator<Item = (String, Row)>,
    checkpoint: &mut Checkpoint,
    (to, to_stored_at): (u64, Option<DateTime<Utc>>),
) -> Result<(), CommitError> {
    let prefix = kv.put_prefix.as_ref().unwrap_or(&kv.prefix);
    let mut fence = HeaderMap::new();
    fence.insert(
        crate::store::headers::NATS_EXPECTED_LAST_SUBJECT_SEQ,
        checkpoint.revision.to_string().as_str(),
    );
    if let Some(at) = to_stored_at {
        let at = at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        fence.insert(CHECKPOINT_STORED_AT, at.as_str());
    }
    let mut msgs = vec![OutMsg {
        subject: format!("{prefix}{key}"),
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
        stored_at: to_stored_at,
        revision: ack.last_seq + 1 - msgs.len() as u64,
    };
    Ok(())
}
