//! Runs one projection: durable consumer `proj_<name>` -> rows in `view_<name>`.
//!
//! Each step fetches a batch, applies it in memory (loading the rows it touches in
//! parallel bursts), and commits the changed rows (coalesced: one write per row per
//! batch) together with the checkpoint as one atomic batch into the view's bucket
//! (see [`storage`]): all or nothing, and refused whole if another
//! instance committed meanwhile. Then it acks the batch with one ack
//! (`AckPolicy::All`). Catch-up is bounded by batches, not by one KV round trip per
//! event. An event at or below the checkpoint is skipped, so redelivery changes
//! nothing.
//! An event that fails `max_deliver` times is parked in stream `DLQ`
//! (`dlq.proj_<name>`, with the error and its original sequence) and the runner
//! goes on or stops, by [`PoisonPolicy`].

use super::storage::{self, CommitError, MAX_COMMIT_BYTES, MAX_ROWS_PER_COMMIT};
use super::{ApplyError, Projection, View};
use crate::consumer::{self, JetStreamError};
use crate::store::envelope::RecordedEvent;
use crate::store::EventStore;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use crate::consumer::{CHECKPOINTS, DLQ};

/// What to do once an event has failed `max_deliver` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoisonPolicy {
    /// Park it in `DLQ` and go on with the next event.
    #[default]
    Park,
    /// Park it and stop the runner with [`RunnerErrorKind::Stopped`].
    Stop,
}

/// How a runner batches and retries.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Events fetched and applied per step.
    pub batch: usize,
    /// Deliveries of a failing event before it is parked.
    pub max_deliver: i64,
    /// After parking.
    pub poison: PoisonPolicy,
    /// How long a fetch waits for events when caught up.
    pub idle_wait: Duration,
    /// Row writes in flight at once.
    pub write_concurrency: usize,
    /// Which version of the view to build (see [`versions`](super::versions)).
    pub version: u32,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            batch: 1000,
            max_deliver: 3,
            poison: PoisonPolicy::Park,
            idle_wait: Duration::from_millis(500),
            write_concurrency: 256,
            version: 1,
        }
    }
}

/// Why a runner stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerErrorKind {
    /// A JetStream request (consumer, bucket, fetch, write, ack) failed; the cause
    /// says which. [`ProjectionRunner::resume`] goes on from the checkpoint.
    JetStream,
    /// An event was parked and the policy says stop.
    Stopped {
        /// Its stream sequence.
        seq: u64,
        /// Why it failed.
        reason: String,
    },
    /// Another runner committed meanwhile: this batch was refused whole, and the
    /// runner goes on from the checkpoint as it now stands.
    Superseded,
    /// A rebuilt version was asked to switch before it caught up.
    NotCaughtUp {
        /// The version being built.
        version: u32,
    },
    /// The event stream no longer holds the event the view's checkpoint names
    /// (recreated, restored to an earlier point, or cut short by a power loss):
    /// going on would skip or mix events, so the runner refuses; a rebuild
    /// (`jetsource project <name> --rebuild`) makes the view anew.
    StreamChanged(storage::StreamChanged),
}

impl fmt::Display for RunnerErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunnerErrorKind::JetStream => f.write_str("projection runner stopped"),
            RunnerErrorKind::Stopped { seq, reason } => {
                write!(f, "stopped on event {seq} (parked in DLQ): {reason}")
            }
            RunnerErrorKind::Superseded => f.write_str("another projection runner committed"),
            RunnerErrorKind::NotCaughtUp { version } => {
                write!(f, "version {version} has not caught up yet")
            }
            RunnerErrorKind::StreamChanged(changed) => {
                write!(f, "{changed}; the view must be rebuilt")
            }
        }
    }
}

/// Error of [`ProjectionRunner`]'s and [`Rebuild`](super::rebuild::Rebuild)'s operations.
pub type RunnerError = crate::error::Error<RunnerErrorKind>;

pub(crate) fn js_err(e: impl Into<crate::error::BoxError>) -> RunnerError {
    RunnerError::with_source(RunnerErrorKind::JetStream, e)
}

impl From<JetStreamError> for RunnerError {
    fn from(e: JetStreamError) -> Self {
        js_err(e)
    }
}

impl From<consumer::Stolen> for RunnerError {
    fn from(e: consumer::Stolen) -> Self {
        RunnerError::with_source(RunnerErrorKind::Superseded, e)
    }
}

impl From<CommitError> for RunnerError {
    fn from(e: CommitError) -> Self {
        let kind = match e {
            CommitError::Fenced(_) => RunnerErrorKind::Superseded,
            CommitError::Failed { .. } => RunnerErrorKind::JetStream,
        };
        RunnerError::with_source(kind, e)
    }
}

/// Where [`ProjectionRunner::apply`] cut a batch short.
enum Cut {
    /// The event at this index failed (retried, then parked).
    Failed(usize, String),
    /// The rows up to this index fill one commit; it and the rest come again.
    Full(usize),
}

/// One projection's runner.
pub struct ProjectionRunner<P: Projection> {
    store: EventStore,
    projection: Arc<P>,
    config: RunnerConfig,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    rows: kv::Store,
    /// Stream `DLQ`, where retried events wait (see [`apply_retries`](Self::apply_retries)).
    dlq: jetstream::stream::Stream,
    checkpoint: storage::Checkpoint,
    deliveries: consumer::Deliveries,
    meter: crate::telemetry::metrics::Consumer,
    /// Fetched messages not handled yet (the rest of a batch cut short), handled
    /// before anything new is fetched.
    carried: Vec<jetstream::Message>,
    /// Times in a row the first carried event failed.
    failures: u32,
    /// The last step found nothing: the next one first notes the stream's end.
    idle: bool,
    /// The connection's connect count when the stream was last checked against
    /// the checkpoint (see [`consumer::connects`]).
    checked_at_connect: u64,
}

impl<P: Projection> std::fmt::Debug for ProjectionRunner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("checkpoint", &self.checkpoint.value)
            .finish()
    }
}

/// Refuses a checkpoint whose event is no longer in the stream where it was (a
/// stream that cannot be asked is a transient error: ask again).
async fn check_stream(
    store: &EventStore,
    checkpoint: &storage::Checkpoint,
) -> Result<(), RunnerError> {
    match storage::check_stream(store, checkpoint)
        .await
        .map_err(js_err)?
    {
        None => Ok(()),
        Some(changed) => Err(RunnerErrorKind::StreamChanged(changed).into()),
    }
}

async fn cursor<P: Projection>(
    store: &EventStore,
    projection: &P,
    config: &RunnerConfig,
    checkpoint: u64,
) -> Result<jetstream::consumer::Consumer<pull::Config>, RunnerError> {
    let name = super::versions::consumer_name(projection.name(), config.version);
    Ok(consumer::cursor(
        store,
        &name,
        projection.aggregates(),
        config.max_deliver,
        checkpoint,
    )
    .await?)
}

impl<P: Projection> consumer::Stepping for ProjectionRunner<P> {
    type Error = RunnerError;

    async fn step(&mut self) -> Result<usize, RunnerError> {
        ProjectionRunner::step(self).await
    }

    fn is_transient(error: &RunnerError) -> bool {
        // Fenced off: nothing was written; go on from the checkpoint as it stands.
        matches!(
            error.kind(),
            RunnerErrorKind::JetStream | RunnerErrorKind::Superseded
        )
    }

    async fn restart(&mut self) -> Result<(), RunnerError> {
        self.checkpoint = storage::read_checkpoint(&self.rows).await?;
        // The stream first: the cursor (recreated under the same name) would
        // deliver whatever the stream holds now.
        let connects = consumer::connects(&self.store);
        check_stream(&self.store, &self.checkpoint).await?;
        self.checked_at_connect = connects;
        self.consumer = cursor(
            &self.store,
            self.projection.as_ref(),
            &self.config,
            self.checkpoint.value,
        )
        .await?;
        self.deliveries = Default::default();
        self.carried.clear();
        Ok(())
    }

    fn consumer_name(&self) -> String {
        ProjectionRunner::consumer_name(self)
    }
}

impl<P: Projection> ProjectionRunner<P> {
    /// Ensures the consumer, the view bucket and `DLQ`, and reads the checkpoint.
    pub async fn new(
        store: EventStore,
        projection: P,
        config: RunnerConfig,
    ) -> Result<Self, RunnerError> {
        let js = store.jetstream().clone();
        let name = projection.name().to_string();
        let replicas = store.config().replicas;
        let rows = storage::open(
            &js,
            &super::versions::bucket_name(&name, config.version),
            replicas,
        )
        .await?;
        let dlq = consumer::ensure_dlq(&store).await?;
        let checkpoint = storage::read_checkpoint(&rows).await?;
        // The cursor first: `status` lists consumers, and shows why this one stands.
        let consumer = cursor(&store, &projection, &config, checkpoint.value).await?;
        let checked_at_connect = consumer::connects(&store);
        check_stream(&store, &checkpoint).await?;
        let meter = crate::telemetry::metrics::Consumer::new(&super::versions::consumer_name(
            &name,
            config.version,
        ));
        Ok(ProjectionRunner {
            store,
            projection: Arc::new(projection),
            config,
            consumer,
            rows,
            dlq,
            checkpoint,
            deliveries: Default::default(),
            meter,
            carried: Vec::new(),
            failures: 0,
            idle: true,
            checked_at_connect,
        })
    }

    /// `proj_<name>` (or `proj_<name>_v<version>`).
    pub fn consumer_name(&self) -> String {
        super::versions::consumer_name(self.projection.name(), self.config.version)
    }

    /// Starts the consumer afresh right after the checkpoint as stored (what
    /// [`run`](Self::run) does after a transient error or a fenced commit).
    pub async fn resume(&mut self) -> Result<(), RunnerError> {
        consumer::Stepping::restart(self).await
    }

    /// The last stream sequence fully applied.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.value
    }

    /// Runs until `stop` turns true, riding out server outages and commits fenced
    /// off by another instance; ends early only when the poison policy says stop.
    pub async fn run(
        mut self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), RunnerError> {
        consumer::run_until_stopped(&mut self, stop).await
    }

    /// Fetches, applies and commits one batch; returns how many messages it handled.
    ///
    /// When idle, it first reads the stream's last sequence; if the fetch then
    /// brings nothing, every event of this projection up to that sequence has been
    /// applied, and the checkpoint moves there. So `Jetsource-Min-Seq` works with
    /// the sequence of any event, even one this projection does not read.
    pub async fn step(&mut self) -> Result<usize, RunnerError> {
        let carried = !self.carried.is_empty();
        let stream_end = if self.idle && !carried {
            Some(self.store.stream_end().await.map_err(js_err)?)
        } else {
            None
        };
        let mut messages = match carried {
            true => std::mem::take(&mut self.carried),
            false => self.fetch().await?,
        };
        if consumer::connects(&self.store) != self.checked_at_connect {
            // Fetched across a reconnect: unapplied, unacked; checked first.
            return Err(js_err(consumer::Reconnected));
        }
        self.idle = messages.is_empty();
        if messages.is_empty() {
            if let Some(end) = stream_end {
                let name = self.consumer_name();
                if self
                    .deliveries
                    .caught_up(&name, &mut self.consumer)
                    .await??
                {
                    self.commit(View::default(), Some(end)).await?;
                }
                self.apply_retries().await?;
            }
            return Ok(0);
        }
        let events: Vec<(u64, Result<RecordedEvent, String>)> = messages
            .iter()
            .map(|m| consumer::recorded_event(&self.store, m))
            .collect();
        let (view, cut) = self.apply(&events, self.checkpoint.value).await?;
        let applied_up_to = match &cut {
            Some(Cut::Failed(i, _) | Cut::Full(i)) => *i,
            None => events.len(),
        };
        let last_good = messages[..applied_up_to]
            .iter()
            .map(consumer::stored_mark)
            .max_by_key(|(seq, _)| *seq);
        self.commit(view, last_good).await?;
        self.meter.applied(applied_up_to);
        let handled = messages.len();
        if let Some(i) = applied_up_to.checked_sub(1) {
            messages[i].ack().await.map_err(js_err)?;
        }
        match cut {
            None => self.failures = 0,
            // The rest did not fit one commit: next step goes on with it, before
            // fetching more (naking would spend their deliveries).
            Some(Cut::Full(i)) => {
                self.failures = 0;
                self.carried = messages.split_off(i);
            }
            Some(Cut::Failed(i, reason)) => {
                let (seq, _) = &events[i];
                self.failures += 1;
                if self.failures >= self.config.max_deliver.max(1) as u32 {
                    self.failures = 0;
                    self.park(&messages[i], *seq, &reason).await?;
                    let parked = consumer::stored_mark(&messages[i]);
                    self.commit(View::default(), Some(parked)).await?;
                    messages[i].ack().await.map_err(js_err)?;
                    self.carried = messages.split_off(i + 1);
                    if self.config.poison == PoisonPolicy::Stop {
                        return Err(RunnerErrorKind::Stopped { seq: *seq, reason }.into());
                    }
                } else {
                    // It comes again first, after a pause that grows.
                    let pause = Duration::from_millis(50 * u64::from(self.failures));
                    tokio::time::sleep(pause).await;
                    self.carried = messages.split_off(i);
                }
            }
        }
        Ok(handled)
    }

    /// Fetches the next batch (waiting up to `idle_wait` for one), checking that
    /// nobody else took deliveries from the consumer.
    async fn fetch(&mut self) -> Result<Vec<jetstream::Message>, RunnerError> {
        let mut fetched = self
            .consumer
            .fetch()
            .max_messages(self.config.batch)
            .expires(self.config.idle_wait)
            .messages()
            .await
            .map_err(js_err)?;
        let mut messages = Vec::new();
        while let Some(m) = fetched.next().await {
            messages.push(m.map_err(js_err)?);
        }
        self.deliveries.check(&self.consumer_name(), &messages)?;
        self.meter.fetched(&messages);
        Ok(messages)
    }

    /// Applies the batch in memory. A pass that needs rows not loaded yet records
    /// them, they are loaded together, and the pass runs again. Returns the view
    /// and where the batch was cut short, if it was: at an event that failed, or
    /// at the first event whose rows no longer fit one commit. Events at or below
    /// `skip_up_to` are applied already.
    async fn apply(
        &self,
        events: &[(u64, Result<RecordedEvent, String>)],
        skip_up_to: u64,
    ) -> Result<(View, Option<Cut>), RunnerError> {
        // Room for the KV write's own headers.
        let max_row_bytes = self.store.max_payload().saturating_sub(1024);
        let consumer = self.consumer_name();
        let mut loaded = HashMap::new();
        loop {
            let mut view = View {
                loaded: std::mem::take(&mut loaded),
                ..View::default()
            };
            let mut missing = HashSet::new();
            let mut cut = None;
            let (mut applied, mut bytes) = (0, 0);
            for (i, (seq, event)) in events.iter().enumerate() {
                if *seq <= skip_up_to {
                    continue;
                }
                view.begin(*seq);
                let result = match event {
                    Ok(event) => {
                        let result = self.projection.apply(&mut view, event);
                        if !matches!(result, Err(ApplyError::Missing(_))) {
                            trace_applied(&consumer, event, &result);
                        }
                        result
                    }
                    Err(reason) => Err(ApplyError::Failed(format!("unreadable event: {reason}"))),
                };
                let written = result.and_then(|()| {
                    view.written_bytes(max_row_bytes)
                        .map_err(ApplyError::Failed)
                });
                match written {
                    Ok(written) => {
                        bytes += written;
                        let full =
                            view.changed.len() > MAX_ROWS_PER_COMMIT || bytes > MAX_COMMIT_BYTES;
                        if full && applied == 0 {
                            view.rollback();
                            let reason = format!(
                                "writes more than one commit holds ({MAX_ROWS_PER_COMMIT} rows, {MAX_COMMIT_BYTES} bytes)"
                            );
                            cut = Some(Cut::Failed(i, reason));
                            break;
                        }
                        if full {
                            view.rollback();
                            cut = Some(Cut::Full(i));
                            break;
                        }
                        applied += 1;
                    }
                    Err(ApplyError::Missing(key)) => {
                        view.rollback();
                        missing.insert(key);
                    }
                    Err(ApplyError::Failed(reason)) => {
                        view.rollback();
                        cut = Some(Cut::Failed(i, reason));
                        break;
                    }
                }
            }
            if missing.is_empty() {
                return Ok((view, cut));
            }
            loaded = view.loaded;
            let fetched = futures::stream::iter(missing)
                .map(|key| async move {
                    let row = self.rows.get(&key).await.map_err(js_err)?;
                    let row = row.and_then(|bytes| storage::decode_row(&bytes));
                    Ok::<_, RunnerError>((key, row))
                })
                .buffer_unordered(self.config.write_concurrency)
                .collect::<Vec<_>>()
                .await;
            for r in fetched {
                let (key, row) = r?;
                loaded.insert(key, row);
            }
        }
    }

    /// Commits the changed rows and the checkpoint `to` (a sequence and when its
    /// event was stored) as one atomic batch, fenced on the checkpoint (see
    /// [`storage`]). Nothing to write, nothing sent.
    async fn commit(
        &mut self,
        view: View,
        to: Option<consumer::StoredMark>,
    ) -> Result<(), RunnerError> {
        let current = (self.checkpoint.value, self.checkpoint.stored_at);
        let Some(to) = to.filter(|to| to.0 > current.0 || !view.changed.is_empty()) else {
            return Ok(());
        };
        let (seq, stored_at) = if to.0 > current.0 { to } else { current };
        storage::commit(
            &self.store,
            &self.rows,
            view.changed,
            &mut self.checkpoint,
            seq,
            stored_at,
        )
        .await?;
        Ok(())
    }

    /// Applies events handed back by `jetsource dlq retry` (see
    /// [`dlq`](super::dlq)), a few per idle step: each onto the view as it stands
    /// (the checkpoint stays), then drops it from `DLQ`, or parks it again with its
    /// new error. Applied twice after a crash, it changes nothing the second time.
    async fn apply_retries(&mut self) -> Result<(), RunnerError> {
        let consumer = self.consumer_name();
        let subject = super::dlq::retry_subject(&self.store, &consumer);
        for _ in 0..16 {
            let Ok(raw) = self.dlq.get_first_raw_message_by_subject(&subject, 1).await else {
                return Ok(());
            };
            let parked = super::dlq::Parked::from_message(raw.sequence, raw);
            let seq = parked.seq;
            let event = self
                .store
                .subjects()
                .parse_event_subject(&parked.subject)
                .ok_or_else(|| format!("{:?} is not an event subject", parked.subject))
                .and_then(|(aggregate, id)| {
                    let payload = parked.payload.clone();
                    RecordedEvent::from_parts(
                        seq,
                        &parked.subject,
                        aggregate,
                        id,
                        &parked.headers,
                        payload,
                        None,
                    )
                    .map_err(|e| e.to_string())
                });
            let (view, cut) = self.apply(&[(seq, event)], 0).await?;
            if let Some(Cut::Failed(_, reason)) = cut {
                consumer::park_parts(
                    &self.store,
                    &consumer,
                    &parked.headers,
                    &parked.subject,
                    &parked.payload,
                    seq,
                    &reason,
                )
                .await?;
            } else {
                let current = (self.checkpoint.value, self.checkpoint.stored_at);
                self.commit(view, Some(current)).await?;
                tracing::info!(consumer, seq, "retried event applied");
            }
            let dlq_seq = parked.dlq_seq;
            self.dlq.delete_message(dlq_seq).await.map_err(js_err)?;
        }
        Ok(())
    }

    async fn park(
        &self,
        m: &jetstream::Message,
        seq: u64,
        reason: &str,
    ) -> Result<(), RunnerError> {
        Ok(consumer::park(&self.store, &self.consumer_name(), m, seq, reason).await?)
    }
}

/// Marks in the event's trace (if it has one) that `consumer` applied it: the
/// pass that did not stop for rows to load, once per event and batch.
fn trace_applied(consumer: &str, event: &RecordedEvent, result: &Result<(), ApplyError>) {
    if let Some((span, _)) = crate::telemetry::trace::event_span(consumer, event) {
        span.in_scope(|| match result {
            Ok(()) => tracing::debug!("applied"),
            Err(e) => tracing::warn!(error = %e, "not applied"),
        });
    }
}
