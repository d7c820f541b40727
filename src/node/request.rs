//! Reading a command or query request: size, content type, body, id, headers.

use super::reply::{Rejection, Status};
use crate::policy::{Caller, Policy};
use crate::store::headers;
use crate::store::{Codec, Metadata};
use crate::telemetry::trace::{self, TraceContext};
use async_nats::Message;
use serde_json::{Map, Value};

/// The idempotency key header.
pub const COMMAND_ID: &str = headers::COMMAND_ID;
/// The client's optimistic check on the aggregate version.
pub const EXPECTED_VERSION: &str = "Jetsource-Expected-Version";

/// The header the NATS server writes on a request that came through a service
/// import: the caller's account and user (a client cannot forge it there).
pub const REQUEST_INFO: &str = "Nats-Request-Info";

/// Longest command id accepted.
const MAX_COMMAND_ID: usize = 128;
/// Longest version or sequence header (`u64::MAX` has 20 digits).
const MAX_NUMBER: usize = 24;
/// Longest `Content-Type` read.
const MAX_CONTENT_TYPE: usize = 128;

/// A request body, decoded, with its aggregate id taken out.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) id: String,
    pub(crate) fields: Map<String, Value>,
}

fn header<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    let headers = msg.headers.as_ref()?;
    // A request carries a few headers: comparing names beats `get`, which copies
    // the name into a `HeaderName` and hashes it for every lookup. A long header
    // block keeps the hashed lookup, so the work stays bounded either way.
    if headers.len() > 8 {
        return headers.get(name).map(|v| v.as_str());
    }
    headers
        .iter()
        .find(|(k, _)| AsRef::<str>::as_ref(*k) == name)
        .and_then(|(_, values)| values.first())
        .map(|v| v.as_str())
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
    let codec = match text(msg, headers::CONTENT_TYPE, MAX_CONTENT_TYPE)? {
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
    text(msg, MIN_SEQ, MAX_NUMBER)?
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
    match text(msg, COMMAND_ID, MAX_COMMAND_ID)? {
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

/// Longest correlation id, actor or on-behalf-of value accepted.
const MAX_NAME: usize = 128;
/// Longest `Nats-Request-Info` read (the server's is a few hundred bytes).
const MAX_REQUEST_INFO: usize = 4096;

/// Header `name`, if sent, bounded to `max` bytes of text without control
/// characters (bytes that were not UTF-8 arrive as U+FFFD and are refused too).
fn text<'a>(msg: &'a Message, name: &str, max: usize) -> Result<Option<&'a str>, Rejection> {
    let Some(value) = header(msg, name) else {
        return Ok(None);
    };
    if value.len() > max {
        return Err(Rejection::new(
            Status::Malformed,
            "header_too_long",
            format!("header {name} has {} bytes, more than {max}", value.len()),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() || c == char::REPLACEMENT_CHARACTER)
    {
        return Err(Rejection::new(
            Status::Malformed,
            "invalid_header",
            format!("header {name} must be UTF-8 text without control characters"),
        ));
    }
    Ok(Some(value))
}

/// Who sent the request: the account and user the server wrote into
/// `Nats-Request-Info` when the request came through a service import, else a
/// client of jetsource's own account.
pub(crate) fn caller(msg: &Message) -> Result<Caller, Rejection> {
    #[derive(serde::Deserialize)]
    struct RequestInfo {
        acc: String,
        #[serde(default)]
        user: Option<String>,
    }
    let Some(info) = text(msg, REQUEST_INFO, MAX_REQUEST_INFO)? else {
        return Ok(Caller::Internal);
    };
    let info: RequestInfo = serde_json::from_str(info).map_err(|e| {
        Rejection::new(
            Status::Malformed,
            "invalid_header",
            format!("header {REQUEST_INFO} is not the server's client info: {e}"),
        )
    })?;
    Ok(Caller::Client {
        account: info.acc,
        user: info.user,
    })
}

/// The metadata every event of this command carries: correlation defaults to the
/// command id, causation is the command id, the actor is the caller's identity
/// (a client of jetsource's own account may name one), and the end user acted for
/// is kept only from callers the policy lets delegate.
pub(crate) fn metadata(
    msg: &Message,
    command_id: &str,
    caller: &Caller,
    policy: Option<&Policy>,
) -> Result<Metadata, Rejection> {
    let correlation_id = text(msg, headers::CORRELATION_ID, MAX_NAME)?;
    if correlation_id.is_some_and(|c| c.contains(' ')) {
        return Err(Rejection::new(
            Status::Malformed,
            "invalid_header",
            format!("header {} must not contain spaces", headers::CORRELATION_ID),
        ));
    }
    let named_actor = text(msg, headers::ACTOR, MAX_NAME)?;
    let actor = match caller {
        Caller::Internal => named_actor.map(str::to_string),
        Caller::Client { .. } if named_actor.is_some() => {
            return Err(Rejection::new(
                Status::Forbidden,
                "forbidden",
                format!(
                "{caller} may not set {}: the actor is your NATS identity; name the end user in {}",
                headers::ACTOR,
                headers::ON_BEHALF_OF
            ),
            ))
        }
        Caller::Client { .. } => caller.actor(),
    };
    let on_behalf_of = text(msg, headers::ON_BEHALF_OF, MAX_NAME)?;
    if on_behalf_of.is_some() && !policy.is_none_or(|p| p.may_delegate(caller)) {
        return Err(Rejection::new(
            Status::Forbidden,
            "forbidden",
            format!(
                "{caller} may not act on behalf of others ({})",
                headers::ON_BEHALF_OF
            ),
        ));
    }
    Ok(Metadata {
        correlation_id: Some(correlation_id.unwrap_or(command_id).to_string()),
        causation_id: Some(command_id.to_string()),
        actor,
        on_behalf_of: on_behalf_of.map(str::to_string),
        command_id: Some(command_id.to_string()),
        custom: custom_metadata(msg)?,
        traceparent: None,
        tracestate: None,
    })
}

/// `Jetsource-Expected-Version`, if sent.
pub(crate) fn expected_version(msg: &Message) -> Result<Option<u64>, Rejection> {
    text(msg, EXPECTED_VERSION, MAX_NUMBER)?
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

/// Most `Jetsource-Meta-*` headers one command may carry.
const MAX_META_HEADERS: usize = 16;
/// Longest `Jetsource-Meta-<key>` key.
const MAX_META_KEY: usize = 64;
/// Longest `Jetsource-Meta-<key>` value.
const MAX_META_VALUE: usize = 256;

/// The command's `Jetsource-Meta-<key>` headers: custom metadata copied onto its
/// events. At most 16, keys of 1 to 64 `[A-Za-z0-9_-]`, values of text up to 256
/// bytes; else 400 naming the header.
pub(crate) fn custom_metadata(
    msg: &Message,
) -> Result<std::collections::BTreeMap<String, String>, Rejection> {
    let mut custom = std::collections::BTreeMap::new();
    let Some(h) = &msg.headers else {
        return Ok(custom);
    };
    let malformed = |message: String| Rejection::new(Status::Malformed, "invalid_header", message);
    for (name, _) in h.iter() {
        let name: &str = name.as_ref();
        let prefix = headers::META_PREFIX;
        if name.len() < prefix.len() || !name[..prefix.len()].eq_ignore_ascii_case(prefix) {
            continue;
        }
        let key = &name[prefix.len()..];
        let key_ok = (1..=MAX_META_KEY).contains(&key.len())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !key_ok {
            return Err(malformed(format!(
                "header {name}: the key after {prefix} must be 1 to {MAX_META_KEY} of [A-Za-z0-9_-]"
            )));
        }
        if custom.len() == MAX_META_HEADERS {
            return Err(malformed(format!(
                "more than {MAX_META_HEADERS} {prefix}* headers"
            )));
        }
        let value = text(msg, name, MAX_META_VALUE)?.unwrap_or_default();
        custom.insert(key.to_string(), value.to_string());
    }
    Ok(custom)
}

/// Longest `traceparent` read (version 00 is 55 bytes; later versions may add fields).
const MAX_TRACEPARENT: usize = 128;

/// The W3C trace context the request continues, if it sent one; a malformed
/// `traceparent` or an overlong `tracestate` is a 400 naming it.
pub(crate) fn trace_context(msg: &Message) -> Result<Option<TraceContext>, Rejection> {
    let Some(parent) = text(msg, trace::TRACEPARENT, MAX_TRACEPARENT)? else {
        return Ok(None);
    };
    let state = text(msg, trace::TRACESTATE, trace::MAX_TRACESTATE)?;
    TraceContext::parse(parent, state).map(Some).map_err(|why| {
        Rejection::new(
            Status::Malformed,
            "invalid_header",
            format!("header {} {why}", trace::TRACEPARENT),
        )
    })
}
