//! A typed client for the node's commands and queries: plain NATS request/reply with
//! JSON bodies underneath, so it does nothing another language's NATS client could not.
//!
//! ```no_run
//! # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
//! # enum LampCommand { SwitchOff { reason: String } }
//! # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
//! # #[serde(tag = "type", content = "data")]
//! # enum LampEvent { SwitchedOff {} }
//! # impl jetsource::DomainEvent for LampEvent {}
//! # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
//! # #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)] struct Lamp;
//! # impl jetsource::Aggregate for Lamp {
//! #     const NAME: &'static str = "lamp";
//! #     type Command = LampCommand; type Event = LampEvent; type Error = Never;
//! #     fn handle(&self, _: &LampCommand) -> Result<Vec<LampEvent>, Never> { Ok(vec![LampEvent::SwitchedOff {}]) }
//! #     fn apply(&mut self, _: &LampEvent) {}
//! # }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use jetsource::client::{Client, CommandOptions};
//! let nats = jetsource::connect("nats://127.0.0.1:4222").await?;
//! let client = Client::new(nats, jetsource::Subjects::default());
//! let off = LampCommand::SwitchOff { reason: "night".into() };
//! let ack = client.execute::<Lamp>("hall", &off, &CommandOptions::default()).await?;
//! println!("stored at seq {}", ack.seq);
//! # Ok(()) }
//! ```

use crate::aggregate::Aggregate;
use crate::error::Error;
use crate::node::request::{EXPECTED_VERSION, MIN_SEQ};
use crate::node::Ack;
use crate::store::headers;
use crate::subjects::Subjects;
use async_nats::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// Why a command or query did not succeed.
pub type SendError = Error<SendErrorKind>;

/// The kinds of [`SendError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendErrorKind {
    /// The node answered with a rejection (`{"status":"rejected",...}`).
    #[error("rejected {status} {code}: {message}")]
    Rejected {
        /// 400, 404, 409, 422 or 503.
        status: u16,
        /// Stable error code, e.g. `position_not_open`.
        code: String,
        /// For people.
        message: String,
    },
    /// No node serves the subject.
    #[error("no node serves {0}: is `jetsource node` running?")]
    NoResponders(String),
    /// No reply within the timeout (the command may or may not have run; resend
    /// with the same command id to find out).
    #[error("no reply on {0} in time")]
    TimedOut(String),
    /// The body could not be encoded or the reply not read.
    #[error("{0}")]
    Encoding(String),
    /// NATS failed the request.
    #[error("request failed")]
    Transport,
}

impl SendErrorKind {
    /// Worth retrying with the same command id: a timeout, no node yet, a 503.
    pub fn is_transient(&self) -> bool {
        match self {
            SendErrorKind::Rejected { status, .. } => *status == 503,
            SendErrorKind::NoResponders(_)
            | SendErrorKind::TimedOut(_)
            | SendErrorKind::Transport => true,
            SendErrorKind::Encoding(_) => false,
        }
    }
}

/// The headers a command may carry; all optional.
///
/// ```no_run
/// let options = jetsource::client::CommandOptions {
///     command_id: Some("order-42-confirm".into()),
///     ..Default::default()
/// };
/// ```
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// Idempotency key: a resend with the same id runs once.
    pub command_id: Option<String>,
    /// Correlation id (the node defaults it to the command id).
    pub correlation_id: Option<String>,
    /// What caused this command (an event id, another command id).
    pub causation_id: Option<String>,
    /// Who acts. Only clients inside jetsource's own account are believed; the
    /// node records an application's authenticated identity instead.
    pub actor: Option<String>,
    /// The end user this client acts for (kept apart from the actor; only from
    /// clients the policy lets delegate).
    pub on_behalf_of: Option<String>,
    /// Only run if the aggregate is at this version.
    pub expected_version: Option<u64>,
    /// The W3C trace context the command continues (`traceparent`), carried onto
    /// its events.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` sent with `traceparent`.
    pub tracestate: Option<String>,
}

/// Sends commands and queries to the node.
#[derive(Debug, Clone)]
pub struct Client {
    nats: async_nats::Client,
    subjects: Subjects,
    timeout: Duration,
}

impl Client {
    /// A client with a 5 s reply timeout.
    ///
    /// ```no_run
    /// # async fn demo(nats: async_nats::Client) {
    /// let client = jetsource::client::Client::new(nats, jetsource::Subjects::default());
    /// # }
    /// ```
    pub fn new(nats: async_nats::Client, subjects: Subjects) -> Client {
        Client {
            nats,
            subjects,
            timeout: Duration::from_secs(5),
        }
    }

    /// The same client with another reply timeout.
    ///
    /// ```no_run
    /// # fn demo(client: jetsource::client::Client) {
    /// let patient = client.with_timeout(std::time::Duration::from_secs(30));
    /// # }
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Sends a typed command to aggregate `id` (`cmd.<A::NAME>.<Variant>`).
    ///
    /// ```no_run
    /// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    /// # enum LampCommand { SwitchOff { reason: String } }
    /// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # #[serde(tag = "type", content = "data")]
    /// # enum LampEvent { SwitchedOff {} }
    /// # impl jetsource::DomainEvent for LampEvent {}
    /// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
    /// # #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)] struct Lamp;
    /// # impl jetsource::Aggregate for Lamp {
    /// #     const NAME: &'static str = "lamp";
    /// #     type Command = LampCommand; type Event = LampEvent; type Error = Never;
    /// #     fn handle(&self, _: &LampCommand) -> Result<Vec<LampEvent>, Never> { Ok(vec![LampEvent::SwitchedOff {}]) }
    /// #     fn apply(&mut self, _: &LampEvent) {}
    /// # }
    /// # async fn demo(client: jetsource::client::Client) -> Result<(), jetsource::client::SendError> {
    /// let off = LampCommand::SwitchOff { reason: "night".into() };
    /// client.execute::<Lamp>("hall", &off, &Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn execute<A: Aggregate>(
        &self,
        id: &str,
        command: &A::Command,
        options: &CommandOptions,
    ) -> Result<Ack, SendError>
    where
        A::Command: Serialize,
    {
        let (name, body) = aggregate_command_body::<A>(id, command)?;
        self.send(A::NAME, &name, &body, options).await
    }

    /// Sends `cmd.<aggregate>.<command>` with a JSON body (the aggregate `id` inside).
    ///
    /// ```no_run
    /// # async fn demo(client: jetsource::client::Client) -> Result<(), jetsource::client::SendError> {
    /// let body = serde_json::json!({"id": "ada", "offer_id": "o-1"});
    /// client.send("person", "DeclineOffer", &body, &Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        aggregate: &str,
        command: &str,
        body: &Value,
        options: &CommandOptions,
    ) -> Result<Ack, SendError> {
        let mut h = HeaderMap::new();
        let pairs = [
            (headers::COMMAND_ID, &options.command_id),
            (headers::CORRELATION_ID, &options.correlation_id),
            (headers::CAUSATION_ID, &options.causation_id),
            (headers::ACTOR, &options.actor),
            (headers::ON_BEHALF_OF, &options.on_behalf_of),
            (headers::TRACEPARENT, &options.traceparent),
            (headers::TRACESTATE, &options.tracestate),
        ];
        for (name, value) in pairs {
            if let Some(v) = value {
                h.insert(name, v.as_str());
            }
        }
        if let Some(v) = options.expected_version {
            h.insert(EXPECTED_VERSION, v.to_string().as_str());
        }
        let subject = format!("{}cmd.{aggregate}.{command}", self.subjects.prefix());
        let reply = self.request(subject, body, h).await?;
        serde_json::from_value(reply)
            .map_err(|e| SendError::new(SendErrorKind::Encoding(format!("not an ack: {e}"))))
    }

    /// Sends `qry.<view>.<op>` and returns the reply's JSON.
    ///
    /// ```no_run
    /// # async fn demo(client: jetsource::client::Client) -> Result<(), jetsource::client::SendError> {
    /// let ada = client.query("person", "get", &serde_json::json!({"id": "ada"})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn query(&self, view: &str, op: &str, body: &Value) -> Result<Value, SendError> {
        let subject = format!("{}qry.{view}.{op}", self.subjects.prefix());
        self.request(subject, body, HeaderMap::new()).await
    }

    /// Like [`query`](Self::query), answered only once the view has caught up with
    /// stream sequence `min_seq` (the `seq` of a command's ack): read-your-writes.
    ///
    /// ```no_run
    /// # async fn demo(client: jetsource::client::Client, ack: jetsource::node::Ack) -> Result<(), jetsource::client::SendError> {
    /// let ada = client.query_after("person", "get", &serde_json::json!({"id": "ada"}), ack.seq).await?;
    /// # Ok(()) }
    /// ```
    pub async fn query_after(
        &self,
        view: &str,
        op: &str,
        body: &Value,
        min_seq: u64,
    ) -> Result<Value, SendError> {
        let subject = format!("{}qry.{view}.{op}", self.subjects.prefix());
        let mut h = HeaderMap::new();
        h.insert(MIN_SEQ, min_seq.to_string().as_str());
        self.request(subject, body, h).await
    }

    async fn request(
        &self,
        subject: String,
        body: &Value,
        mut h: HeaderMap,
    ) -> Result<Value, SendError> {
        h.insert(headers::CONTENT_TYPE, "application/json");
        let payload = serde_json::to_vec(body).expect("a JSON value serializes");
        let request = async_nats::Request::new()
            .headers(h)
            .payload(payload.into())
            .timeout(Some(self.timeout));
        let reply = self
            .nats
            .send_request(subject.clone(), request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    SendError::new(SendErrorKind::NoResponders(subject.clone()))
                }
                async_nats::RequestErrorKind::TimedOut => {
                    SendError::new(SendErrorKind::TimedOut(subject.clone()))
                }
                _ => SendError::with_source(SendErrorKind::Transport, e),
            })?;
        let value: Value = serde_json::from_slice(&reply.payload).map_err(|e| {
            SendError::new(SendErrorKind::Encoding(format!(
                "reply on {subject} is not JSON: {e}"
            )))
        })?;
        if value.get("status").and_then(Value::as_str) == Some("rejected") {
            let status = reply
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR_CODE))
                .and_then(|v| v.as_str().parse().ok())
                .unwrap_or(0);
            let text = |field: &str| {
                value["error"][field]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            return Err(SendError::new(SendErrorKind::Rejected {
                status,
                code: text("code"),
                message: text("message"),
            }));
        }
        Ok(value)
    }
}

/// [`command_body`] for aggregate `A`, without its [`CLOCK`](Aggregate::CLOCK)
/// field: the node sets that one and refuses it from a client.
pub(crate) fn aggregate_command_body<A: Aggregate>(
    id: &str,
    command: &A::Command,
) -> Result<(String, Value), SendError>
where
    A::Command: Serialize,
{
    let (name, mut body) = command_body(id, command)?;
    if let (Some(clock), Some(fields)) = (A::CLOCK, body.as_object_mut()) {
        fields.remove(clock);
    }
    Ok((name, body))
}

/// Splits a typed command into its subject name and the JSON body the node reads:
/// `LampCommand::SwitchOff { reason }` -> (`SwitchOff`, `{"id", "reason"}`).
///
/// ```
/// #[derive(serde::Serialize)]
/// enum LampCommand { SwitchOff { reason: String }, Repair {} }
/// let off = LampCommand::SwitchOff { reason: "night".into() };
/// let (name, body) = jetsource::client::command_body("hall", &off).unwrap();
/// assert_eq!(name, "SwitchOff");
/// assert_eq!(body, serde_json::json!({"id": "hall", "reason": "night"}));
/// let (name, body) = jetsource::client::command_body("hall", &LampCommand::Repair {}).unwrap();
/// assert_eq!((name.as_str(), body), ("Repair", serde_json::json!({"id": "hall"})));
/// ```
pub fn command_body<C: Serialize>(id: &str, command: &C) -> Result<(String, Value), SendError> {
    let bad = |why: String| SendError::new(SendErrorKind::Encoding(why));
    let value = serde_json::to_value(command).map_err(|e| bad(e.to_string()))?;
    let (name, fields) = match value {
        Value::Object(map) if map.len() == 1 => map.into_iter().next().expect("one entry"),
        Value::String(name) => (name, Value::Object(Map::new())),
        other => return Err(bad(format!("{other} is not an externally tagged command"))),
    };
    let mut fields = match fields {
        Value::Object(fields) => fields,
        other => {
            return Err(bad(format!(
                "command {name} has fields {other}, not an object"
            )))
        }
    };
    fields.insert("id".into(), Value::String(id.to_string()));
    Ok((name, Value::Object(fields)))
}
