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

    /// How stored events of earlier versions are read today, applied on read:
    /// one schema up, under another type name, or as several events. Build the
    /// table in a `const` (the [`Upcaster`] constructors are `const fn`) and
    /// return that.
    fn upcasters() -> &'static [Upcaster] {
        &[]
    }
}

/// Reads one stored event type at one schema version as today's events.
///
/// The decoder applies upcasters until every event is a type at its current
/// [`DomainEvent::schema_version`], so chains compose: a rename to a type at
/// schema 1 is followed by that type's own body upcasters. An upcaster for a type
/// and schema always wins over "this is current", which is what lets a type that
/// no longer exists in the enum be renamed or split away.
///
/// ```
/// // v1 had "name"; v2 splits it into "first" and "last".
/// fn split_name(body: serde_json::Value) -> Result<serde_json::Value, String> {
///     let name = body["name"].as_str().ok_or("no name")?;
///     let (first, last) = name.split_once(' ').unwrap_or((name, ""));
///     Ok(serde_json::json!({"first": first, "last": last}))
/// }
/// // "Enrolled" became "Registered"; "Moved" became two events.
/// fn moved(body: serde_json::Value) -> Result<Vec<jetsource::EventForm>, String> {
///     Ok(vec![
///         jetsource::EventForm::new("StreetChanged", 1, serde_json::json!({"street": body["street"]})),
///         jetsource::EventForm::new("CityChanged", 1, serde_json::json!({"city": body["city"]})),
///     ])
/// }
/// const UPCASTERS: &[jetsource::Upcaster] = &[
///     jetsource::Upcaster::body("PersonRegistered", 1, split_name),
///     jetsource::Upcaster::rename("Enrolled", 1, "Registered", 1),
///     jetsource::Upcaster::split("Moved", 1, moved),
/// ];
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// The stored event type it applies to.
    pub event_type: &'static str,
    /// The schema version it reads.
    pub from_schema: u32,
    /// What it makes of it.
    pub upcast: Upcast,
}

/// What an [`Upcaster`] makes of a stored event.
#[derive(Debug, Clone, Copy)]
pub enum Upcast {
    /// The same type one schema up: fields renamed, merged, split or defaulted.
    Body(fn(Value) -> Result<Value, String>),
    /// The same body under another type name, at that type's schema `schema`.
    Rename {
        /// The type it is read as.
        to: &'static str,
        /// The schema of `to` the body is at.
        schema: u32,
    },
    /// Several events (or none) in its place, in this order.
    Split(fn(Value) -> Result<Vec<EventForm>, String>),
}

impl Upcaster {
    /// `event_type` at `from_schema` becomes the same type at `from_schema + 1`.
    pub const fn body(
        event_type: &'static str,
        from_schema: u32,
        upcast: fn(Value) -> Result<Value, String>,
    ) -> Upcaster {
        Upcaster {
            event_type,
            from_schema,
            upcast: Upcast::Body(upcast),
        }
    }

    /// `event_type` at `from_schema` is read as `to` at `to_schema`, body unchanged.
    pub const fn rename(
        event_type: &'static str,
        from_schema: u32,
        to: &'static str,
        to_schema: u32,
    ) -> Upcaster {
        Upcaster {
            event_type,
            from_schema,
            upcast: Upcast::Rename {
                to,
                schema: to_schema,
            },
        }
    }

    /// `event_type` at `from_schema` is read as the events `split` makes of its body.
    pub const fn split(
        event_type: &'static str,
        from_schema: u32,
        split: fn(Value) -> Result<Vec<EventForm>, String>,
    ) -> Upcaster {
        Upcaster {
            event_type,
            from_schema,
            upcast: Upcast::Split(split),
        }
    }
}

/// An event as stored or as an upcaster makes it: its type, schema version and body.
#[derive(Debug, Clone, PartialEq)]
pub struct EventForm {
    /// The event type (the enum variant's name once current).
    pub event_type: String,
    /// The schema version `body` is at.
    pub schema: u32,
    /// The body (the variant's fields).
    pub body: Value,
}

impl EventForm {
    /// An event of `event_type` at `schema` with `body`.
    pub fn new(event_type: impl Into<String>, schema: u32, body: Value) -> EventForm {
        EventForm {
            event_type: event_type.into(),
            schema,
            body,
        }
    }
}

/// Most upcaster steps one stored event may take: a bound on chains that loop
/// (a rename back and forth) or split without end.
pub const MAX_UPCAST_STEPS: usize = 64;

/// Today's forms of one stored event: upcasters applied until every event is at
/// its type's current schema (several for a split, none for a split into nothing).
///
/// ```
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// # #[serde(tag = "type", content = "data")]
/// # enum E { Registered { name: String } }
/// impl jetsource::DomainEvent for E {
///     fn upcasters() -> &'static [jetsource::Upcaster] {
///         const UPCASTERS: &[jetsource::Upcaster] =
///             &[jetsource::Upcaster::rename("Enrolled", 1, "Registered", 1)];
///         UPCASTERS
///     }
/// }
/// let stored = jetsource::EventForm::new("Enrolled", 1, serde_json::json!({"name": "Ada"}));
/// let today = jetsource::aggregate::upcast::<E>(stored).unwrap();
/// assert_eq!(today[0].event_type, "Registered");
/// ```
pub fn upcast<E: DomainEvent>(stored: EventForm) -> Result<Vec<EventForm>, String> {
    let mut pending = std::collections::VecDeque::from([stored]);
    let mut current = Vec::new();
    let mut steps = 0;
    while let Some(form) = pending.pop_front() {
        steps += 1;
        if steps > MAX_UPCAST_STEPS {
            return Err(format!(
                "upcasting took more than {MAX_UPCAST_STEPS} steps (an upcaster loop?)"
            ));
        }
        let EventForm {
            event_type,
            schema,
            body,
        } = form;
        let upcaster = E::upcasters()
            .iter()
            .find(|u| u.event_type == event_type && u.from_schema == schema);
        let Some(upcaster) = upcaster else {
            let today = E::schema_version(&event_type);
            if schema == today {
                current.push(EventForm::new(event_type, schema, body));
                continue;
            }
            return Err(if schema > today {
                format!("{event_type} schema {schema} is newer than this code's {today}")
            } else {
                format!("no upcaster for {event_type} from schema {schema}")
            });
        };
        let failed = |e: String| format!("upcasting {event_type} from schema {schema}: {e}");
        match upcaster.upcast {
            Upcast::Body(f) => {
                let body = f(body).map_err(failed)?;
                pending.push_front(EventForm::new(event_type, schema + 1, body));
            }
            Upcast::Rename { to, schema } => pending.push_front(EventForm::new(to, schema, body)),
            Upcast::Split(f) => {
                for part in f(body).map_err(failed)?.into_iter().rev() {
                    pending.push_front(part);
                }
            }
        }
    }
    Ok(current)
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

/// Decodes a stored event that reads as exactly one of today's events (the
/// usual case: no upcaster, a body upcaster or a rename). A stored event that an
/// upcaster splits into several (or none) is an error here: read those with
/// [`decode_events`].
pub fn decode_event<E: DomainEvent>(recorded: &RecordedEvent) -> Result<E, MalformedEvent> {
    let mut events = decode_events::<E>(recorded)?;
    match events.len() {
        1 => Ok(events.remove(0)),
        n => Err(MalformedEvent {
            seq: recorded.seq,
            reason: format!(
                "{} is read as {n} events today: use decode_events",
                recorded.event_type
            ),
        }),
    }
}

/// Decodes a stored event if today's code calls it one of `types`; any other type
/// is not decoded at all (so a type a newer writer adds is simply not the
/// reader's business). Filtering on the stored type alone would miss events
/// stored under an earlier name: a type an upcaster reads is decoded, then kept
/// if its name today is in `types`.
///
/// ```no_run
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// # #[serde(tag = "type", content = "data")]
/// # enum E { Registered {} }
/// # impl jetsource::DomainEvent for E {}
/// # fn demo(recorded: &jetsource::RecordedEvent) -> Result<(), jetsource::MalformedEvent> {
/// if let Some(event) = jetsource::aggregate::decode_if::<E>(recorded, &["Registered"])? {
///     println!("{event:?}");
/// }
/// # Ok(()) }
/// ```
pub fn decode_if<E: DomainEvent>(
    recorded: &RecordedEvent,
    types: &[&str],
) -> Result<Option<E>, MalformedEvent> {
    let stored = recorded.event_type.as_str();
    if !E::upcasters().iter().any(|u| u.event_type == stored) {
        return match types.contains(&stored) {
            true => decode_event(recorded).map(Some),
            false => Ok(None),
        };
    }
    let event = decode_event::<E>(recorded)?;
    let today = event_parts(&event).map_err(|e| MalformedEvent {
        seq: recorded.seq,
        reason: e.to_string(),
    })?;
    Ok(types.contains(&today.0.as_str()).then_some(event))
}

/// Decodes a stored event into today's typed events, upcasting it first: one for
/// most, several (or none) where an upcaster splits it.
pub fn decode_events<E: DomainEvent>(recorded: &RecordedEvent) -> Result<Vec<E>, MalformedEvent> {
    let body = recorded.body()?;
    decode_body(&recorded.event_type, recorded.schema, body).map_err(|reason| MalformedEvent {
        seq: recorded.seq,
        reason,
    })
}

/// Upcasts a stored body from `schema` to today's events and deserializes them.
pub fn decode_body<E: DomainEvent>(
    event_type: &str,
    schema: u32,
    body: Value,
) -> Result<Vec<E>, String> {
    upcast::<E>(EventForm::new(event_type, schema, body))?
        .into_iter()
        .map(|form| {
            let event_type = form.event_type;
            serde_json::from_value(json!({"type": event_type, "data": form.body}))
                .map_err(|e| format!("{event_type} body does not match the event type: {e}"))
        })
        .collect()
}
