//! Runs one projection: durable consumer `proj_<name>` -> rows in `view_<name>`.
//!
//! Each step fetches a batch, applies it in memory (loading the rows it touches in
//! parallel bursts), writes the changed rows (coalesced: one write per row per
//! batch) and then the checkpoint, and acks the batch with one ack (`AckPolicy::All`).
//! Catch-up is bounded by batches, not by one KV round trip per event. An event at
//! or below the checkpoint is skipped, and a row written by an event is never
//! rewritten by that event or an older one, so redelivery changes nothing.
//! An event that fails `max_deliver` times is parked in stream `DLQ`
//! (`dlq.proj_<name>`, with the error and its original sequence) and the runner
//! goes on or stops, by [`PoisonPolicy`].

use super::{ApplyError, Projection, Row, View};
use crate::consumer::{self, Checkpoint, JetStreamError, Superseded};
use crate::store::envelope::RecordedEvent;
use crate::store::EventStore;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::{self, kv, AckKind};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub use crate::consumer::{CHECKPOINTS, DLQ};

/// What to do once an event has failed `max_deliver` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoisonPolicy {
    /// Park it in `DLQ` and go on with the next event.
    #[default]
    Park,
    /// Park it and stop the runner with [`RunnerError::Stopped`].
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
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A JetStream request (consumer, bucket, fetch, write, ack) failed.
    #[error("{0}")]
    JetStream(String),
    /// An event was parked and the policy says stop.
    #[error("stopped on event {seq} (parked in DLQ): {reason}")]
    Stopped {
        /// Its stream sequence.
        seq: u64,
        /// Why it failed.
        reason: String,
    },
    /// Another runner moved the checkpoint: this one must not write.
    #[error("checkpoint of {0} moved under this runner: another instance is active")]
    Superseded(String),
}

fn js_err(e: impl std::fmt::Display) -> RunnerError {
    RunnerError::JetStream(e.to_string())
}

impl From<JetStreamError> for RunnerError {
    fn from(e: JetStreamError) -> Self {
        RunnerError::JetStream(e.0)
    }
}

impl From<Superseded> for RunnerError {
    fn from(e: Superseded) -> Self {
        RunnerError::Superseded(e.0)
    }
}

/// One projection's runner.
pub struct ProjectionRunner<P: Projection> {
    store: EventStore,
    projection: Arc<P>,
    config: RunnerConfig,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    rows: kv::Store,
    checkpoint: Checkpoint,
    /// The last step found nothing: the next one first notes the stream's end.
    idle: bool,
}

impl<P: Projection> std::fmt::Debug for ProjectionRunner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("checkpoint", &self.checkpoint.value())
            .finish()
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
        matches!(error, RunnerError::JetStream(_))
    }

    async fn restart(&mut self) -> Result<(), RunnerError> {
        let checkpoint = self.checkpoint.value();
        self.consumer = cursor(
            &self.store,
            self.projection.as_ref(),
            &self.config,
            checkpoint,
        )
        .await?;
        Ok(())
    }

    fn consumer_name(&self) -> String {
        ProjectionRunner::consumer_name(self)
    }
}

impl<P: Projection> ProjectionRunner<P> {
    /// Ensures the consumer, the view bucket, `checkpoints` and `DLQ`, and reads the checkpoint.
    pub async fn new(
        store: EventStore,
        projection: P,
        config: RunnerConfig,
    ) -> Result<Self, RunnerError> {
        let js = store.jetstream().clone();
        let name = projection.name().to_string();
        let replicas = store.config().replicas;
        let rows = consumer::bucket(
            &js,
            &super::versions::bucket_name(&name, config.version),
            replicas,
        )
        .await?;
        consumer::ensure_dlq(&store).await?;
        let consumer_name = super::versions::consumer_name(&name, config.version);
        let checkpoint = Checkpoint::load(&store, &consumer_name).await?;
        let consumer = cursor(&store, &projection, &config, checkpoint.value()).await?;
        Ok(ProjectionRunner {
            store,
            projection: Arc::new(projection),
            config,
            consumer,
            rows,
            checkpoint,
            idle: true,
        })
    }

    /// `proj_<name>` (or `proj_<name>_v<version>`).
    pub fn consumer_name(&self) -> String {
        super::versions::consumer_name(self.projection.name(), self.config.version)
    }

    /// The last stream sequence fully applied.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.value()
    }

    /// Runs until `stop` turns true, riding out server outages; ends early only when
    /// another instance took over or the poison policy says stop.
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
        let stream_end = if self.idle {
            Some(self.store.last_seq().await.map_err(js_err)?)
        } else {
            None
        };
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
        self.idle = messages.is_empty();
        if messages.is_empty() {
            if let Some(end) = stream_end {
                self.commit(View::default(), Some(end)).await?;
            }
            return Ok(0);
        }
        let events: Vec<(u64, Result<RecordedEvent, String>)> = messages
            .iter()
            .map(|m| consumer::recorded_event(&self.store, m))
            .collect();
        let (view, stopped_at) = self.apply(&events).await?;
        let applied_up_to = match stopped_at {
            Some((i, _)) => i,
            None => events.len(),
        };
        let last_good = events[..applied_up_to].iter().map(|(seq, _)| *seq).max();
        self.commit(view, last_good).await?;
        if let Some(i) = applied_up_to.checked_sub(1) {
            messages[i].ack().await.map_err(js_err)?;
        }
        if let Some((i, reason)) = stopped_at {
            let (seq, _) = &events[i];
            let delivered = messages[i].info().map(|info| info.delivered).unwrap_or(1);
            if delivered >= self.config.max_deliver {
                self.park(&messages[i], *seq, &reason).await?;
                self.commit(View::default(), Some(*seq)).await?;
                messages[i].ack().await.map_err(js_err)?;
                if self.config.poison == PoisonPolicy::Stop {
                    return Err(RunnerError::Stopped { seq: *seq, reason });
                }
            } else {
                // Back off here rather than with a delayed nak: the failed event must
                // come back before the ones after it, or one ack (AckPolicy::All)
                // would pass over it.
                messages[i]
                    .ack_with(AckKind::Nak(None))
                    .await
                    .map_err(js_err)?;
                tokio::time::sleep(Duration::from_millis(50 * delivered.max(1) as u64)).await;
            }
            for m in &messages[i + 1..] {
                m.ack_with(AckKind::Nak(None)).await.map_err(js_err)?;
            }
        }
        Ok(messages.len())
    }

    /// Applies the batch in memory. A pass that needs rows not loaded yet records
    /// them, they are loaded together, and the pass runs again. Returns the view
    /// and, if an event failed, its index and error.
    async fn apply(
        &self,
        events: &[(u64, Result<RecordedEvent, String>)],
    ) -> Result<(View, Option<(usize, String)>), RunnerError> {
        // Room for the KV write's own headers.
        let max_row_bytes = self.store.max_payload().saturating_sub(1024);
        let mut loaded = HashMap::new();
        loop {
            let mut view = View {
                loaded: std::mem::take(&mut loaded),
                ..View::default()
            };
            let mut missing = HashSet::new();
            let mut failed = None;
            for (i, (seq, event)) in events.iter().enumerate() {
                if *seq <= self.checkpoint.value() {
                    continue;
                }
                view.begin(*seq);
                let result = match event {
                    Ok(event) => self.projection.apply(&mut view, event),
                    Err(reason) => Err(ApplyError::Failed(format!("unreadable event: {reason}"))),
                };
                let result = result.and_then(|()| match view.unstorable(max_row_bytes) {
                    Some(reason) => Err(ApplyError::Failed(reason)),
                    None => Ok(()),
                });
                match result {
                    Ok(()) => {}
                    Err(ApplyError::Missing(key)) => {
                        view.rollback();
                        missing.insert(key);
                    }
                    Err(ApplyError::Failed(reason)) => {
                        view.rollback();
                        failed = Some((i, reason));
                        break;
                    }
                }
            }
            if missing.is_empty() {
                return Ok((view, failed));
            }
            loaded = view.loaded;
            let fetched = futures::stream::iter(missing)
                .map(|key| async move {
                    let row = self.rows.get(&key).await.map_err(js_err)?;
                    let row = row.and_then(|bytes| serde_json::from_slice::<Row>(&bytes).ok());
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

    /// Writes the changed rows, then the checkpoint (compare-and-set, so a second
    /// runner of the same projection is caught instead of interleaving).
    async fn commit(&mut self, view: View, checkpoint: Option<u64>) -> Result<(), RunnerError> {
        let rows = self.rows.clone();
        let writes = futures::stream::iter(view.changed)
            .map(|(key, row)| {
                let rows = rows.clone();
                async move {
                    let bytes = serde_json::to_vec(&row).expect("a row serializes");
                    rows.put(key, bytes.into()).await.map_err(js_err)
                }
            })
            .buffer_unordered(self.config.write_concurrency)
            .collect::<Vec<_>>()
            .await;
        writes.into_iter().collect::<Result<Vec<_>, _>>()?;
        if let Some(checkpoint) = checkpoint {
            self.checkpoint.advance(checkpoint).await?;
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
