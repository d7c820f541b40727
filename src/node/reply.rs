//! Replies: the accepted ack and the rejection with its fixed status table.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The fixed status table of command and query replies (DESIGN "Commands").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 400: the request cannot be read (bad JSON/CBOR, wrong shape, too large,
    /// unsupported content type).
    Malformed,
    /// 403: the caller's identity may not send this command or ask this query
    /// (see [`Policy`](crate::Policy)), or set a header reserved to others.
    Forbidden,
    /// 404: no such aggregate, command, query or aggregate instance.
    NotFound,
    /// 409: a domain rule, an expected-version mismatch or a lasting conflict.
    Conflict,
    /// 422: a value is invalid (an id with `.`, a bad email).
    Invalid,
    /// 500: a bug in the app's code (a query's answer that cannot be encoded as
    /// JSON); retrying does not help.
    Internal,
    /// 503: the store is unavailable or timed out; retrying is safe.
    Unavailable,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Malformed => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::Conflict => 409,
            Status::Invalid => 422,
            Status::Internal => 500,
            Status::Unavailable => 503,
        }
    }
}

/// A refused request: what goes back as `{"status":"rejected","error":{…}}` plus the
/// `Nats-Service-Error` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status.
    pub status: Status,
    /// A stable snake_case code.
    pub code: String,
    /// A human-readable message.
    pub message: String,
}

impl Rejection {
    /// A rejection.
    pub fn new(status: Status, code: impl Into<String>, message: impl fmt::Display) -> Rejection {
        Rejection {
            status,
            code: code.into(),
            message: message.to_string(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Error<'a> {
            code: &'a str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            status: &'static str,
            error: Error<'a>,
        }
        let body = Body {
            status: "rejected",
            error: Error {
                code: &self.code,
                message: &self.message,
            },
        };
        serde_json::to_vec(&body).expect("JSON of strings").into()
    }

    /// The service error headers (the NATS micro protocol).
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            async_nats::service::NATS_SERVICE_ERROR,
            self.message.replace(['\r', '\n'], " ").as_str(),
        );
        h.insert(
            async_nats::service::NATS_SERVICE_ERROR_CODE,
            self.status.code().to_string().as_str(),
        );
        h.insert("Content-Type", "application/json");
        h
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.code(), self.code, self.message)
    }
}

/// An executed command's reply:
/// `{"status":"accepted","aggregate":"person","id":"…","version":3,"seq":1042,"events":["PersonRegistered"]}`.
///
/// ```
/// let ack: jetsource::node::Ack = serde_json::from_str(
///     r#"{"status":"accepted","aggregate":"person","id":"p1","version":1,"seq":7,"events":["PersonRegistered"]}"#,
/// ).unwrap();
/// assert_eq!(ack.seq, 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Always `accepted`.
    pub status: String,
    /// Aggregate type.
    pub aggregate: String,
    /// Aggregate id.
    pub id: String,
    /// Aggregate version after the command.
    pub version: u64,
    /// Stream sequence of the command's last event: pass it as `Jetsource-Min-Seq`
    /// to read your own write.
    pub seq: u64,
    /// The types of the events the command produced, in order.
    pub events: Vec<String>,
}
