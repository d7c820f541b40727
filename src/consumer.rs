//! What projections and sagas share about reading `EVENTS` with a durable consumer:
//! a saga's checkpoint in KV `checkpoints` moved only by compare-and-set (a
//! projection's lives beside its rows, see `projection::storage`), a consumer that
//! is merely a cursor started right after it, events read off messages, and
//! poison events parked in stream `DLQ`.

use crate::store::envelope::RecordedEvent;
use crate::store::EventStore;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, kv};
use std::time::Duration;

/// Bucket holding every consumer's checkpoint.
pub const CHECKPOINTS: &str = "checkpoints";
/// Stream holding parked events.
pub const DLQ: &str = "DLQ";

/// Why a consumer's (a projection's or a saga's) request to JetStream failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JetStreamErrorKind {
    /// The server refused the request or did not answer in time; the cause says
    /// which request. Retrying later can fix it.
    Request,
    /// A bucket or stream the consumer relies on is missing or unfit.
    Unfit(String),
    /// A stored record could not be read.
    Unreadable(String),
}

impl std::fmt::Display for JetStreamErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JetStreamErrorKind::Request => f.write_str("JetStream request failed"),
            JetStreamErrorKind::Unfit(what) => write!(f, "{what}"),
            JetStreamErrorKind::Unreadable(what) => write!(f, "unreadable {what}"),
        }
    }
}

/// A JetStream request of a consumer failed (see [`JetStreamErrorKind`]).
pub type JetStreamError = crate::error::Error<JetStreamErrorKind>;

pub(crate) fn js_err(e: impl Into<crate::error::BoxError>) -> JetStreamError {
    JetStreamError::with_source(JetStreamErrorKind::Request, e)
}

/// The bucket `name`, created if missing.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<kv::Store, JetStreamError> {
    crate::store::buckets::ensure(js, crate::store::buckets::plain(name, replicas))
        .await
        .map_err(js_err)
}

/// Ensures stream `DLQ` (`dlq.>`).
pub(crate) async fn ensure_dlq(
    store: &EventStore,
) -> Result<jetstream::stream::Stream, JetStreamError> {
    let prefix = store.subjects().prefix();
    store
        .jetstream()
        .get_or_create_stream(jetstream::stream::Config {
            name: DLQ.into(),
            subjects: vec![format!("{prefix}dlq.>")],
            storage: jetstream::stream::StorageType::File,
            num_replicas: store.config().replicas,
            ..Default::default()
        })
        .await
        .map_err(js_err)
}

/// A consumer's checkpoint: the last stream sequence fully handled, and when
/// its event was stored (see [`storage::check_stream`](crate::projection::storage)).
#[derive(Debug)]
pub(crate) struct Checkpoint {
    store: EventStore,
    bucket: kv::Store,
    key: String,
    mark: crate::projection::storage::Checkpoint,
}

/// Another instance moved the checkpoint: this one must stop writing.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint of {0} moved under this runner (a `dlq retry`, or another instance)")]
pub(crate) struct Superseded(pub(crate) String);

impl Checkpoint {
    pub(crate) async fn load(store: &EventStore, key: &str) -> Result<Checkpoint, JetStreamError> {
        let bucket = bucket(store.jetstream(), CHECKPOINTS, store.config().replicas).await?;
        let mut checkpoint = Checkpoint {
            store: store.clone(),
            bucket,
            key: key.to_string(),
            mark: Default::default(),
        };
        checkpoint.reload().await?;
        Ok(checkpoint)
    }

    pub(crate) fn value(&self) -> u64 {
        self.mark.value
    }

    /// Reads the checkpoint again, as another writer may have left it.
    pub(crate) async fn reload(&mut self) -> Result<(), JetStreamError> {
        self.mark = crate::projection::storage::read_checkpoint_at(&self.bucket, &self.key).await?;
        Ok(())
    }

    /// Whether the event the checkpoint names is still where it was in the stream.
    pub(crate) async fn check_stream(
        &self,
    ) -> Result<Option<crate::projection::storage::StreamChanged>, crate::store::ReadError> {
        crate::projection::storage::check_stream(&self.store, &self.mark).await
    }

    /// Moves the checkpoint forward to `to` (a sequence and when its event was
    /// stored; never back), by compare-and-set on its revision.
    pub(crate) async fn advance(&mut self, to: StoredMark) -> Result<(), Superseded> {
        if to.0 <= self.mark.value {
            return Ok(());
        }
        crate::projection::storage::commit_at(
            &self.store,
            &self.bucket,
            &self.key,
            [],
            &mut self.mark,
            to,
        )
        .await
        .map_err(|_| Superseded(self.key.clone()))
    }
}

/// The durable consumer `name` on `EVENTS`, started afresh right after `checkpoint`.
/// The checkpoint is the truth and the consumer only a cursor: a consumer left by a
/// killed instance, or by a step that failed halfway, would hold its unacked batch
/// back until `ack_wait` while the runner moved past it.
pub(crate) async fn cursor(
    store: &EventStore,
    name: &str,
    aggregates: &[&str],
    max_deliver: i64,
    checkpoint: u64,
) -> Result<jetstream::consumer::Consumer<pull::Config>, JetStreamError> {
    let filters = aggregates
        .iter()
        .map(|a| store.subjects().aggregate_type(a))
        .collect();
    let stream = store
        .jetstream()
        .get_stream(&store.config().stream)
        .await
        .map_err(js_err)?;
    let _ = stream.delete_consumer(name).await;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.to_string()),
            filter_subjects: filters,
            ack_policy: AckPolicy::All,
            deliver_policy: match checkpoint {
                0 => DeliverPolicy::All,
                c => DeliverPolicy::ByStartSequence {
                    start_sequence: c + 1,
                },
            },
            max_deliver: max_deliver.max(1) + 1,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(js_err)
}

/// What a runner saw its consumer deliver: the consumer's delivery sequence
/// (which counts every delivery, redeliveries included) must go on without a gap.
///
/// A gap means another client pulled from the same consumer, say an instance
/// that was paused while this one took over and has not noticed yet: the events it
/// took are missing here, so going on (and moving the checkpoint past them) would
/// skip them. The runner then starts its consumer afresh from the checkpoint.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    last: u64,
}

/// Another client took deliveries from this runner's consumer.
#[derive(Debug, thiserror::Error)]
#[error("consumer {0}: another instance pulled from it or made it anew (delivery {2} came where {1} was next)")]
pub(crate) struct Stolen(pub(crate) String, pub(crate) u64, pub(crate) u64);

impl Deliveries {
    /// Checks a fetched batch, in order.
    pub(crate) fn check(
        &mut self,
        consumer: &str,
        messages: &[jetstream::Message],
    ) -> Result<(), Stolen> {
        for m in messages {
            let Ok(info) = m.info() else { continue };
            let expected = self.last + 1;
            if info.consumer_sequence != expected {
                return Err(Stolen(
                    consumer.to_string(),
                    expected,
                    info.consumer_sequence,
                ));
            }
            self.last = info.consumer_sequence;
        }
        Ok(())
    }

    /// After an empty fetch: `Ok(true)` when the consumer has nothing left to
    /// deliver and delivered nothing but to this runner (so it is caught up),
    /// `Ok(false)` when events came in meanwhile, [`Stolen`] when another client
    /// took some.
    pub(crate) async fn caught_up(
        &self,
        name: &str,
        consumer: &mut jetstream::consumer::Consumer<pull::Config>,
    ) -> Result<Result<bool, Stolen>, JetStreamError> {
        let info = consumer.info().await.map_err(js_err)?;
        let delivered = info.delivered.consumer_sequence;
        if delivered != self.last {
            return Ok(Err(Stolen(name.to_string(), self.last + 1, delivered)));
        }
        Ok(Ok(info.num_pending == 0))
    }
}

/// A runner that reads its consumer one step at a time (a projection or a saga):
/// what [`run_until_stopped`] needs of it.
pub(crate) trait Stepping {
    type Error: std::fmt::Display;
    /// Handles one batch; returns how many messages it handled.
    async fn step(&mut self) -> Result<usize, Self::Error>;
    /// Whether `error` means "the server (or a node) is away", so the runner
    /// should wait and go on from its checkpoint rather than stop.
    fn is_transient(error: &Self::Error) -> bool;
    /// Starts the consumer afresh right after the checkpoint.
    async fn restart(&mut self) -> Result<(), Self::Error>;
    /// The consumer's name, for logs.
    fn consumer_name(&self) -> String;
}

/// Steps `runner` until `stop` turns true, riding out transient failures: nothing
/// past the checkpoint was committed, so after a pause the cursor restarts there.
/// Ends early only on an error that is not transient.
pub(crate) async fn run_until_stopped<R: Stepping>(
    runner: &mut R,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), R::Error> {
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let step = tokio::select! {
            step = runner.step() => step,
            _ = stop.changed() => return Ok(()),
        };
        match step {
            Ok(_) => {}
            Err(e) if R::is_transient(&e) => {
                tracing::warn!(consumer = %runner.consumer_name(), error = %e, "waiting: will go on from the checkpoint");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return Ok(()),
                }
                match runner.restart().await {
                    Ok(()) => {}
                    Err(e) if R::is_transient(&e) => {
                        tracing::warn!(consumer = %runner.consumer_name(), error = %e, "consumer not restarted yet");
                    }
                    // Found on the way back (the stream is not the one it was).
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// How many times the store's connection has (re)connected. A server that came
/// back may have come back with another stream (a power cut in `fast` mode cuts
/// its tail, and a durable consumer that survived goes on past the lost
/// sequences as new events reuse them): a runner checks the stream again before
/// it applies anything fetched after the count moved.
pub(crate) fn connects(store: &EventStore) -> u64 {
    store
        .client()
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// The error a runner steps into when the connection came back since its stream
/// was last checked: transient, so it restarts (and checks) from its checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("reconnected to the server: the stream is checked again before anything is applied")]
pub(crate) struct Reconnected;

/// A stream sequence and when its event was stored: which event a checkpoint is at.
pub(crate) type StoredMark = (u64, Option<chrono::DateTime<chrono::Utc>>);

/// A delivered message's stream sequence and when it was stored.
pub(crate) fn stored_mark(m: &jetstream::Message) -> StoredMark {
    match m.info() {
        Ok(info) => (info.stream_sequence, stored_time(&info)),
        Err(_) => (0, None),
    }
}

fn stored_time(info: &jetstream::message::Info<'_>) -> Option<chrono::DateTime<chrono::Utc>> {
    let published = info.published;
    chrono::DateTime::from_timestamp(published.unix_timestamp(), published.nanosecond())
}

/// The event a consumer delivered, with its stream sequence; an error says why a
/// message is not a readable event.
pub(crate) fn recorded_event(
    store: &EventStore,
    m: &jetstream::Message,
) -> (u64, Result<RecordedEvent, String>) {
    let info = match m.info() {
        Ok(info) => info,
        Err(e) => return (0, Err(format!("not a JetStream message: {e}"))),
    };
    let seq = info.stream_sequence;
    let stored_at = stored_time(&info);
    let event = (|| {
        let (aggregate, id) = store
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

/// Parks the message in `DLQ` on `dlq.<consumer>` with why it failed.
pub(crate) async fn park(
    store: &EventStore,
    consumer: &str,
    m: &jetstream::Message,
    seq: u64,
    reason: &str,
) -> Result<(), JetStreamError> {
    crate::telemetry::metrics::parked(consumer);
    let empty = async_nats::HeaderMap::new();
    let headers = m.headers.as_ref().unwrap_or(&empty);
    park_parts(
        store, consumer, headers, &m.subject, &m.payload, seq, reason,
    )
    .await
}

/// Parks an event given as its headers, subject and body (see [`park`]).
pub(crate) async fn park_parts(
    store: &EventStore,
    consumer: &str,
    event_headers: &async_nats::HeaderMap,
    event_subject: &str,
    payload: &bytes::Bytes,
    seq: u64,
    reason: &str,
) -> Result<(), JetStreamError> {
    // The parked copy keeps the event's own headers but none of the NATS control
    // headers (a Nats-Msg-Id would make the server drop it as a duplicate) nor an
    // earlier parking's.
    let mut headers = async_nats::HeaderMap::new();
    for (name, values) in event_headers.iter() {
        let name: &str = name.as_ref();
        if !name.starts_with("Nats-") && !name.starts_with("Jetsource-Dlq-") {
            for v in values {
                headers.append(name, v.as_str());
            }
        }
    }
    headers.insert("Jetsource-Dlq-Consumer", consumer);
    headers.insert("Jetsource-Dlq-Seq", seq.to_string().as_str());
    headers.insert("Jetsource-Dlq-Subject", event_subject);
    headers.insert(
        "Jetsource-Dlq-Error",
        reason.replace(['\r', '\n'], " ").as_str(),
    );
    let subject = format!("{}dlq.{consumer}", store.subjects().prefix());
    store
        .jetstream()
        .publish_with_headers(subject, headers, payload.clone())
        .await
        .map_err(js_err)?
        .await
        .map_err(js_err)?;
    tracing::warn!(consumer, seq, reason, "event parked in DLQ");
    Ok(())
}
