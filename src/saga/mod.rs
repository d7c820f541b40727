//! Sagas (process managers): long-running flows across aggregates, driven by events,
//! acting through commands.
//!
//! A [`Saga`] is pure: given an instance's state and one [`Input`] (an event, a
//! refusal of a command it sent, a deadline that passed) it returns a [`Reaction`]:
//! the next state, the commands to send, the deadlines to set or cancel, and whether
//! the flow is finished. The [runner](runner::SagaRunner) does the rest:
//!
//! - the durable consumer `saga_<name>` on the aggregates the saga reads, restarted
//!   from its checkpoint in KV `checkpoints`, one active process through a lease;
//! - instance records in KV `sagas` (`<saga>.<instance>`), written only by
//!   compare-and-set on the revision, kept after the flow ends for inspection;
//! - commands over request/reply with deterministic command ids (a UUIDv5 of saga,
//!   instance and step), so a redelivered event re-sends the same command and the
//!   node runs it once; retries with backoff on timeouts and 503;
//! - refusals fed back to the saga, which compensates;
//! - deadlines as JetStream message schedules (ADR-51) in stream `TIMERS`: they fire
//!   on the server's clock and survive restarts of every process, the server included.
//!
//! [`instances`] lists and shows the records (`jetsource sagas`).

pub mod instances;
pub mod runner;
pub mod timers;

pub use instances::Instance;
pub use runner::{SagaConfig, SagaError, SagaErrorKind, SagaRunner};

use crate::aggregate::Aggregate;
use crate::store::MalformedEvent;
use crate::store::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt::Debug;

/// Bucket holding saga instances.
pub const BUCKET: &str = "sagas";

/// A process manager: pure decisions, the runner does the I/O.
///
/// ```
/// use jetsource::saga::{Input, Reaction, Saga};
/// use jetsource::{MalformedEvent, RecordedEvent};
/// /// Counts registrations per person; does nothing else.
/// struct Welcome;
/// impl Saga for Welcome {
///     type State = u32;
///     fn name(&self) -> &str { "welcome" }
///     fn aggregates(&self) -> &[&'static str] { &["person"] }
///     fn correlate(&self, event: &RecordedEvent) -> Result<Option<String>, MalformedEvent> {
///         Ok((event.event_type == "PersonRegistered").then(|| event.aggregate_id.clone()))
///     }
///     fn react(&self, seen: &u32, _input: Input<'_>) -> Reaction<u32> {
///         Reaction::to(seen + 1).finish("welcomed")
///     }
/// }
/// ```
pub trait Saga: Send + Sync + 'static {
    /// An instance's state; `Default` is the state before its first event.
    type State: Serialize + DeserializeOwned + Default + Clone + PartialEq + Debug + Send + Sync;

    /// Names the consumer (`saga_<name>`), the keys in `sagas` and the timers.
    fn name(&self) -> &str;

    /// The aggregate types whose events the saga reads.
    fn aggregates(&self) -> &[&'static str];

    /// The instance an event belongs to (the correlation key, a valid id token), or
    /// `None` when the saga does not care about it. An error says the saga should
    /// read this event but cannot: the runner parks it in `DLQ` and goes on.
    fn correlate(&self, event: &RecordedEvent) -> Result<Option<String>, MalformedEvent>;

    /// Decides what the instance does next: its new state, the commands to send,
    /// the deadlines to set or cancel, and whether it is finished.
    ///
    /// What it may and may not do:
    /// - **Pure.** No I/O, no clock, no randomness: everything needed is in `state`
    ///   and `input`. Time enters as an event's field or a deadline's firing.
    /// - **Deterministic.** After a crash the runner may hand it the same input
    ///   again with the same state; it must decide the same. A command's id comes
    ///   from (saga, instance, step), so a resent step is deduplicated by the
    ///   server: give each step a name that is unique within the instance.
    /// - **Total.** Every input gets a reaction; an input the saga does not care
    ///   about returns `Reaction::to(state.clone())`. A panic stops the process
    ///   (the standby takes over and meets the same input), so do not panic.
    /// - **Storable state.** The state must serialize as JSON; one that does not
    ///   is parked in `DLQ` before any command goes out.
    /// - A refused command comes back as [`Input::Refused`]: compensate there.
    ///
    /// ```
    /// use jetsource::saga::{Input, Reaction};
    /// /// Set a reminder on the first event, stop when it fires.
    /// fn react(reminded: &bool, input: Input<'_>) -> Reaction<bool> {
    ///     match input {
    ///         Input::Event(e) if !reminded => {
    ///             let at = e.occurred_at + chrono::Duration::days(1);
    ///             Reaction::to(true).deadline("remind", at)
    ///         }
    ///         Input::Deadline { name: "remind" } => Reaction::to(*reminded).finish("reminded"),
    ///         _ => Reaction::to(*reminded),
    ///     }
    /// }
    /// ```
    fn react(&self, state: &Self::State, input: Input<'_>) -> Reaction<Self::State>;

    /// A short name for where a running instance stands (`offered`, `accepted`),
    /// stored with the instance and shown by `jetsource sagas list`, the console
    /// and the `jetsource_saga_instances` metric. Keep the names few: each is a
    /// metric series. Pure, like [`react`](Saga::react). Default: `running`.
    ///
    /// ```
    /// # #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # struct Offer { accepted: bool }
    /// fn stage(offer: &Offer) -> String {
    ///     if offer.accepted { "accepted" } else { "offered" }.to_string()
    /// }
    /// # assert_eq!(stage(&Offer::default()), "offered");
    /// ```
    fn stage(&self, state: &Self::State) -> String {
        let _ = state;
        "running".to_string()
    }
}

/// What a saga reacts to.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// An event of one of its aggregates, routed to this instance.
    Event(&'a RecordedEvent),
    /// A command it sent was refused (any status but 503, which is retried).
    Refused {
        /// The step that sent it.
        step: &'a str,
        /// 400, 404, 409 or 422.
        status: u16,
        /// The stable error code, e.g. `position_not_open`.
        code: &'a str,
        /// For people.
        message: &'a str,
    },
    /// A deadline it set has passed.
    Deadline {
        /// The deadline's name.
        name: &'a str,
    },
}

impl Input<'_> {
    /// One line for the instance's log.
    pub fn describe(&self) -> String {
        match self {
            Input::Event(e) => format!("event {} #{} on {}", e.event_type, e.seq, e.subject),
            Input::Refused {
                step, status, code, ..
            } => format!("step {step} refused: {status} {code}"),
            Input::Deadline { name } => format!("deadline {name} passed"),
        }
    }
}

/// A command a saga sends, named by its step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaCommand {
    /// The step: with saga and instance it makes the command id, so it must be
    /// the same every time the saga takes this step.
    pub step: String,
    /// `person`, `organization`, ...
    pub aggregate: String,
    /// `RecordOffer`, ...
    pub command: String,
    /// The JSON body, the aggregate `id` inside.
    pub body: Value,
}

impl SagaCommand {
    /// A typed command for aggregate `A`'s instance `id`.
    ///
    /// ```
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
    /// let off = LampCommand::SwitchOff { reason: "night".into() };
    /// let c = jetsource::saga::SagaCommand::new::<Lamp>("off", "hall", &off);
    /// assert_eq!((c.aggregate.as_str(), c.command.as_str()), ("lamp", "SwitchOff"));
    /// assert_eq!(c.body, serde_json::json!({"id": "hall", "reason": "night"}));
    /// ```
    ///
    /// # Panics
    /// When `A::Command` does not serialize as an externally tagged enum (every
    /// command type the node can serve does).
    pub fn new<A: Aggregate>(step: &str, id: &str, command: &A::Command) -> SagaCommand
    where
        A::Command: Serialize,
    {
        let (name, body) = crate::client::aggregate_command_body::<A>(id, command)
            .unwrap_or_else(|e| panic!("{} is not a node command: {e}", A::NAME));
        SagaCommand {
            step: step.to_string(),
            aggregate: A::NAME.to_string(),
            command: name,
            body,
        }
    }

    /// The deterministic command id of this step of `saga`'s `instance`.
    ///
    /// ```
    /// # use jetsource::saga::SagaCommand;
    /// # let c = SagaCommand { step: "hire".into(), aggregate: "organization".into(), command: "Hire".into(), body: serde_json::json!({}) };
    /// assert_eq!(c.command_id("hiring", "o1"), c.command_id("hiring", "o1"));
    /// assert_ne!(c.command_id("hiring", "o1"), c.command_id("hiring", "o2"));
    /// ```
    pub fn command_id(&self, saga: &str, instance: &str) -> String {
        let name = format!("jetsource-saga/{saga}/{instance}/{}", self.step);
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
    }
}

/// A deadline to set: the saga gets [`Input::Deadline`] once `at` has passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deadline {
    /// Its name within the instance (setting it again moves it).
    pub name: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What a saga decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaction<S> {
    /// The instance's next state.
    pub state: S,
    /// Commands to send, in order.
    pub commands: Vec<SagaCommand>,
    /// Deadlines to set (or move).
    pub deadlines: Vec<Deadline>,
    /// Deadlines to cancel, by name.
    pub cancel: Vec<String>,
    /// `Some(outcome)` ends the flow; the record is kept, marked with it.
    pub finished: Option<String>,
}

impl<S> Reaction<S> {
    /// Moves to `state`, nothing else yet.
    ///
    /// ```
    /// let r = jetsource::saga::Reaction::to(1u8);
    /// assert!(r.commands.is_empty() && r.finished.is_none());
    /// ```
    pub fn to(state: S) -> Reaction<S> {
        Reaction {
            state,
            commands: Vec::new(),
            deadlines: Vec::new(),
            cancel: Vec::new(),
            finished: None,
        }
    }

    /// Also sends `command`.
    ///
    /// ```
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
    /// # use jetsource::saga::{Reaction, SagaCommand};
    /// let off = LampCommand::SwitchOff { reason: "night".into() };
    /// let r = Reaction::to(()).send(SagaCommand::new::<Lamp>("off", "hall", &off));
    /// assert_eq!(r.commands.len(), 1);
    /// ```
    pub fn send(mut self, command: SagaCommand) -> Self {
        self.commands.push(command);
        self
    }

    /// Also sets deadline `name` at `at`.
    ///
    /// ```
    /// let r = jetsource::saga::Reaction::to(()).deadline("expiry", chrono::Utc::now());
    /// assert_eq!(r.deadlines[0].name, "expiry");
    /// ```
    pub fn deadline(mut self, name: &str, at: DateTime<Utc>) -> Self {
        self.deadlines.push(Deadline {
            name: name.to_string(),
            at,
        });
        self
    }

    /// Also cancels deadline `name`.
    ///
    /// ```
    /// let r = jetsource::saga::Reaction::to(()).cancel("expiry");
    /// assert_eq!(r.cancel, ["expiry"]);
    /// ```
    pub fn cancel(mut self, name: &str) -> Self {
        self.cancel.push(name.to_string());
        self
    }

    /// Also ends the flow with `outcome`.
    ///
    /// ```
    /// let r = jetsource::saga::Reaction::to(()).finish("hired");
    /// assert_eq!(r.finished.as_deref(), Some("hired"));
    /// ```
    pub fn finish(mut self, outcome: &str) -> Self {
        self.finished = Some(outcome.to_string());
        self
    }

    /// True when it changes nothing relative to `before`.
    pub fn is_nothing(&self, before: &S) -> bool
    where
        S: PartialEq,
    {
        self.state == *before
            && self.commands.is_empty()
            && self.deadlines.is_empty()
            && self.cancel.is_empty()
            && self.finished.is_none()
    }
}
