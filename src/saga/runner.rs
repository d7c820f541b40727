//! Runs one saga: consumer `saga_<name>` on `EVENTS`, fired deadlines from
//! `TIMERS`, instance records in KV `sagas`, commands over request/reply.
//!
//! Handling one input for one instance: load the record and its revision; skip the
//! input if the record already covers it (its `seq`, or `timer_seq`); let the saga
//! react; send the commands, feeding refusals back to the saga until it sends
//! nothing more; set and cancel deadlines; write the record by compare-and-set. A
//! crash anywhere before the write means the input comes again and the same
//! reaction re-sends the same command ids, which the node runs once. A lost
//! compare-and-set (a second process) starts the handling over from the new record.
//!
//! Within a batch, instances run concurrently and each instance's events in stream
//! order. The checkpoint moves past an event only once every earlier event of the
//! batch is handled; after a failure the cursor restarts from it, and what was
//! already handled is skipped by the records.

use super::instances::{self, Instance, LogEntry, Sent, LOG_LIMIT};
use super::{timers, Input, Reaction, Saga, SagaCommand, BUCKET};
use crate::client::{Client, CommandOptions, SendErrorKind};
use crate::consumer::{self, Checkpoint, JetStreamError, Superseded};
use crate::store::{EventStore, RecordedEvent};
use crate::telemetry::trace::TraceContext;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::{self, kv, AckKind};
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How a saga runner batches and retries.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// Events fetched per step.
    pub batch: usize,
    /// Instances handled at once.
    pub concurrency: usize,
    /// How long a fetch waits for events when caught up.
    pub idle_wait: Duration,
    /// Reply timeout of one command.
    pub command_timeout: Duration,
    /// Sends of one command (timeouts, no node, 503) before the step gives up and
    /// the event comes again from the checkpoint.
    pub command_attempts: u32,
    /// Refusals fed back to the saga for one input before it is cut short.
    pub max_compensation_rounds: usize,
}

impl Default for SagaConfig {
    fn default() -> Self {
        SagaConfig {
            batch: 256,
            concurrency: 32,
            idle_wait: Duration::from_millis(500),
            command_timeout: Duration::from_secs(5),
            command_attempts: 6,
            max_compensation_rounds: 16,
        }
    }
}

/// Why a saga runner stopped or a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaErrorKind {
    /// A JetStream request failed, or commands found no node in time; the step is
    /// retried from the checkpoint.
    Unavailable,
    /// Another runner moved the checkpoint: this one must not write.
    Superseded,
    /// The event stream no longer holds the event the checkpoint names
    /// (recreated, restored to an earlier point, cut short by a power loss):
    /// handling what is there now would skip or repeat events, so it refuses.
    StreamChanged(crate::projection::storage::StreamChanged),
}

impl std::fmt::Display for SagaErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SagaErrorKind::Unavailable => f.write_str("saga step not done yet"),
            SagaErrorKind::Superseded => f.write_str("another saga runner took over"),
            SagaErrorKind::StreamChanged(changed) => {
                write!(f, "{changed}; the saga refuses to go on")
            }
        }
    }
}

/// Error of [`SagaRunner`]'s operations.
pub type SagaError = crate::error::Error<SagaErrorKind>;

impl From<JetStreamError> for SagaError {
    fn from(e: JetStreamError) -> Self {
        SagaError::with_source(SagaErrorKind::Unavailable, e)
    }
}

impl From<consumer::Stolen> for SagaError {
    fn from(e: consumer::Stolen) -> Self {
        SagaError::with_source(SagaErrorKind::Superseded, e)
    }
}

impl From<Superseded> for SagaError {
    fn from(e: Superseded) -> Self {
        SagaError::with_source(SagaErrorKind::Superseded, e)
    }
}

/// Why one input could not be handled.
enum Failure {
    /// Try again later (from the checkpoint).
    Transient(String),
    /// It will never work (an unreadable record): park the event.
    Poison(String),
}

fn transient(e: impl std::fmt::Display) -> Failure {
    Failure::Transient(e.to_string())
}

/// What an instance is handling.
enum Trigger {
    Event(Box<RecordedEvent>),
    Deadline { name: String, seq: u64 },
}

/// What the concurrent instance tasks share.
struct Shared<G: Saga> {
    /// `saga_<name>`.
    consumer: String,
    store: EventStore,
    client: Client,
    saga: G,
    config: SagaConfig,
    records: kv::Store,
    timers: jetstream::stream::Stream,
}

/// One saga's runner.
pub struct SagaRunner<G: Saga> {
    shared: Arc<Shared<G>>,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    fired: jetstream::consumer::Consumer<pull::Config>,
    checkpoint: Checkpoint,
    deliveries: consumer::Deliveries,
    meter: crate::telemetry::metrics::Consumer,
    /// The connection's connect count when the stream was last checked against
    /// the checkpoint (see [`consumer::connects`]).
    checked_at_connect: u64,
}

impl<G: Saga> std::fmt::Debug for SagaRunner<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaRunner")
            .field("saga", &self.shared.saga.name())
            .field("checkpoint", &self.checkpoint.value())
            .finish()
    }
}

impl<G: Saga> SagaRunner<G> {
    /// Ensures bucket `sagas`, streams `TIMERS` and `DLQ`, both consumers, and
    /// reads the checkpoint.
    ///
    /// ```no_run
    /// # use jetsource::saga::{Input, Reaction, Saga};
    /// # struct Welcome;
    /// # impl Saga for Welcome {
    /// #     type State = u32;
    /// #     fn name(&self) -> &str { "welcome" }
    /// #     fn aggregates(&self) -> &[&'static str] { &["member"] }
    /// #     fn correlate(&self, e: &jetsource::RecordedEvent) -> Result<Option<String>, jetsource::MalformedEvent> { Ok(Some(e.aggregate_id.clone())) }
    /// #     fn react(&self, seen: &u32, _: Input<'_>) -> Reaction<u32> { Reaction::to(seen + 1).finish("welcomed") }
    /// # }
    /// # async fn demo(store: jetsource::EventStore, client: jetsource::client::Client) {
    /// use jetsource::saga::{SagaRunner, SagaConfig};
    /// let runner = SagaRunner::new(store, client, Welcome, SagaConfig::default()).await.unwrap();
    /// let (_stop, stopped) = tokio::sync::watch::channel(false);
    /// runner.run(stopped).await.unwrap();
    /// # }
    /// ```
    pub async fn new(
        store: EventStore,
        client: Client,
        saga: G,
        config: SagaConfig,
    ) -> Result<Self, SagaError> {
        let js = store.jetstream().clone();
        let records = consumer::bucket(&js, BUCKET, store.config().replicas).await?;
        let timers = timers::ensure(&store).await?;
        consumer::ensure_dlq(&store).await?;
        let name = consumer_name(&saga);
        let checkpoint = Checkpoint::load(&store, &name).await?;
        let consumer =
            consumer::cursor(&store, &name, saga.aggregates(), 1, checkpoint.value()).await?;
        let checked_at_connect = consumer::connects(&store);
        check_stream(&checkpoint).await?;
        let fired = timers::consumer(&timers, &store, saga.name()).await?;
        let meter = crate::telemetry::metrics::Consumer::new(&name);
        Ok(SagaRunner {
            shared: Arc::new(Shared {
                consumer: name.clone(),
                store,
                client: client.with_timeout(config.command_timeout),
                saga,
                config,
                records,
                timers,
            }),
            consumer,
            fired,
            checkpoint,
            deliveries: Default::default(),
            meter,
            checked_at_connect,
        })
    }

    /// `saga_<name>`.
    pub fn consumer_name(&self) -> String {
        consumer_name(&self.shared.saga)
    }

    /// The last event sequence whose every earlier event is handled.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.value()
    }

    /// Runs until `stop` turns true, riding out server and node outages; ends early
    /// only when another instance took over.
    pub async fn run(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Result<(), SagaError> {
        consumer::run_until_stopped(&mut self, stop).await
    }

    /// Handles one batch of events, then the deadlines that fired; returns how many
    /// messages it handled.
    pub async fn step(&mut self) -> Result<usize, SagaError> {
        let events = self.step_events().await?;
        let fired = self.step_deadlines().await?;
        Ok(events + fired)
    }

    async fn step_events(&mut self) -> Result<usize, SagaError> {
        let shared = self.shared.clone();
        let mut fetched = self
            .consumer
            .fetch()
            .max_messages(shared.config.batch)
            .expires(shared.config.idle_wait)
            .messages()
            .await
            .map_err(consumer::js_err)?;
        let mut messages = Vec::new();
        while let Some(m) = fetched.next().await {
            messages.push(m.map_err(consumer::js_err)?);
        }
        if consumer::connects(&shared.store) != self.checked_at_connect {
            // Fetched across a reconnect: unhandled, unacked; checked first.
            return Err(SagaError::with_source(
                SagaErrorKind::Unavailable,
                consumer::Reconnected,
            ));
        }
        self.deliveries.check(&self.consumer_name(), &messages)?;
        self.meter.fetched(&messages);
        if messages.is_empty() {
            return Ok(0);
        }
        // Route: instance -> its messages, in stream order.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut events = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let (seq, event) = consumer::recorded_event(&shared.store, m);
            let routed = event.and_then(|event| match shared.saga.correlate(&event) {
                Ok(Some(key)) => match instances::check_instance_id(&key) {
                    Ok(()) => Ok((Some(key), event)),
                    Err(reason) => Err(reason),
                },
                Ok(None) => Ok((None, event)),
                Err(e) => Err(e.to_string()),
            });
            match routed {
                Ok((key, event)) => {
                    if let Some(key) = key {
                        let g = *index.entry(key.clone()).or_insert_with(|| {
                            groups.push((key, Vec::new()));
                            groups.len() - 1
                        });
                        groups[g].1.push(i);
                    }
                    events.push((seq, Some(event)));
                }
                Err(reason) => {
                    consumer::park(&shared.store, &self.consumer_name(), m, seq, &reason).await?;
                    events.push((seq, None));
                }
            }
        }
        let events = Arc::new(events);
        let outcomes: Vec<Result<(), (u64, String)>> = futures::stream::iter(groups)
            .map(|(key, indexes)| {
                let shared = shared.clone();
                let events = events.clone();
                let messages = &messages;
                async move {
                    for i in indexes {
                        let (seq, event) = &events[i];
                        let event = event.clone().expect("grouped events are readable");
                        let span = crate::telemetry::trace::event_span(&shared.consumer, &event)
                            .map_or_else(tracing::Span::none, |(span, _)| span);
                        let handled = shared
                            .handle(&key, Trigger::Event(Box::new(event)))
                            .instrument(span)
                            .await;
                        match handled {
                            Ok(()) => {}
                            Err(Failure::Poison(reason)) => {
                                let name = consumer_name(&shared.saga);
                                consumer::park(&shared.store, &name, &messages[i], *seq, &reason)
                                    .await
                                    .map_err(|e| (*seq, e.to_string()))?;
                            }
                            Err(Failure::Transient(reason)) => return Err((*seq, reason)),
                        }
                    }
                    Ok(())
                }
            })
            .buffer_unordered(shared.config.concurrency.max(1))
            .collect()
            .await;
        let failed = outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .min_by_key(|(seq, _)| *seq);
        // Up to the last message before the first failure (the events between
        // are not this saga's), or the whole batch.
        let handled_up_to = messages
            .iter()
            .map(consumer::stored_mark)
            .filter(|(seq, _)| failed.is_none_or(|(failed, _)| seq < failed))
            .max_by_key(|(seq, _)| *seq);
        if let Some(mark) = handled_up_to {
            self.checkpoint.advance(mark).await?;
        }
        if let Some((seq, reason)) = failed {
            return Err(SagaError::with_source(
                SagaErrorKind::Unavailable,
                format!("event {seq} not handled yet: {reason}"),
            ));
        }
        messages
            .last()
            .expect("not empty")
            .ack()
            .await
            .map_err(consumer::js_err)?;
        self.meter.applied(messages.len());
        Ok(messages.len())
    }

    async fn step_deadlines(&mut self) -> Result<usize, SagaError> {
        let shared = self.shared.clone();
        let mut fetched = self
            .fired
            .fetch()
            .max_messages(shared.config.batch)
            // No wait: the event fetch before this one already waited, and a fired
            // deadline is picked up at most `idle_wait` late.
            .messages()
            .await
            .map_err(consumer::js_err)?;
        let mut handled = 0;
        while let Some(m) = fetched.next().await {
            let m = m.map_err(consumer::js_err)?;
            let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
            let target = timers::parse_fired(&shared.store, shared.saga.name(), &m.subject)
                .map(|(instance, name)| (instance.to_string(), name.to_string()));
            if let Some((instance, name)) = target {
                match shared
                    .handle(&instance, Trigger::Deadline { name, seq })
                    .await
                {
                    Ok(()) | Err(Failure::Poison(_)) => {}
                    Err(Failure::Transient(reason)) => {
                        let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                        return Err(SagaError::with_source(
                            SagaErrorKind::Unavailable,
                            format!("deadline {} not handled yet: {reason}", m.subject),
                        ));
                    }
                }
            }
            m.ack().await.map_err(consumer::js_err)?;
            let _ = shared.timers.delete_message(seq).await;
            handled += 1;
        }
        Ok(handled)
    }
}

impl<G: Saga> consumer::Stepping for SagaRunner<G> {
    type Error = SagaError;

    async fn step(&mut self) -> Result<usize, SagaError> {
        SagaRunner::step(self).await
    }

    fn is_transient(error: &SagaError) -> bool {
        // Superseded: the checkpoint moved (a `dlq retry` rewound it, or another
        // instance handled events); go on from where it now stands.
        matches!(
            error.kind(),
            SagaErrorKind::Unavailable | SagaErrorKind::Superseded
        )
    }

    async fn restart(&mut self) -> Result<(), SagaError> {
        self.checkpoint.reload().await?;
        // The stream first: the cursor (recreated under the same name) would
        // deliver whatever the stream holds now.
        let connects = consumer::connects(&self.shared.store);
        check_stream(&self.checkpoint).await?;
        self.checked_at_connect = connects;
        self.consumer = consumer::cursor(
            &self.shared.store,
            &self.consumer_name(),
            self.shared.saga.aggregates(),
            1,
            self.checkpoint.value(),
        )
        .await?;
        self.deliveries = Default::default();
        Ok(())
    }

    fn consumer_name(&self) -> String {
        SagaRunner::consumer_name(self)
    }
}

impl<G: Saga> Shared<G> {
    async fn load(&self, instance: &str) -> Result<(Instance<G::State>, u64), Failure> {
        let key = instances::key(self.saga.name(), instance);
        match self.records.entry(&key).await.map_err(transient)? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let record = serde_json::from_slice(&entry.value)
                    .map_err(|e| Failure::Poison(format!("instance {key} unreadable: {e}")))?;
                Ok((record, entry.revision))
            }
            Some(entry) => Ok((
                Instance::new(self.saga.name(), instance, chrono::Utc::now()),
                entry.revision,
            )),
            None => Ok((
                Instance::new(self.saga.name(), instance, chrono::Utc::now()),
                0,
            )),
        }
    }

    async fn handle(&self, instance: &str, trigger: Trigger) -> Result<(), Failure> {
        for _ in 0..8 {
            let (mut record, revision) = self.load(instance).await?;
            let (input, causation) = match &trigger {
                Trigger::Event(e) if e.seq <= record.seq => return Ok(()),
                Trigger::Event(e) => (Input::Event(e), Some(e.event_id.to_string())),
                Trigger::Deadline { seq, .. } if *seq <= record.timer_seq => return Ok(()),
                // Cancelled after it fired, or moved: not this deadline any more.
                Trigger::Deadline { name, .. } if !record.deadlines.contains_key(name) => {
                    return Ok(())
                }
                Trigger::Deadline { name, .. } => (Input::Deadline { name }, None),
            };
            let reaction = self.saga.react(&record.state, input);
            if reaction.is_nothing(&record.state) {
                return Ok(());
            }
            // The saga's own state type must serialize: check before any command goes
            // out, so a state that cannot be stored parks the input instead of
            // acting on it.
            serde_json::to_vec(&reaction.state).map_err(|e| {
                Failure::Poison(format!(
                    "the {} saga's state does not serialize: {e}",
                    self.saga.name()
                ))
            })?;
            match &trigger {
                Trigger::Event(e) => {
                    record.seq = e.seq;
                    if record.correlation_id.is_none() {
                        record.correlation_id = e.metadata.correlation_id.clone();
                    }
                }
                Trigger::Deadline { name, seq } => {
                    record.timer_seq = *seq;
                    record.deadlines.remove(name);
                }
            }
            let mut entry = LogEntry {
                at: chrono::Utc::now(),
                input: input.describe(),
                sent: Vec::new(),
            };
            let mut queue = VecDeque::new();
            let mut set = Vec::new();
            let mut cancel = Vec::new();
            absorb(
                &self.saga,
                &mut record,
                reaction,
                &mut queue,
                &mut set,
                &mut cancel,
            );
            // The commands go on in the trace of the event that caused them.
            let trace = match &trigger {
                Trigger::Event(e) => {
                    TraceContext::of(&e.metadata).map(|t| t.onward(&tracing::Span::current()))
                }
                Trigger::Deadline { .. } => None,
            };
            let mut rounds = 0;
            while let Some(command) = queue.pop_front() {
                let command_id = command.command_id(self.saga.name(), instance);
                let reply = self
                    .send(
                        &record,
                        &command,
                        &command_id,
                        causation.clone(),
                        trace.as_ref(),
                    )
                    .await?;
                let mut sent = Sent {
                    step: command.step.clone(),
                    command: format!(
                        "cmd.{}.{} {}",
                        command.aggregate,
                        command.command,
                        command.body["id"].as_str().unwrap_or_default()
                    ),
                    command_id,
                    reply: String::new(),
                    seq: None,
                };
                match reply {
                    Ok(seq) => {
                        sent.reply = format!("accepted seq {seq}");
                        sent.seq = Some(seq);
                        entry.sent.push(sent);
                    }
                    Err((status, code, message)) => {
                        sent.reply = format!("refused {status} {code}: {message}");
                        entry.sent.push(sent);
                        rounds += 1;
                        if rounds > self.config.max_compensation_rounds {
                            tracing::error!(
                                instance,
                                "too many refusals in a row: stopping this input here"
                            );
                            break;
                        }
                        let refused = Input::Refused {
                            step: &command.step,
                            status,
                            code: &code,
                            message: &message,
                        };
                        let reaction = self.saga.react(&record.state, refused);
                        absorb(
                            &self.saga,
                            &mut record,
                            reaction,
                            &mut queue,
                            &mut set,
                            &mut cancel,
                        );
                    }
                }
            }
            for name in &cancel {
                timers::cancel(&self.timers, &self.store, self.saga.name(), instance, name)
                    .await
                    .map_err(transient)?;
            }
            for deadline in &set {
                timers::set(
                    &self.store,
                    self.saga.name(),
                    instance,
                    &deadline.name,
                    deadline.at,
                )
                .await
                .map_err(transient)?;
            }
            record.updated_at = entry.at;
            record.log.push(entry);
            if record.log.len() > LOG_LIMIT {
                let excess = record.log.len() - LOG_LIMIT;
                record.log.drain(..excess);
            }
            let key = instances::key(self.saga.name(), instance);
            let bytes = serde_json::to_vec(&record).map_err(|e| {
                Failure::Poison(format!(
                    "the {} saga's record does not serialize: {e}",
                    self.saga.name()
                ))
            })?;
            let written = if revision == 0 {
                self.records.create(&key, bytes.into()).await.is_ok()
            } else {
                self.records
                    .update(&key, bytes.into(), revision)
                    .await
                    .is_ok()
            };
            if written {
                if let Some(outcome) = &record.outcome {
                    tracing::info!(
                        saga = self.saga.name(),
                        instance,
                        outcome,
                        "saga instance state saved"
                    );
                }
                return Ok(());
            }
            // Someone else wrote it (or the write failed): start over from the stored record.
            tracing::debug!(instance, "saga record changed underneath: handling again");
        }
        Err(Failure::Transient(format!(
            "instance {instance}: its record kept changing"
        )))
    }

    /// Sends one command; `Ok(Err(..))` is a refusal the saga gets to see.
    async fn send(
        &self,
        record: &Instance<G::State>,
        command: &SagaCommand,
        command_id: &str,
        causation_id: Option<String>,
        trace: Option<&TraceContext>,
    ) -> Result<Result<u64, (u16, String, String)>, Failure> {
        let options = CommandOptions {
            command_id: Some(command_id.to_string()),
            correlation_id: record.correlation_id.clone(),
            causation_id,
            actor: Some(format!("saga:{}", self.saga.name())),
            traceparent: trace.map(|t| t.traceparent().to_string()),
            tracestate: trace.and_then(|t| t.tracestate().map(str::to_string)),
            ..Default::default()
        };
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for _ in 0..self.config.command_attempts.max(1) {
            match self
                .client
                .send(
                    &command.aggregate,
                    &command.command,
                    &command.body,
                    &options,
                )
                .await
            {
                Ok(ack) => return Ok(Ok(ack.seq)),
                Err(e) if e.kind().is_transient() => {
                    last = e.to_string();
                    tracing::warn!(step = command.step, error = %e, "command not through yet: retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => match e.into_kind() {
                    SendErrorKind::Rejected {
                        status,
                        code,
                        message,
                    } => return Ok(Err((status, code, message))),
                    other => return Err(Failure::Poison(other.to_string())),
                },
            }
        }
        Err(Failure::Transient(format!(
            "{} of {}: {last}",
            command.command, record.id
        )))
    }
}

fn absorb<G: Saga>(
    saga: &G,
    record: &mut Instance<G::State>,
    reaction: Reaction<G::State>,
    queue: &mut VecDeque<SagaCommand>,
    set: &mut Vec<super::Deadline>,
    cancel: &mut Vec<String>,
) {
    record.state = reaction.state;
    record.stage = saga.stage(&record.state);
    queue.extend(reaction.commands);
    for name in reaction.cancel {
        record.deadlines.remove(&name);
        set.retain(|d| d.name != name);
        cancel.push(name);
    }
    for deadline in reaction.deadlines {
        record.deadlines.insert(deadline.name.clone(), deadline.at);
        cancel.retain(|n| *n != deadline.name);
        set.push(deadline);
    }
    if let Some(outcome) = reaction.finished {
        record.outcome = Some(outcome);
    }
}

/// Refuses a checkpoint whose event is no longer in the stream where it was (a
/// stream that cannot be asked is [`SagaErrorKind::Unavailable`]: ask again).
async fn check_stream(checkpoint: &Checkpoint) -> Result<(), SagaError> {
    let checked = checkpoint
        .check_stream()
        .await
        .map_err(|e| SagaError::with_source(SagaErrorKind::Unavailable, e))?;
    match checked {
        None => Ok(()),
        Some(changed) => Err(SagaError::new(SagaErrorKind::StreamChanged(changed))),
    }
}

/// `saga_<name>`: the saga's consumer, its checkpoint key and its DLQ subject token.
fn consumer_name<G: Saga>(saga: &G) -> String {
    format!("saga_{}", saga.name())
}
