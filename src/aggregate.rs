//! Aggregates and their events: pure decision and evolution, no I/O, no clock.
//!
//! An event type is a serde enum tagged adjacently as `type`/`data`
//! (`#[serde(tag = "type", content = "data")]`): the variant name becomes the
//! `Jetsource-Event-Type` header and the variant's fields become the body, so the
//! stored payload is the event body only, as the wire contract says.

use crate::store::envelope::{MalformedEvent, Metadata, NewEvent, RecordedEvent};
use crate::store::Codec;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Debug;

/// A domain event: an adjacently tagged serde enum (`tag = "type", content = "data"`).
///
/// ```
/// #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// #[serde(tag = "type", content = "data")]
/// enum CounterEvent {
///     Incremented { by: u32 },
/// }
/// impl jetsource::DomainEvent for CounterEvent {}
/// ```
pub trait DomainEvent:
    Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static
{
    /// The current schema version of `event_type` (default 1). Raise it when the
    /// body changes shape, and add an [`Upcaster`] from the old one.
    fn schema_version(_event_type: &str) -> u32 {
        1
    }

    /// Converters from old schema versions, applied on read.
    fn upcasters() -> &'static [Upcaster] {
        &[]
    }
}

/// Turns one event type's body at `from_schema` into its body at `from_schema + 1`.
///
/// ```
/// // v1 had "name"; v2 splits it into "first" and "last".
/// fn split_name(mut body: serde_json::Value) -> Result<serde_json::Value, String> {
///     let name = body["name"].as_str().ok_or("no name")?.to_string();
///     let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
///     body = serde_json::json!({"first": first, "last": last});
///     Ok(body)
/// }
/// const UPCASTERS: &[jetsource::Upcaster] = &[jetsource::Upcaster {
///     event_type: "PersonRegistered", from_schema: 1, upcast: split_name,
/// }];
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// The event type it applies to.
    pub event_type: &'static str,
    /// The schema version it reads.
    pub from_schema: u32,
    /// The conversion.
    pub upcast: fn(Value) -> Result<Value, String>,
}

/// An event-sourced aggregate: `Default` is the state before its first event.
///
/// ```
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # #[serde(tag = "type", content = "data")]
/// # enum CounterEvent { Incremented { by: u32 } }
/// # impl jetsource::DomainEvent for CounterEvent {}
/// #[derive(Debug, thiserror::Error)]
/// #[error("counter would overflow")]
/// struct Overflow;
///
/// #[derive(Debug, Clone, Default)]
/// struct Counter { value: u32 }
///
/// impl jetsource::Aggregate for Counter {
///     const NAME: &'static str = "counter";
///     type Command = u32;
///     type Event = CounterEvent;
///     type Error = Overflow;
///     fn handle(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> {
///         self.value.checked_add(*by).ok_or(Overflow)?;
///         Ok(vec![CounterEvent::Incremented { by: *by }])
///     }
///     fn apply(&mut self, event: &CounterEvent) {
///         match event { CounterEvent::Incremented { by } => self.value += by }
///     }
/// }
/// ```
///
/// # Contracts
///
/// - **On the wire** (served by a node), `Command` is an externally tagged serde
///   enum of struct variants: `cmd.<NAME>.<Variant>` carries the variant's fields
///   as a JSON (or CBOR) object, plus the aggregate's `id`. A unit-like variant is
///   written `Variant {}`.
/// - **Time enters at the edge**, never from `handle`: name a command field in
///   [`CLOCK`](Self::CLOCK) and the node sets it to its own clock when the command
///   arrives. A client that sends that field is refused (400), so nobody's value
///   is overwritten silently; the typed senders (`Client::execute`,
///   `SagaCommand::new`) leave it out.
/// - **`handle` decides, `apply` evolves; both are pure**: no I/O, no clock, no
///   randomness (ids come in the command). `handle` may be called again for the
///   same command (a conflict retry, an idempotent resend) and must decide the same
///   way on the same state. `apply` is total: a stored event is a fact, so it never
///   fails or refuses.
pub trait Aggregate: Default + Clone + Debug + Send + Sync + 'static {
    /// Aggregate type, snake_case: the `<aggregate>` in `events.<aggregate>.<id>`.
    const NAME: &'static str;
    /// The command field the node fills with its clock (RFC 3339) when a command
    /// arrives, e.g. `Some("at")` for variants with an `at: DateTime<Utc>` field.
    /// `None` (the default): the node never touches a command's fields.
    const CLOCK: Option<&'static str> = None;
    /// What it is asked to do.
    type Command: Send + Sync;
    /// What it records.
    type Event: DomainEvent;
    /// Why it refuses.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides: the events a command produces, or why it is refused. Pure.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves: the state after one event. Pure, and total: a recorded event is a fact.
    fn apply(&mut self, event: &Self::Event);
}

/// How a domain refusal maps onto the command reply's fixed status table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The command breaks a rule given the aggregate's state (409).
    Rule,
    /// A value in the command is invalid whatever the state (422).
    InvalidValue,
}

/// A domain error the command service can answer with: a stable machine-readable
/// code and whether it is a broken rule (409) or an invalid value (422).
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// enum CounterError { #[error("too big")] TooBig }
/// impl jetsource::DomainError for CounterError {
///     fn code(&self) -> &'static str { "too_big" }
///     fn kind(&self) -> jetsource::RefusalKind { jetsource::RefusalKind::InvalidValue }
/// }
/// ```
pub trait DomainError: std::error::Error + Send + Sync + 'static {
    /// snake_case code for clients to match on, e.g. `already_registered`.
    fn code(&self) -> &'static str;
    /// 409 or 422.
    fn kind(&self) -> RefusalKind {
        RefusalKind::Rule
    }
}

/// Why a typed event could not be turned into a stored one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event cannot be encoded: {0}")]
pub struct EncodeError(pub String);

/// Splits a typed event into its type name and body.
pub fn event_parts<E: DomainEvent>(event: &E) -> Result<(String, Value), EncodeError> {
    let value = serde_json::to_value(event).map_err(|e| EncodeError(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(EncodeError(format!(
            "{} must be a serde enum with #[serde(tag = \"type\", content = \"data\")]",
            std::any::type_name::<E>()
        )));
    };
    let Some(Value::String(event_type)) = map.remove("type") else {
        return Err(EncodeError(format!(
            "{} has no \"type\" tag: use #[serde(tag = \"type\", content = \"data\")]",
            std::any::type_name::<E>()
        )));
    };
    Ok((event_type, map.remove("data").unwrap_or(Value::Null)))
}

/// Encodes a typed event into a [`NewEvent`] with the given codec and metadata.
///
/// ```
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # #[serde(tag = "type", content = "data")]
/// # enum CounterEvent { Incremented { by: u32 } }
/// # impl jetsource::DomainEvent for CounterEvent {}
/// let e = jetsource::encode_event(&CounterEvent::Incremented { by: 2 }, jetsource::store::Codec::Json, &Default::default()).unwrap();
/// assert_eq!(e.event_type, "Incremented");
/// assert_eq!(&e.payload[..], br#"{"by":2}"#);
/// ```
pub fn encode_event<E: DomainEvent>(
    event: &E,
    codec: Codec,
    metadata: &Metadata,
) -> Result<NewEvent, EncodeError> {
    let (event_type, body) = event_parts(event)?;
    let schema = E::schema_version(&event_type);
    NewEvent::encode(event_type, schema, &body, codec, metadata.clone())
        .map_err(|e| EncodeError(e.to_string()))
}

/// Decodes a stored event into the typed event, upcasting old schemas first.
pub fn decode_event<E: DomainEvent>(recorded: &RecordedEvent) -> Result<E, MalformedEvent> {
    let body = recorded.body()?;
    decode_body(&recorded.event_type, recorded.schema, body).map_err(|reason| MalformedEvent {
        seq: recorded.seq,
        reason,
    })
}

/// Upcasts `body` from `schema` to the current one and deserializes it.
pub fn decode_body<E: DomainEvent>(
    event_type: &str,
    schema: u32,
    mut body: Value,
) -> Result<E, String> {
    let current = E::schema_version(event_type);
    if schema > current {
        return Err(format!(
            "{event_type} schema {schema} is newer than this code's {current}"
        ));
    }
    for from in schema..current {
        let upcaster = E::upcasters()
            .iter()
            .find(|u| u.event_type == event_type && u.from_schema == from)
            .ok_or_else(|| format!("no upcaster for {event_type} from schema {from}"))?;
        body = (upcaster.upcast)(body)
            .map_err(|e| format!("upcasting {event_type} from schema {from}: {e}"))?;
    }
    serde_json::from_value(json!({"type": event_type, "data": body}))
        .map_err(|e| format!("{event_type} body does not match the event type: {e}"))
}
