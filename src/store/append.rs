//! Appending: optimistic concurrency per aggregate, every call one ADR-50 atomic batch.
//!
//! async-nats 0.51 has no batch API, so the batch is sent over core NATS with the
//! `Nats-Batch-*` headers: the first message as a request (the server answers an
//! empty ack or an error), the middle ones as plain publishes, the last with
//! `Nats-Batch-Commit: 1` as a request whose reply is the pub ack. A batch of one
//! message is sent as a plain JetStream publish, which is the same thing, cheaper.

use super::envelope::{headers, names, NewEvent};
use super::mux::ReplyMux;
use crate::error::Error;
use crate::subjects::{validate_aggregate_name, validate_id, InvalidToken};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use std::fmt;
use std::time::Duration;

/// Where an aggregate stands: the stream sequence of its last event and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Position {
    /// Stream sequence of the aggregate's last event (0: no events).
    pub seq: u64,
    /// Aggregate version: how many events it has.
    pub version: u64,
}

/// What the caller believes the aggregate's last event is.
///
/// The server checks the stream sequence; the version rides along so that the
/// store can stamp contiguous versions on the new events without a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever is there (the store reads the current position and retries
    /// its own conflicts, so versions stay contiguous).
    Any,
    /// The aggregate must have no events yet.
    NoStream,
    /// The aggregate's last event must be the one at this position.
    Exact(Position),
}

/// One aggregate's new events, appended together or not at all.
///
/// ```
/// use jetsource::store::{Append, ExpectedVersion};
/// let append = Append::new("person", "42", ExpectedVersion::NoStream, vec![]);
/// assert_eq!(append.aggregate, "person");
/// ```
#[derive(Debug, Clone)]
pub struct Append {
    /// Aggregate type, snake_case.
    pub aggregate: String,
    /// Aggregate id, one subject token.
    pub id: String,
    /// The concurrency check.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

impl Append {
    /// Bundles an append.
    pub fn new(
        aggregate: impl Into<String>,
        id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Append {
        Append {
            aggregate: aggregate.into(),
            id: id.into(),
            expected,
            events,
        }
    }
}

/// The outcome of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Stream sequence of the first new event.
    pub first_seq: u64,
    /// Stream sequence of the last new event.
    pub last_seq: u64,
    /// Aggregate version after the append.
    pub version: u64,
    /// True when these very events (same event ids) were already stored: nothing
    /// was written this time.
    pub duplicate: bool,
}

impl Appended {
    /// The aggregate's position after the append.
    pub fn position(&self) -> Position {
        Position {
            seq: self.last_seq,
            version: self.version,
        }
    }
}

/// What went wrong appending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendErrorKind {
    /// The aggregate type or id cannot be a subject token.
    InvalidName {
        /// `aggregate` or `id`.
        what: &'static str,
        /// Why.
        reason: InvalidToken,
    },
    /// Nothing to append.
    NoEvents,
    /// An event could not be encoded.
    Encode,
    /// The aggregate moved on: its last event is not the expected one.
    Conflict {
        /// The stream sequence the caller expected (0: no events).
        expected: u64,
        /// The actual last stream sequence, when the server said it.
        actual: Option<u64>,
    },
    /// More events than one atomic batch may hold; nothing was sent.
    TooManyEvents {
        /// Events in the append.
        count: usize,
        /// The server's batch limit.
        max: usize,
    },
    /// One event is larger than the server's max payload; nothing was sent.
    PayloadTooLarge {
        /// Its size, body plus headers, in bytes.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// An event id is already stored but not as this append: a reused id.
    DuplicateEventId,
    /// No answer in time: the events may or may not be stored; retrying the same
    /// append (same event ids) is safe.
    TimedOut,
    /// The server or stream is not reachable.
    Unavailable,
    /// The server refused the append for another reason.
    Store {
        /// JetStream `err_code`.
        code: u64,
        /// The server's description.
        description: String,
    },
}

impl fmt::Display for AppendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { what, reason } => write!(f, "invalid {what}: it {reason}"),
            Self::NoEvents => write!(f, "nothing to append"),
            Self::Encode => write!(f, "event could not be encoded"),
            Self::Conflict {
                expected,
                actual: Some(actual),
            } => write!(
                f,
                "concurrency conflict: expected last sequence {expected}, found {actual}"
            ),
            Self::Conflict {
                expected,
                actual: None,
            } => {
                write!(f, "concurrency conflict: expected last sequence {expected}")
            }
            Self::TooManyEvents { count, max } => write!(
                f,
                "{count} events in one append, more than the server's atomic batch limit of {max}"
            ),
            Self::PayloadTooLarge { size, max } => write!(
                f,
                "event of {size} bytes exceeds the server's max payload of {max} bytes"
            ),
            Self::DuplicateEventId => write!(f, "an event id was already used by another append"),
            Self::TimedOut => write!(f, "append timed out; outcome unknown, safe to retry"),
            Self::Unavailable => write!(f, "event store unavailable"),
            Self::Store { code, description } => {
                write!(f, "store refused the append ({code}): {description}")
            }
        }
    }
}

/// Error of [`EventStore::append`](super::EventStore::append).
pub type AppendError = Error<AppendErrorKind>;

impl AppendError {
    /// True for the concurrency conflict a caller reloads and retries on.
    pub fn is_conflict(&self) -> bool {
        matches!(self.kind(), AppendErrorKind::Conflict { .. })
    }
}

/// One message of a batch, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct OutMsg {
    pub(crate) subject: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

/// The `Nats-Msg-Id` of an append's first event: what the server deduplicates on,
/// for the stream's whole duplicate window, across restarts and leader changes.
///
/// With a command id it names the command on its aggregate, so a retry of the
/// command is refused by the server even when it was decided anew and produced
/// other events (or other event ids); without one it is the first event's id, so
/// only a resend of the very same append is.
///
/// ```
/// let key = jetsource::store::append::dedupe_key("person", "p1", Some("c-1"), "0192f1c2-7d4e-7000-8000-000000000001");
/// assert_eq!(key, "cmd:person:c-1:p1");
/// ```
pub fn dedupe_key(
    aggregate: &str,
    id: &str,
    command_id: Option<&str>,
    first_event_id: &str,
) -> String {
    match command_id {
        // Command ids hold no ':' (see `node::request`), aggregate names neither: the
        // key is unambiguous whatever the aggregate id holds.
        Some(command) => format!("cmd:{aggregate}:{command}:{id}"),
        None => first_event_id.to_string(),
    }
}

/// An append checked and turned into messages, its expectation resolved to a position.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) subject: String,
    pub(crate) base: Position,
    /// The command the events carry, if any: how a duplicate is recognised.
    pub(crate) command_id: Option<String>,
    pub(crate) event_ids: Vec<uuid::Uuid>,
    pub(crate) msgs: Vec<OutMsg>,
    pub(crate) bytes: usize,
}

/// Bytes a message takes against `max_payload`: body plus the header block.
fn wire_size(h: &HeaderMap, payload: &[u8]) -> usize {
    let headers: usize = h
        .iter()
        .map(|(k, vs)| {
            vs.iter()
                .map(|v| AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum();
    payload.len() + headers + "NATS/1.0\r\n\r\n".len()
}

pub(crate) fn check_names(aggregate: &str, id: &str) -> Result<(), AppendError> {
    validate_aggregate_name(aggregate).map_err(|reason| {
        AppendError::new(AppendErrorKind::InvalidName {
            what: "aggregate",
            reason,
        })
    })?;
    validate_id(id)
        .map_err(|reason| AppendError::new(AppendErrorKind::InvalidName { what: "id", reason }))
}

/// Checks an append against the server's limits and builds its messages.
pub(crate) fn prepare(
    (aggregate, id): (&str, &str),
    subject: String,
    base: Position,
    events: &[NewEvent],
    max_events: usize,
    max_payload: usize,
) -> Result<Prepared, AppendError> {
    if events.is_empty() {
        return Err(AppendError::new(AppendErrorKind::NoEvents));
    }
    if events.len() > max_events {
        return Err(AppendError::new(AppendErrorKind::TooManyEvents {
            count: events.len(),
            max: max_events,
        }));
    }
    let command_id = events[0].metadata.command_id.clone();
    let mut msgs = Vec::with_capacity(events.len());
    let mut bytes = 0;
    for (i, event) in events.iter().enumerate() {
        let mut h = event.headers(base.version + i as u64 + 1);
        if i == 0 {
            h.insert(
                names::NATS_EXPECTED_LAST_SUBJECT_SEQ,
                base.seq.to_string().as_str(),
            );
            // One dedupe entry per append: a batch with a repeated first message is
            // refused whole, so the later events need none.
            let key = dedupe_key(
                aggregate,
                id,
                command_id.as_deref(),
                &event.event_id.to_string(),
            );
            h.insert(names::NATS_MSG_ID, key.as_str());
        }
        // Room for the batch headers added at send time.
        let size = wire_size(&h, &event.payload) + 100;
        if size > max_payload {
            return Err(AppendError::new(AppendErrorKind::PayloadTooLarge {
                size,
                max: max_payload,
            }));
        }
        bytes += size;
        msgs.push(OutMsg {
            subject: subject.clone(),
            headers: h,
            payload: event.payload.clone(),
        });
    }
    Ok(Prepared {
        subject,
        base,
        command_id,
        event_ids: events.iter().map(|e| e.event_id).collect(),
        msgs,
        bytes,
    })
}

/// The server's answer to a committed batch or a single publish.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ack {
    pub(crate) last_seq: u64,
    pub(crate) duplicate: bool,
}

fn classify(
    reply: &async_nats::Message,
    expected: Option<u64>,
) -> Result<Option<Ack>, AppendError> {
    if let Some(status) = reply.status {
        return Err(if status == async_nats::StatusCode::NO_RESPONDERS {
            AppendError::new(AppendErrorKind::Unavailable)
        } else {
            AppendError::new(AppendErrorKind::Store {
                code: u64::from(status.as_u16()),
                description: reply.description.clone().unwrap_or_default(),
            })
        });
    }
    if reply.payload.is_empty() {
        return Ok(None);
    }
    let ack: PubAck = serde_json::from_slice(&reply.payload).map_err(|e| {
        AppendError::with_source(
            AppendErrorKind::Store {
                code: 0,
                description: "unreadable pub ack".into(),
            },
            e,
        )
    })?;
    if let Some(PubAckError {
        err_code: code,
        description,
    }) = ack.error
    {
        let description = description.unwrap_or_else(|| "unknown error".into());
        return Err(AppendError::new(match code {
            10071 | 10164 => AppendErrorKind::Conflict {
                expected: expected.unwrap_or(0),
                actual: description.rsplit(' ').next().and_then(|n| n.parse().ok()),
            },
            10201 => AppendErrorKind::DuplicateEventId,
            _ => AppendErrorKind::Store { code, description },
        }));
    }
    Ok(Some(Ack {
        last_seq: ack.seq,
        duplicate: ack.duplicate,
    }))
}

/// The parts of a pub ack an append reads (other fields are ignored): parsed
/// straight into this, not through a JSON tree, once per append.
#[derive(serde::Deserialize)]
struct PubAck {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    error: Option<PubAckError>,
}

#[derive(serde::Deserialize)]
struct PubAckError {
    #[serde(default)]
    err_code: u64,
    description: Option<String>,
}

/// Sends `msgs` as one atomic unit and waits for the pub ack.
///
/// `expected` is only used to fill in a conflict error; the checks themselves are
/// the headers already on the messages.
pub(crate) async fn send(
    client: &Client,
    mux: &ReplyMux,
    msgs: &[&OutMsg],
    expected: Option<u64>,
    timeout: Duration,
) -> Result<Ack, AppendError> {
    let unavailable =
        |e: async_nats::PublishError| AppendError::with_source(AppendErrorKind::Unavailable, e);
    let mut commit = mux.route();
    let mut first = None;
    if let [only] = msgs {
        client
            .publish_with_reply_and_headers(
                only.subject.clone(),
                commit.subject.clone(),
                only.headers.clone(),
                only.payload.clone(),
            )
            .await
            .map_err(unavailable)?;
    } else {
        let batch_id = uuid::Uuid::new_v4().simple().to_string();
        let last = msgs.len() - 1;
        for (i, m) in msgs.iter().enumerate() {
            let mut h = m.headers.clone();
            h.insert(headers::NATS_BATCH_ID, batch_id.as_str());
            h.insert(headers::NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            let reply = if i == last {
                h.insert(headers::NATS_BATCH_COMMIT, "1");
                Some(commit.subject.clone())
            } else if i == 0 {
                let route = mux.route();
                let subject = route.subject.clone();
                first = Some(route);
                Some(subject)
            } else {
                None
            };
            match reply {
                Some(reply) => client
                    .publish_with_reply_and_headers(m.subject.clone(), reply, h, m.payload.clone())
                    .await
                    .map_err(unavailable)?,
                None => client
                    .publish_with_headers(m.subject.clone(), h, m.payload.clone())
                    .await
                    .map_err(unavailable)?,
            }
        }
    }
    let reply = tokio::time::timeout(timeout, commit.replies.recv())
        .await
        .map_err(|_| AppendError::new(AppendErrorKind::TimedOut))?
        .ok_or_else(|| AppendError::new(AppendErrorKind::Unavailable))?;
    // The start ack arrives before the commit's; an error there explains the failure.
    if let Some(mut first) = first {
        if let Ok(start) = first.replies.try_recv() {
            classify(&start, expected)?;
        }
    }
    classify(&reply, expected)?.ok_or_else(|| {
        AppendError::new(AppendErrorKind::Store {
            code: 0,
            description: "empty reply to a batch commit".into(),
        })
    })
}
