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
use crate::store::envelope::RecordedEvent;
use crate::store::EventStore;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, kv, AckKind};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Bucket holding every consumer's checkpoint.
pub const CHECKPOINTS: &str = "checkpoints";
/// Stream holding parked events.
pub const DLQ: &str = "DLQ";

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

/// One projection's runner.
pub struct ProjectionRunner<P: Projection> {
    store: EventStore,
    projection: Arc<P>,
    config: RunnerConfig,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    rows: kv::Store,
    checkpoints: kv::Store,
    checkpoint: u64,
    revision: u64,
    /// The last step found nothing: the next one first notes the stream's end.
    idle: bool,
}

impl<P: Projection> std::fmt::Debug for ProjectionRunner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("checkpoint", &self.checkpoint)
            .finish()
    }
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<kv::Store, RunnerError> {
    crate::store::buckets::ensure(js, crate::store::buckets::plain(name, replicas))
        .await
        .map_err(js_err)
}

/// The consumer, started afresh right after `checkpoint`. The checkpoint is the
/// truth and the consumer only a cursor: a consumer left by a killed instance, or
/// by a step that failed halfway, would hold its unacked batch back until
/// `ack_wait` while the runner moved past it.
async fn cursor<P: Projection>(
    store: &EventStore,
    projection: &P,
    config: &RunnerConfig,
    checkpoint: u64,
) -> Result<jetstream::consumer::Consumer<pull::Config>, RunnerError> {
    let name = super::versions::consumer_name(projection.name(), config.version);
    let filters = projection
        .aggregates()
        .iter()
        .map(|a| store.subjects().aggregate_type(a))
        .collect();
    let stream = store
        .jetstream()
        .get_stream(&store.config().stream)
        .await
        .map_err(js_err)?;
    let _ = stream.delete_consumer(&name).await;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name),
            filter_subjects: filters,
            ack_policy: AckPolicy::All,
            deliver_policy: match checkpoint {
                0 => DeliverPolicy::All,
                c => DeliverPolicy::ByStartSequence {
                    start_sequence: c + 1,
                },
            },
            max_deliver: config.max_deliver.max(1) + 1,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(js_err)
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
        let rows = bucket(
            &js,
            &super::versions::bucket_name(&name, config.version),
            replicas,
        )
        .await?;
        let checkpoints = bucket(&js, CHECKPOINTS, replicas).await?;
        let prefix = store.subjects().prefix().to_string();
        js.get_or_create_stream(jetstream::stream::Config {
            name: DLQ.into(),
            subjects: vec![format!("{prefix}dlq.>")],
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(js_err)?;
        let consumer_name = super::versions::consumer_name(&name, config.version);
        let (checkpoint, revision) =
            match checkpoints.entry(&consumer_name).await.map_err(js_err)? {
                Some(entry) => (
                    String::from_utf8_lossy(&entry.value).parse().unwrap_or(0),
                    entry.revision,
                ),
                None => (0, 0),
            };
        let consumer = cursor(&store, &projection, &config, checkpoint).await?;
        Ok(ProjectionRunner {
            store,
            projection: Arc::new(projection),
            config,
            consumer,
            rows,
            checkpoints,
            checkpoint,
            revision,
            idle: true,
        })
    }

    /// `proj_<name>` (or `proj_<name>_v<version>`).
    pub fn consumer_name(&self) -> String {
        super::versions::consumer_name(self.projection.name(), self.config.version)
    }

    /// The last stream sequence fully applied.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// Runs until `stop` turns true, riding out server outages; ends early only when
    /// another instance took over or the poison policy says stop.
    pub async fn run(
        mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), RunnerError> {
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let step = tokio::select! {
                step = self.step() => step,
                _ = stop.changed() => return Ok(()),
            };
            match step {
                Ok(_) => {}
                // The server is away (restarting, failing over): wait and go on;
                // nothing was committed past the checkpoint.
                Err(RunnerError::JetStream(e)) => {
                    tracing::warn!(consumer = %self.consumer_name(), error = %e, "waiting for the server");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                    match cursor(
                        &self.store,
                        self.projection.as_ref(),
                        &self.config,
                        self.checkpoint,
                    )
                    .await
                    {
                        Ok(consumer) => self.consumer = consumer,
                        Err(e) => tracing::warn!(error = %e, "consumer not restarted yet"),
                    }
                }
                Err(e) => return Err(e),
            }
        }
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
        let events: Vec<(u64, Result<RecordedEvent, String>)> =
            messages.iter().map(|m| self.parse(m)).collect();
        let (view, stopped_at) = self.apply(&events).await?;
        let applied_up_to = match stopped_at {
            Some((i, _)) => i,
            None => events.len(),
        };
        let last_good = events[..applied_up_to].iter().map(|(seq, _)| *seq).max();
        self.commit(view, last_good.map(|s| s.max(self.checkpoint)))
            .await?;
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

    fn parse(&self, m: &jetstream::Message) -> (u64, Result<RecordedEvent, String>) {
        let info = match m.info() {
            Ok(info) => info,
            Err(e) => return (0, Err(format!("not a JetStream message: {e}"))),
        };
        let seq = info.stream_sequence;
        let published = info.published;
        let stored_at =
            chrono::DateTime::from_timestamp(published.unix_timestamp(), published.nanosecond());
        let event = (|| {
            let (aggregate, id) = self
                .store
                .subjects()
                .parse_event_subject(&m.subject)
                .ok_or_else(|| format!("{} is not an event subject", m.subject))?;
            let headers = m.headers.as_ref().ok_or("no headers")?;
            RecordedEvent::from_parts(
                seq,
                &m.subject,
                aggregate,
                id,
                headers,
                m.payload.clone(),
                stored_at,
            )
            .map_err(|e| e.to_string())
        })();
        (seq, event)
    }

    /// Applies the batch in memory. A pass that needs rows not loaded yet records
    /// them, they are loaded together, and the pass runs again. Returns the view
    /// and, if an event failed, its index and error.
    async fn apply(
        &self,
        events: &[(u64, Result<RecordedEvent, String>)],
    ) -> Result<(View, Option<(usize, String)>), RunnerError> {
        let mut loaded = HashMap::new();
        loop {
            let mut view = View {
                loaded: std::mem::take(&mut loaded),
                ..View::default()
            };
            let mut missing = HashSet::new();
            let mut failed = None;
            for (i, (seq, event)) in events.iter().enumerate() {
                if *seq <= self.checkpoint {
                    continue;
                }
                view.begin(*seq);
                let result = match event {
                    Ok(event) => self.projection.apply(&mut view, event),
                    Err(reason) => Err(ApplyError::Failed(format!("unreadable event: {reason}"))),
                };
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
        let Some(checkpoint) = checkpoint.filter(|c| *c > self.checkpoint) else {
            return Ok(());
        };
        let name = self.consumer_name();
        let value = checkpoint.to_string().into_bytes().into();
        let revision = if self.revision == 0 {
            self.checkpoints
                .create(&name, value)
                .await
                .map_err(|_| RunnerError::Superseded(name.clone()))?
        } else {
            self.checkpoints
                .update(&name, value, self.revision)
                .await
                .map_err(|_| RunnerError::Superseded(name.clone()))?
        };
        self.revision = revision;
        self.checkpoint = checkpoint;
        Ok(())
    }

    async fn park(
        &self,
        m: &jetstream::Message,
        seq: u64,
        reason: &str,
    ) -> Result<(), RunnerError> {
        // The parked copy keeps the event's own headers but none of the NATS control
        // headers (a Nats-Msg-Id would make the server drop it as a duplicate).
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in m.headers.iter().flat_map(|h| h.iter()) {
            let name: &str = name.as_ref();
            if !name.starts_with("Nats-") {
                for v in values {
                    headers.append(name, v.as_str());
                }
            }
        }
        headers.insert("Jetsource-Dlq-Consumer", self.consumer_name().as_str());
        headers.insert("Jetsource-Dlq-Seq", seq.to_string().as_str());
        headers.insert("Jetsource-Dlq-Subject", m.subject.as_str());
        headers.insert(
            "Jetsource-Dlq-Error",
            reason.replace(['\r', '\n'], " ").as_str(),
        );
        let subject = format!(
            "{}dlq.{}",
            self.store.subjects().prefix(),
            self.consumer_name()
        );
        self.store
            .jetstream()
            .publish_with_headers(subject, headers, m.payload.clone())
            .await
            .map_err(js_err)?
            .await
            .map_err(js_err)?;
        tracing::warn!(
            projection = self.projection.name(),
            seq,
            reason,
            "event parked in DLQ"
        );
        Ok(())
    }
}
