//! The envelope: everything about an event that is not its body travels as a header.

use super::codec::Codec;
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Header names of the wire contract (DESIGN "Events").
pub mod headers {
    /// PascalCase event type, e.g. `PersonRegistered`.
    pub const EVENT_TYPE: &str = "Jetsource-Event-Type";
    /// UUIDv7 of the event.
    pub const EVENT_ID: &str = "Jetsource-Event-Id";
    /// Schema version of the event body, an integer.
    pub const SCHEMA: &str = "Jetsource-Schema";
    /// Aggregate version after this event, contiguous from 1.
    pub const VERSION: &str = "Jetsource-Version";
    /// When the event happened, RFC 3339.
    pub const OCCURRED_AT: &str = "Jetsource-Occurred-At";
    /// The conversation this event belongs to.
    pub const CORRELATION_ID: &str = "Jetsource-Correlation-Id";
    /// What directly caused this event (a command or event id).
    pub const CAUSATION_ID: &str = "Jetsource-Causation-Id";
    /// Who acted: the authenticated NATS identity that sent the command.
    pub const ACTOR: &str = "Jetsource-Actor";
    /// The end user a delegating client acted for (never an identity by itself).
    pub const ON_BEHALF_OF: &str = "Jetsource-On-Behalf-Of";
    /// The idempotency key of the command that produced the event.
    pub const COMMAND_ID: &str = "Jetsource-Command-Id";
    /// W3C trace context of the work that produced the event.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C vendor trace state, carried with `traceparent`.
    pub const TRACESTATE: &str = "tracestate";
    /// Prefix of user-defined metadata headers: `Jetsource-Meta-<key>`.
    pub const META_PREFIX: &str = "Jetsource-Meta-";
    /// The body's MIME type.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// Server-side deduplication key (NATS), on the first event of an append: see
    /// [`dedupe_key`](crate::store::append::dedupe_key).
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    /// Optimistic concurrency on one subject (NATS).
    pub const NATS_EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
    /// ADR-50 batch id (NATS).
    pub const NATS_BATCH_ID: &str = "Nats-Batch-Id";
    /// ADR-50 position in the batch, from 1 (NATS).
    pub const NATS_BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
    /// ADR-50 commit marker on the last message (NATS).
    pub const NATS_BATCH_COMMIT: &str = "Nats-Batch-Commit";
}

/// The same names as [`HeaderName`](async_nats::header::HeaderName)s, made at
/// compile time: inserting by `&str` checks, parses and copies the name again for
/// every header of every event.
pub(crate) mod names {
    use super::headers as h;
    use async_nats::header::HeaderName;

    pub(crate) const EVENT_TYPE: HeaderName = HeaderName::from_static(h::EVENT_TYPE);
    pub(crate) const EVENT_ID: HeaderName = HeaderName::from_static(h::EVENT_ID);
    pub(crate) const SCHEMA: HeaderName = HeaderName::from_static(h::SCHEMA);
    pub(crate) const VERSION: HeaderName = HeaderName::from_static(h::VERSION);
    pub(crate) const OCCURRED_AT: HeaderName = HeaderName::from_static(h::OCCURRED_AT);
    pub(crate) const CORRELATION_ID: HeaderName = HeaderName::from_static(h::CORRELATION_ID);
    pub(crate) const CAUSATION_ID: HeaderName = HeaderName::from_static(h::CAUSATION_ID);
    pub(crate) const ACTOR: HeaderName = HeaderName::from_static(h::ACTOR);
    pub(crate) const ON_BEHALF_OF: HeaderName = HeaderName::from_static(h::ON_BEHALF_OF);
    pub(crate) const COMMAND_ID: HeaderName = HeaderName::from_static(h::COMMAND_ID);
    pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static(h::TRACEPARENT);
    pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static(h::TRACESTATE);
    pub(crate) const CONTENT_TYPE: HeaderName = HeaderName::from_static(h::CONTENT_TYPE);
    pub(crate) const NATS_MSG_ID: HeaderName = HeaderName::from_static(h::NATS_MSG_ID);
    pub(crate) const NATS_EXPECTED_LAST_SUBJECT_SEQ: HeaderName =
        HeaderName::from_static(h::NATS_EXPECTED_LAST_SUBJECT_SEQ);
}

/// Who, why and for whom: copied onto every event a command produces.
///
/// ```
/// let meta = jetsource::Metadata::default()
///     .with_correlation_id("order-flow-1")
///     .with_actor("alice")
///     .with_custom("source", "web");
/// assert_eq!(meta.custom["source"], "web");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The conversation this belongs to.
    pub correlation_id: Option<String>,
    /// What directly caused it.
    pub causation_id: Option<String>,
    /// Who acted.
    pub actor: Option<String>,
    /// The end user a delegating client acted for, as that client named them.
    pub on_behalf_of: Option<String>,
    /// The idempotency key of the command. An append whose first event carries
    /// one is stored at most once per aggregate within the stream's duplicate
    /// window: a later append with the same command id on the same aggregate is
    /// answered with the first one's position (see
    /// [`dedupe_key`](crate::store::append::dedupe_key)).
    pub command_id: Option<String>,
    /// Free-form metadata, stored as `Jetsource-Meta-<key>` headers. Keys are header
    /// tokens (letters, digits, `-`, `_`); values are single-line text.
    pub custom: BTreeMap<String, String>,
    /// The W3C `traceparent` of the work that produced the event (see
    /// [`telemetry::trace`](crate::telemetry::trace)): projections and sagas
    /// continue its trace.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` sent with `traceparent`.
    pub tracestate: Option<String>,
}

impl Metadata {
    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, v: impl Into<String>) -> Self {
        self.correlation_id = Some(v.into());
        self
    }
    /// Sets the causation id.
    pub fn with_causation_id(mut self, v: impl Into<String>) -> Self {
        self.causation_id = Some(v.into());
        self
    }
    /// Sets the actor.
    pub fn with_actor(mut self, v: impl Into<String>) -> Self {
        self.actor = Some(v.into());
        self
    }
    /// Sets the end user acted for.
    pub fn with_on_behalf_of(mut self, v: impl Into<String>) -> Self {
        self.on_behalf_of = Some(v.into());
        self
    }
    /// Sets the command id.
    pub fn with_command_id(mut self, v: impl Into<String>) -> Self {
        self.command_id = Some(v.into());
        self
    }
    /// Sets the W3C trace context (`traceparent`, and `tracestate` if any).
    pub fn with_trace(
        mut self,
        traceparent: impl Into<String>,
        tracestate: Option<String>,
    ) -> Self {
        self.traceparent = Some(traceparent.into());
        self.tracestate = tracestate;
        self
    }
    /// Adds one custom entry.
    pub fn with_custom(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.custom.insert(key.into(), value.into());
        self
    }

    fn write(&self, h: &mut HeaderMap) {
        let pairs = [
            (names::CORRELATION_ID, &self.correlation_id),
            (names::CAUSATION_ID, &self.causation_id),
            (names::ACTOR, &self.actor),
            (names::ON_BEHALF_OF, &self.on_behalf_of),
            (names::COMMAND_ID, &self.command_id),
            (names::TRACEPARENT, &self.traceparent),
            (names::TRACESTATE, &self.tracestate),
        ];
        for (name, value) in pairs {
            if let Some(v) = value {
                h.insert(name, v.as_str());
            }
        }
        for (k, v) in &self.custom {
            h.insert(format!("{}{k}", headers::META_PREFIX).as_str(), v.as_str());
        }
    }

    /// Takes the header `name` if it is one of the metadata's.
    fn take(&mut self, name: &str, value: &str) {
        let slot = match name {
            headers::CORRELATION_ID => &mut self.correlation_id,
            headers::CAUSATION_ID => &mut self.causation_id,
            headers::ACTOR => &mut self.actor,
            headers::ON_BEHALF_OF => &mut self.on_behalf_of,
            headers::COMMAND_ID => &mut self.command_id,
            headers::TRACEPARENT => &mut self.traceparent,
            headers::TRACESTATE => &mut self.tracestate,
            _ => match strip_prefix_ignore_case(name, headers::META_PREFIX) {
                Some(key) => {
                    self.custom.insert(key.to_string(), value.to_string());
                    return;
                }
                None => return,
            },
        };
        *slot = Some(value.to_string());
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() > prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// An event ready to append: its type, encoded body and envelope, but not yet its
/// aggregate version (the store stamps that, contiguously, when it appends).
///
/// ```
/// use jetsource::{NewEvent, Metadata, store::Codec};
/// let e = NewEvent::encode("PersonRegistered", 1, &serde_json::json!({"name": "Ada"}), Codec::Json, Metadata::default()).unwrap();
/// assert_eq!(e.event_type, "PersonRegistered");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// UUIDv7, unique per event; a retry with the same id is stored once.
    pub event_id: Uuid,
    /// PascalCase type name.
    pub event_type: String,
    /// Schema version of the body.
    pub schema: u32,
    /// When it happened (from the command or the edge, never read inside the domain).
    pub occurred_at: DateTime<Utc>,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The encoded body.
    pub payload: Bytes,
    /// Who, why and for whom.
    pub metadata: Metadata,
}

impl NewEvent {
    /// Encodes `body` with `codec` into a new event with a fresh UUIDv7 and the current time.
    pub fn encode<T: serde::Serialize + ?Sized>(
        event_type: impl Into<String>,
        schema: u32,
        body: &T,
        codec: Codec,
        metadata: Metadata,
    ) -> Result<NewEvent, super::codec::CodecError> {
        Ok(NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema,
            occurred_at: Utc::now(),
            codec,
            payload: codec.encode(body)?.into(),
            metadata,
        })
    }

    /// The headers this event is stored with, at aggregate `version`.
    pub(crate) fn headers(&self, version: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        let id = self.event_id.to_string();
        h.insert(names::EVENT_TYPE, self.event_type.as_str());
        h.insert(names::EVENT_ID, id.as_str());
        h.insert(names::SCHEMA, self.schema.to_string().as_str());
        h.insert(names::VERSION, version.to_string().as_str());
        h.insert(
            names::OCCURRED_AT,
            self.occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .as_str(),
        );
        h.insert(names::CONTENT_TYPE, self.codec.content_type());
        self.metadata.write(&mut h);
        h
    }
}

/// An event as stored: body still encoded, envelope parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Position in the `EVENTS` stream: global, gap-free order of the whole store.
    pub seq: u64,
    /// The subject it was stored on.
    pub subject: String,
    /// Aggregate type (`person`).
    pub aggregate: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Aggregate version after this event.
    pub version: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// PascalCase type name.
    pub event_type: String,
    /// Schema version of the body.
    pub schema: u32,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When the server stored it.
    pub stored_at: Option<DateTime<Utc>>,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The encoded body.
    pub payload: Bytes,
    /// Who, why and for whom.
    pub metadata: Metadata,
}

/// Why a stored message is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message at stream sequence {seq} is not a valid event: {reason}")]
pub struct MalformedEvent {
    /// Its stream sequence.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl RecordedEvent {
    /// Parses a stored message (from a direct get or a consumer) into an event.
    pub(crate) fn from_parts(
        seq: u64,
        subject: &str,
        aggregate: &str,
        aggregate_id: &str,
        h: &HeaderMap,
        payload: Bytes,
        stored_at: Option<DateTime<Utc>>,
    ) -> Result<RecordedEvent, MalformedEvent> {
        let bad = |reason: String| MalformedEvent { seq, reason };
        // One pass over the map, comparing names: a hashed lookup per field copied
        // and hashed each name again, for every event of every read.
        let mut metadata = Metadata::default();
        let mut envelope: [Option<&str>; 6] = [None; 6];
        const FIELDS: [&str; 6] = [
            headers::CONTENT_TYPE,
            headers::EVENT_ID,
            headers::OCCURRED_AT,
            headers::VERSION,
            headers::EVENT_TYPE,
            headers::SCHEMA,
        ];
        for (name, values) in h.iter() {
            let (name, Some(value)) = (name.as_ref(), values.first()) else {
                continue;
            };
            match FIELDS.iter().position(|f| *f == name) {
                Some(i) => envelope[i] = Some(value.as_str()),
                None => metadata.take(name, value.as_str()),
            }
        }
        let need =
            |i: usize| envelope[i].ok_or_else(|| bad(format!("missing header {}", FIELDS[i])));
        let parse_u64 = |i: usize| -> Result<u64, MalformedEvent> {
            need(i)?
                .parse()
                .map_err(|_| bad(format!("header {} is not a number", FIELDS[i])))
        };
        let content_type = need(0)?;
        let codec = Codec::from_content_type(content_type)
            .ok_or_else(|| bad(format!("unknown content type {content_type:?}")))?;
        let event_id = need(1)?
            .parse()
            .map_err(|_| bad("event id is not a UUID".into()))?;
        let occurred_at = DateTime::parse_from_rfc3339(need(2)?)
            .map_err(|_| bad("occurred-at is not RFC 3339".into()))?
            .with_timezone(&Utc);
        Ok(RecordedEvent {
            seq,
            subject: subject.to_string(),
            aggregate: aggregate.to_string(),
            aggregate_id: aggregate_id.to_string(),
            version: parse_u64(3)?,
            event_id,
            event_type: need(4)?.to_string(),
            schema: parse_u64(5)? as u32,
            occurred_at,
            stored_at,
            codec,
            payload,
            metadata,
        })
    }

    /// Decodes the body into a JSON value (either codec), before any upcasting.
    pub fn body(&self) -> Result<serde_json::Value, MalformedEvent> {
        self.codec
            .decode_value(&self.payload)
            .map_err(|e| MalformedEvent {
                seq: self.seq,
                reason: format!("{} body does not decode: {e}", self.codec),
            })
    }
}
