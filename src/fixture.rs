//! Given/when/then for aggregates: no server, and failures point at the test line.
//!
//! ```
//! # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
//! # #[serde(tag = "type", content = "data")]
//! # enum CounterEvent { Incremented { by: u32 } }
//! # impl jetsource::DomainEvent for CounterEvent {}
//! # #[derive(Debug, PartialEq, thiserror::Error)] #[error("overflow")] struct Overflow;
//! # #[derive(Debug, Clone, Default)] struct Counter { value: u32 }
//! # impl jetsource::Aggregate for Counter {
//! #     const NAME: &'static str = "counter";
//! #     type Command = u32; type Event = CounterEvent; type Error = Overflow;
//! #     fn handle(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> {
//! #         self.value.checked_add(*by).ok_or(Overflow)?; Ok(vec![CounterEvent::Incremented { by: *by }]) }
//! #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Incremented { by } => self.value += by } }
//! # }
//! use jetsource::fixture::AggregateFixture;
//! AggregateFixture::<Counter>::given([CounterEvent::Incremented { by: 1 }])
//!     .when(2)
//!     .then_expect_events([CounterEvent::Incremented { by: 2 }]);
//! AggregateFixture::<Counter>::given([CounterEvent::Incremented { by: u32::MAX }])
//!     .when(1)
//!     .then_expect_error(Overflow);
//! ```

use crate::aggregate::{decode_body, event_parts, Aggregate};
use std::fmt::Debug;

/// An aggregate built from past events, waiting for a command.
#[derive(Debug)]
pub struct AggregateFixture<A: Aggregate> {
    state: A,
    history: Vec<A::Event>,
}

/// The result of one command, waiting for expectations.
#[derive(Debug)]
#[must_use = "an outcome checks nothing until a then_* method is called"]
pub struct Outcome<A: Aggregate> {
    history: Vec<A::Event>,
    command: String,
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> AggregateFixture<A>
where
    A::Command: Debug,
    A::Event: PartialEq,
{
    /// Starts from the state these events produce.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let history: Vec<_> = events.into_iter().collect();
        let mut state = A::default();
        for e in &history {
            state.apply(e);
        }
        AggregateFixture { state, history }
    }

    /// Starts from the empty state.
    pub fn given_no_events() -> Self {
        Self::given([])
    }

    /// Runs a command.
    pub fn when(self, command: A::Command) -> Outcome<A> {
        let result = self.state.handle(&command);
        Outcome {
            history: self.history,
            command: format!("{command:?}"),
            state: self.state,
            result,
        }
    }
}

impl<A: Aggregate> Outcome<A>
where
    A::Event: PartialEq,
{
    fn context(&self) -> String {
        format!("given {:?}\nwhen  {}", self.history, self.command)
    }

    /// Expects exactly these events; checks that each survives the wire (encode to a
    /// type and body, decode back equal) and returns the state after them.
    #[track_caller]
    pub fn then_expect_events(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<_> = expected.into_iter().collect();
        let ctx = self.context();
        let events = match self.result {
            Ok(events) => events,
            Err(e) => panic!("{ctx}\nexpected events {expected:?}\nbut it refused: {e} ({e:?})"),
        };
        assert!(
            events == expected,
            "{ctx}\nexpected events {expected:?}\n     got events {events:?}"
        );
        let mut state = self.state;
        for event in &events {
            let (event_type, body) = event_parts(event)
                .unwrap_or_else(|e| panic!("{ctx}\nevent {event:?} cannot be encoded: {e}"));
            let schema = <A::Event as crate::DomainEvent>::schema_version(&event_type);
            let back: Vec<A::Event> = decode_body(&event_type, schema, body)
                .unwrap_or_else(|e| panic!("{ctx}\nevent {event:?} does not decode back: {e}"));
            assert!(
                back.len() == 1 && &back[0] == event,
                "{ctx}\nevent {event:?} decodes back as {back:?}"
            );
            state.apply(event);
        }
        state
    }

    /// Expects the command to be accepted with no events (already so: a no-op).
    #[track_caller]
    pub fn then_expect_no_events(self) {
        self.then_expect_events([]);
    }

    /// Expects a refusal equal to `expected`.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        let ctx = self.context();
        match self.result {
            Ok(events) => {
                panic!("{ctx}\nexpected refusal {expected:?}\nbut it produced {events:?}")
            }
            Err(e) => assert!(
                e == expected,
                "{ctx}\nexpected refusal {expected:?}\n     got refusal {e:?}"
            ),
        }
    }

    /// Expects a refusal for which `check` holds.
    #[track_caller]
    pub fn then_expect_error_matching(self, check: impl FnOnce(&A::Error) -> bool) {
        let ctx = self.context();
        match self.result {
            Ok(events) => panic!("{ctx}\nexpected a refusal\nbut it produced {events:?}"),
            Err(e) => assert!(
                check(&e),
                "{ctx}\nthe refusal {e:?} is not the one expected"
            ),
        }
    }
}

/// `event` as if stored at `seq` on aggregate `A`'s instance `id` (JSON, version 1):
/// input for projection and saga tests without a server.
///
/// ```
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # #[serde(tag = "type", content = "data")]
/// # enum CounterEvent { Incremented { by: u32 } }
/// # impl jetsource::DomainEvent for CounterEvent {}
/// # #[derive(Debug, thiserror::Error)] #[error("overflow")] struct Overflow;
/// # #[derive(Debug, Clone, Default)] struct Counter { value: u32 }
/// # impl jetsource::Aggregate for Counter {
/// #     const NAME: &'static str = "counter";
/// #     type Command = u32; type Event = CounterEvent; type Error = Overflow;
/// #     fn handle(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> { Ok(vec![CounterEvent::Incremented { by: *by }]) }
/// #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Incremented { by } => self.value += by } }
/// # }
/// let e = jetsource::fixture::recorded::<Counter>("c1", 7, &CounterEvent::Incremented { by: 2 });
/// assert_eq!((e.seq, e.event_type.as_str(), e.subject.as_str()), (7, "Incremented", "events.counter.c1"));
/// ```
///
/// # Panics
/// When the event does not encode (not an adjacently tagged serde enum).
pub fn recorded<A: Aggregate>(id: &str, seq: u64, event: &A::Event) -> crate::RecordedEvent {
    let (event_type, body) = event_parts(event).expect("the event encodes");
    let new = crate::NewEvent::encode(
        &event_type,
        1,
        &body,
        crate::store::Codec::Json,
        crate::Metadata::default(),
    )
    .expect("the event encodes");
    crate::RecordedEvent {
        seq,
        subject: format!("events.{}.{id}", A::NAME),
        aggregate: A::NAME.to_string(),
        aggregate_id: id.to_string(),
        version: 1,
        event_id: new.event_id,
        event_type: new.event_type,
        schema: new.schema,
        occurred_at: new.occurred_at,
        stored_at: None,
        codec: new.codec,
        payload: new.payload,
        metadata: new.metadata,
    }
}

/// Given/when for sagas: feed inputs to [`Saga::react`](crate::saga::Saga::react)
/// and look at the reaction, no server needed.
///
/// ```
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # #[serde(tag = "type", content = "data")]
/// # enum CounterEvent { Incremented { by: u32 } }
/// # impl jetsource::DomainEvent for CounterEvent {}
/// # #[derive(Debug, thiserror::Error)] #[error("overflow")] struct Overflow;
/// # #[derive(Debug, Clone, Default)] struct Counter { value: u32 }
/// # impl jetsource::Aggregate for Counter {
/// #     const NAME: &'static str = "counter";
/// #     type Command = u32; type Event = CounterEvent; type Error = Overflow;
/// #     fn handle(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> { Ok(vec![CounterEvent::Incremented { by: *by }]) }
/// #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Incremented { by } => self.value += by } }
/// # }
/// use jetsource::fixture::SagaFixture;
/// use jetsource::saga::{Input, Reaction, Saga};
/// /// Says when a counter has gone past ten, once.
/// struct PastTen;
/// impl Saga for PastTen {
///     type State = u32;
///     fn name(&self) -> &str { "past_ten" }
///     fn aggregates(&self) -> &[&'static str] { &["counter"] }
///     fn correlate(&self, e: &jetsource::RecordedEvent) -> Result<Option<String>, jetsource::MalformedEvent> {
///         Ok(Some(e.aggregate_id.clone()))
///     }
///     fn react(&self, total: &u32, input: Input<'_>) -> Reaction<u32> {
///         let Input::Event(e) = input else { return Reaction::to(*total) };
///         let Ok(CounterEvent::Incremented { by }) = jetsource::decode_event(e) else { return Reaction::to(*total) };
///         let total = total + by;
///         if total > 10 { Reaction::to(total).finish("past ten") } else { Reaction::to(total) }
///     }
/// }
/// let fixture = SagaFixture::new(PastTen).given::<Counter>("c1", &CounterEvent::Incremented { by: 6 });
/// assert_eq!(*fixture.state(), 6);
/// let reaction = fixture.when::<Counter>("c1", &CounterEvent::Incremented { by: 5 });
/// assert_eq!(reaction.finished.as_deref(), Some("past ten"));
/// ```
#[derive(Debug)]
pub struct SagaFixture<G: crate::saga::Saga> {
    saga: G,
    state: G::State,
    seq: u64,
}

impl<G: crate::saga::Saga> SagaFixture<G> {
    /// An instance before its first input.
    pub fn new(saga: G) -> Self {
        SagaFixture {
            saga,
            state: G::State::default(),
            seq: 0,
        }
    }

    /// The instance has already seen `event` of `A`'s `id` (its reaction is kept,
    /// its commands taken as accepted).
    pub fn given<A: Aggregate>(mut self, id: &str, event: &A::Event) -> Self {
        self.state = self.when::<A>(id, event).state;
        self.seq += 1;
        self
    }

    /// The instance's state so far.
    pub fn state(&self) -> &G::State {
        &self.state
    }

    /// The reaction to `event` of `A`'s `id`.
    pub fn when<A: Aggregate>(
        &self,
        id: &str,
        event: &A::Event,
    ) -> crate::saga::Reaction<G::State> {
        let event = recorded::<A>(id, self.seq + 1, event);
        self.saga
            .react(&self.state, crate::saga::Input::Event(&event))
    }

    /// The reaction to step `step` being refused with `code` (status 409).
    pub fn when_refused(&self, step: &str, code: &str) -> crate::saga::Reaction<G::State> {
        let input = crate::saga::Input::Refused {
            step,
            status: 409,
            code,
            message: "refused in a test",
        };
        self.saga.react(&self.state, input)
    }

    /// The reaction to deadline `name` passing.
    pub fn when_deadline(&self, name: &str) -> crate::saga::Reaction<G::State> {
        self.saga
            .react(&self.state, crate::saga::Input::Deadline { name })
    }
}
