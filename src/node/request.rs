//! Reading a command or query request: size, content type, body, id, headers.

use super::reply::{Rejection, Status};
use crate::store::headers;
use crate::store::{Codec, Metadata};
use async_nats::Message;
use serde_json::{Map, Value};

/// The idempotency key header.
pub const COMMAND_ID: &str = headers::COMMAND_ID;
/// The client's optimistic check on the aggregate version.
pub const EXPECTED_VERSION: &str = "Jetsource-Expected-Version";

/// Longest command id accepted.
const MAX_COMMAND_ID: usize = 128;

/// A request body, decoded, with its aggregate id taken out.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) id: String,
    pub(crate) fields: Map<String, Value>,
}

fn header<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

/// Decodes the body (JSON unless `Content-Type` says CBOR) into an object with an `id`.
pub(crate) fn body(msg: &Message, max_bytes: usize) -> Result<Body, Rejection> {
    let mut fields = object(msg, max_bytes)?;
    let id = match fields.remove("id") {
        Some(Value::String(id)) => id,
        Some(_) => {
            return Err(Rejection::new(
                Status::Malformed,
                "malformed",
                "\"id\" must be a string",
            ))
        }
        None => {
            return Err(Rejection::new(
                Status::Malformed,
                "malformed",
                "body has no \"id\"",
            ))
        }
    };
    crate::subjects::validate_id(&id).map_err(|reason| {
        Rejection::new(Status::Invalid, "invalid_id", format!("id {id:?} {reason}"))
    })?;
    Ok(Body { id, fields })
}

/// Decodes the body (JSON unless `Content-Type` says CBOR) into an object; an empty
/// body is an empty object.
pub(crate) fn object(msg: &Message, max_bytes: usize) -> Result<Map<String, Value>, Rejection> {
    if msg.payload.len() > max_bytes {
        return Err(Rejection::new(
            Status::Malformed,
            "too_large",
            format!(
                "body of {} bytes exceeds the limit of {max_bytes}",
                msg.payload.len()
            ),
        ));
    }
    let codec = match header(msg, headers::CONTENT_TYPE) {
        None => Codec::Json,
        Some(ct) => Codec::from_content_type(ct).ok_or_else(|| {
            Rejection::new(
                Status::Malformed,
                "unsupported_content_type",
                format!("content type {ct:?} is not application/json or application/cbor"),
            )
        })?,
    };
    if msg.payload.is_empty() {
        return Ok(Map::new());
    }
    let value: Value = codec.decode(&msg.payload).map_err(|e| {
        Rejection::new(
            Status::Malformed,
            "malformed",
            format!("body is not valid {codec}: {e}"),
        )
    })?;
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(Rejection::new(
            Status::Malformed,
            "malformed",
            "body must be an object",
        )),
    }
}

/// Read-your-writes: the stream sequence (a command ack's `seq`) the view must have
/// applied before the query is answered.
pub const MIN_SEQ: &str = "Jetsource-Min-Seq";

/// `Jetsource-Min-Seq`, if sent.
pub(crate) fn min_seq(msg: &Message) -> Result<Option<u64>, Rejection> {
    header(msg, MIN_SEQ)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                Rejection::new(
                    Status::Invalid,
                    "invalid_min_seq",
                    format!("{MIN_SEQ} {v:?} is not a number"),
                )
            })
        })
        .transpose()
}

/// The command's idempotency key if the client sent one (validated).
pub(crate) fn client_command_id(msg: &Message) -> Result<Option<String>, Rejection> {
    match header(msg, COMMAND_ID) {
        None => Ok(None),
        Some(id) => {
            let ok = !id.is_empty()
                && id.len() <= MAX_COMMAND_ID
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '='));
            if ok {
                Ok(Some(id.to_string()))
            } else {
                Err(Rejection::new(
                    Status::Invalid,
                    "invalid_command_id",
                    format!("{COMMAND_ID} must be 1 to {MAX_COMMAND_ID} of [A-Za-z0-9_=-]"),
                ))
            }
        }
    }
}

/// The metadata every event of this command carries: correlation defaults to the
/// command id, causation is the command id, actor and tenant are copied.
pub(crate) fn metadata(msg: &Message, command_id: &str) -> Metadata {
    let copy = |name| header(msg, name).map(str::to_string);
    Metadata {
        correlation_id: Some(
            copy(headers::CORRELATION_ID).unwrap_or_else(|| command_id.to_string()),
        ),
        causation_id: Some(command_id.to_string()),
        actor: copy(headers::ACTOR),
        tenant: copy(headers::TENANT),
        command_id: Some(command_id.to_string()),
        custom: Default::default(),
    }
}

/// `Jetsource-Expected-Version`, if sent.
pub(crate) fn expected_version(msg: &Message) -> Result<Option<u64>, Rejection> {
    header(msg, EXPECTED_VERSION)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                Rejection::new(
                    Status::Invalid,
                    "invalid_expected_version",
                    format!("{EXPECTED_VERSION} {v:?} is not a number"),
                )
            })
        })
        .transpose()
}
