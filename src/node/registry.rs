//! One registered aggregate, type-erased so the node can hold many.

use super::reply::{Ack, Rejection, Status};
use super::request::Body;
use crate::aggregate::{decode_events, event_parts, Aggregate, DomainError, RefusalKind};
use crate::repository::{ExecuteError, PointInTime, Repository};
use crate::store::{AppendErrorKind, Metadata, ReadError, ReadErrorKind};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// What the node needs of one aggregate type.
pub(crate) trait Handler: Send + Sync {
    fn aggregate(&self) -> &'static str;
    fn commands(&self) -> &[&'static str];
    fn execute<'a>(
        &'a self,
        command: &'a str,
        body: Body,
        metadata: Metadata,
        expected_version: Option<u64>,
        may_be_retry: bool,
    ) -> BoxFuture<'a, Result<Ack, Rejection>>;
    /// Current state, or the state at a point in the past.
    fn get<'a>(
        &'a self,
        id: &'a str,
        at: Option<PointInTime>,
    ) -> BoxFuture<'a, Result<Value, Rejection>>;
    fn history<'a>(
        &'a self,
        id: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Value, Rejection>>;
}

pub(crate) struct Registered<A: Aggregate> {
    pub(crate) repository: Repository<A>,
    pub(crate) commands: Vec<&'static str>,
}

/// Most bytes of events one `history` reply carries; the rest is on the next
/// page (`after` = the reply's `next`).
const MAX_HISTORY_BYTES: usize = 512 * 1024;

fn unavailable(e: impl std::fmt::Display) -> Rejection {
    Rejection::new(Status::Unavailable, "store_unavailable", e)
}

fn read_rejection(e: ReadError) -> Rejection {
    match e.kind() {
        ReadErrorKind::InvalidName { .. } => Rejection::new(Status::Invalid, "invalid_id", e),
        ReadErrorKind::Malformed(_) => Rejection::new(Status::Unavailable, "unreadable_history", e),
        ReadErrorKind::TooLong { .. } => Rejection::new(Status::Invalid, "too_far_back", e),
        _ => unavailable(e),
    }
}

fn execute_rejection<E: DomainError>(e: ExecuteError<E>) -> Rejection {
    match e {
        ExecuteError::Rejected(refusal) => {
            let status = match refusal.kind() {
                RefusalKind::Rule => Status::Conflict,
                RefusalKind::InvalidValue => Status::Invalid,
            };
            Rejection::new(status, refusal.code(), refusal)
        }
        ExecuteError::InvalidId(reason) => {
            Rejection::new(Status::Invalid, "invalid_id", format!("id {reason}"))
        }
        e @ ExecuteError::WrongVersion { .. } => {
            Rejection::new(Status::Conflict, "wrong_expected_version", e)
        }
        e @ ExecuteError::Conflict { .. } => Rejection::new(Status::Conflict, "conflict", e),
        ExecuteError::Encode(e) => Rejection::new(Status::Invalid, "unencodable", e),
        ExecuteError::Append(e) => match e.kind() {
            AppendErrorKind::TooManyEvents { .. } | AppendErrorKind::PayloadTooLarge { .. } => {
                Rejection::new(Status::Invalid, "too_large", e)
            }
            _ => unavailable(e),
        },
        ExecuteError::Load(e) => read_rejection(e),
    }
}

impl<A> Handler for Registered<A>
where
    A: Aggregate + Serialize,
    A::Command: DeserializeOwned,
    A::Error: DomainError,
{
    fn aggregate(&self) -> &'static str {
        A::NAME
    }

    fn commands(&self) -> &[&'static str] {
        &self.commands
    }

    fn execute<'a>(
        &'a self,
        command: &'a str,
        body: Body,
        metadata: Metadata,
        expected_version: Option<u64>,
        may_be_retry: bool,
    ) -> BoxFuture<'a, Result<Ack, Rejection>> {
        Box::pin(async move {
            let Body { id, mut fields } = body;
            // Time enters at the edge: the node's clock, never the client's, and a
            // client's value is refused rather than overwritten.
            if let Some(clock) = A::CLOCK {
                if fields.contains_key(clock) {
                    return Err(Rejection::new(
                        Status::Malformed,
                        "reserved_field",
                        format!("\"{clock}\" is set by the node (its clock); leave it out"),
                    ));
                }
                fields.insert(clock.into(), json!(chrono::Utc::now()));
            }
            let mut tagged = Map::new();
            tagged.insert(command.to_string(), Value::Object(fields));
            let command: A::Command =
                serde_json::from_value(Value::Object(tagged)).map_err(|e| {
                    Rejection::new(
                        Status::Malformed,
                        "malformed",
                        format!("body does not fit {}.{command}: {e}", A::NAME),
                    )
                })?;
            let repository = &self.repository;
            let done = match (expected_version, may_be_retry) {
                (expected, false) => {
                    repository
                        .execute_new(&id, &command, &metadata, expected)
                        .await
                }
                (Some(v), true) => {
                    repository
                        .execute_expecting(&id, &command, &metadata, v)
                        .await
                }
                (None, true) => repository.execute(&id, &command, &metadata).await,
            }
            .map_err(execute_rejection)?;
            Ok(Ack {
                status: "accepted".into(),
                aggregate: A::NAME.into(),
                id,
                version: done.version,
                seq: done.seq,
                events: done.event_types,
            })
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
        at: Option<PointInTime>,
    ) -> BoxFuture<'a, Result<Value, Rejection>> {
        Box::pin(async move {
            let loaded = match at {
                None => self.repository.load(id).await,
                Some(point) => self.repository.load_at(id, point).await,
            }
            .map_err(read_rejection)?;
            if loaded.position.version == 0 {
                return Err(Rejection::new(
                    Status::NotFound,
                    "not_found",
                    format!("no {} {id}", A::NAME),
                ));
            }
            // The state is the app's type: one that JSON cannot hold (a map with
            // non-string keys) is the app's bug, answered as such, never a panic.
            let state = serde_json::to_value(&loaded.state).map_err(|e| {
                tracing::error!(aggregate = A::NAME, error = %e, "an aggregate's state cannot be encoded as JSON");
                Rejection::new(
                    Status::Internal,
                    "internal",
                    format!("the state of {} {id} cannot be encoded: {e}", A::NAME),
                )
            })?;
            Ok(json!({
                "aggregate": A::NAME,
                "id": id,
                "version": loaded.position.version,
                "seq": loaded.position.seq,
                "state": state,
            }))
        })
    }

    fn history<'a>(
        &'a self,
        id: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Value, Rejection>> {
        Box::pin(async move {
            use futures::{StreamExt, TryStreamExt};
            let recorded: Vec<_> = self
                .repository
                .store()
                .stream_aggregate(A::NAME, id, after)
                .take(limit)
                .try_collect::<Vec<_>>()
                .await
                .map_err(read_rejection)?;
            let mut events = Vec::with_capacity(recorded.len());
            let mut bytes = 0;
            let mut next = None;
            for r in &recorded {
                let today = decode_events::<A::Event>(r)
                    .map_err(|m| read_rejection(ReadError::new(ReadErrorKind::Malformed(m))))?;
                // Today's events (an upcaster may rename or split the stored one),
                // each saying what was stored.
                let mut entries = Vec::with_capacity(today.len());
                for typed in &today {
                    let (event_type, data) = event_parts(typed).map_err(unavailable)?;
                    entries.push(json!({
                        "seq": r.seq,
                        "version": r.version,
                        "type": event_type,
                        "event_id": r.event_id,
                        "stored_type": r.event_type,
                        "schema": r.schema,
                        "occurred_at": r.occurred_at,
                        "stored_at": r.stored_at,
                        "correlation_id": r.metadata.correlation_id,
                        "causation_id": r.metadata.causation_id,
                        "actor": r.metadata.actor,
                        "on_behalf_of": r.metadata.on_behalf_of,
                        "command_id": r.metadata.command_id,
                        "data": data,
                    }));
                }
                // A reply must fit the server's max_payload (1 MB by default); a
                // page ends between stored events, never inside one.
                bytes += serde_json::to_vec(&entries).map_or(0, |b| b.len());
                if bytes > MAX_HISTORY_BYTES && !events.is_empty() {
                    next = events.last().map(|e: &Value| e["seq"].clone());
                    break;
                }
                events.extend(entries);
            }
            if events.is_empty() && after == 0 {
                return Err(Rejection::new(
                    Status::NotFound,
                    "not_found",
                    format!("no {} {id}", A::NAME),
                ));
            }
            Ok(json!({"aggregate": A::NAME, "id": id, "events": events, "next": next}))
        })
    }
}

/// The variant names of an externally tagged serde enum (`Register`, `ChangeEmail`,
/// …), read off its `Deserialize` impl, so registering an aggregate needs no list.
pub(crate) fn variant_names<C: DeserializeOwned>() -> Vec<&'static str> {
    use serde::de::{self, Visitor};

    #[derive(Debug)]
    struct Captured(Vec<&'static str>);
    impl std::fmt::Display for Captured {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "captured")
        }
    }
    impl std::error::Error for Captured {}
    impl de::Error for Captured {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Captured(Vec::new())
        }
    }

    struct Probe;
    impl<'de> de::Deserializer<'de> for Probe {
        type Error = Captured;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
            Err(Captured(Vec::new()))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Captured> {
            Err(Captured(variants.to_vec()))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    match C::deserialize(Probe) {
        Err(Captured(names)) => names,
        Ok(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_names_are_read_off_the_enum() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        enum LampCommand {
            SwitchOn {},
            SwitchOff { reason: String },
            Dim(u8),
            Repair,
        }
        let names = super::variant_names::<LampCommand>();
        assert_eq!(names, ["SwitchOn", "SwitchOff", "Dim", "Repair"]);
    }
}
