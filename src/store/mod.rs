//! The event store: the `EVENTS` stream, appends, reads.
//!
//! - [`stream`]: ensuring the stream with DESIGN's configuration.
//! - [`envelope`]: the headers around each event ([`NewEvent`], [`RecordedEvent`]).
//! - [`codec`]: JSON and CBOR bodies.
//! - [`append`]: optimistic concurrency and ADR-50 atomic batches.
//! - `group_commit`: packing concurrent appends into shared batches.
//! - [`read`]: paged batched direct gets for aggregates, the global log and type scans.

pub mod append;
pub(crate) mod buckets;
pub mod codec;
pub mod envelope;
mod group_commit;
mod mux;
pub mod read;
pub mod stream;

pub use append::{Append, AppendError, AppendErrorKind, Appended, ExpectedVersion, Position};
pub use codec::Codec;
pub use envelope::{headers, MalformedEvent, Metadata, NewEvent, RecordedEvent};
pub use group_commit::GroupCommitConfig;
pub use read::{ReadError, ReadErrorKind, TypeQuery};
pub use stream::{StreamError, StreamErrorKind};

use crate::subjects::Subjects;
use append::{prepare, send, Prepared};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the store is laid out and how it behaves.
///
/// ```
/// let cfg = jetsource::StoreConfig { replicas: 3, ..Default::default() };
/// assert_eq!(cfg.stream, "EVENTS");
/// ```
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Stream name (default `EVENTS`).
    pub stream: String,
    /// Subject prefix (default none).
    pub prefix: String,
    /// Stream replicas: 1 for development, 3 in a cluster.
    pub replicas: usize,
    /// How new event bodies are written.
    pub codec: Codec,
    /// Server-side deduplication window: a command retried within it is answered
    /// with its first outcome, whatever happened in between (see
    /// [`append::dedupe_key`]). Also the node's idempotency window.
    pub duplicate_window: Duration,
    /// How long to wait for the server to acknowledge an append or answer a read.
    pub request_timeout: Duration,
    /// Most events in one atomic batch (the server's limit is 1000).
    pub max_batch_events: usize,
    /// Events per direct-get page when reading.
    pub read_page: usize,
    /// Group commit bounds.
    pub group_commit: GroupCommitConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            stream: "EVENTS".into(),
            prefix: String::new(),
            replicas: 1,
            codec: Codec::Json,
            duplicate_window: Duration::from_secs(10 * 60),
            request_timeout: Duration::from_secs(5),
            max_batch_events: 1000,
            read_page: 1000,
            group_commit: GroupCommitConfig::default(),
        }
    }
}

impl StoreConfig {
    /// The subjects under this configuration's prefix.
    pub fn subjects(&self) -> Subjects {
        Subjects::new(&self.prefix)
    }
}

/// Counters of what the store has sent, for tests, status and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Appends acknowledged (duplicates included).
    pub appends: u64,
    /// Atomic batches (or single publishes) sent.
    pub batches: u64,
    /// Batches that failed as a whole and were split into their appends.
    pub split_batches: u64,
    /// Direct-get requests made (one per page of a read).
    pub reads: u64,
}

#[derive(Debug, Default)]
struct Counters {
    appends: AtomicU64,
    batches: AtomicU64,
    split_batches: AtomicU64,
    reads: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    config: StoreConfig,
    subjects: Subjects,
    mux: mux::ReplyMux,
    max_payload: usize,
    counters: Counters,
    /// The same, as metrics (registered at open: install a recorder before).
    metrics: crate::telemetry::metrics::Appends,
    /// Single-event appends published directly and not yet acknowledged.
    direct_in_flight: std::sync::atomic::AtomicUsize,
    /// Ordered consumers reading long reads now: at most
    /// [`read::LONG_READS`], so requests cannot pile consumers up on the server.
    long_reads: Arc<tokio::sync::Semaphore>,
}

/// The JetStream event store. Cheap to clone; clones share one connection, one
/// reply subscription and one group-commit appender.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = jetsource::connect("nats://127.0.0.1:4222").await?;
/// let store = jetsource::EventStore::open(client, jetsource::StoreConfig::default()).await?;
/// let history = store.read_aggregate("person", "42", 0).await?;
/// println!("{} events", history.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
    group: group_commit::Handle,
}

/// Error of [`EventStore::open`].
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The stream could not be ensured.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The reply subscription could not be made.
    #[error("could not subscribe for replies: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

impl EventStore {
    /// Ensures the stream (creating it, or refusing an incompatible one) and starts
    /// the group-commit appender.
    pub async fn open(
        client: async_nats::Client,
        config: StoreConfig,
    ) -> Result<EventStore, OpenError> {
        let js = async_nats::jetstream::new(client.clone());
        // A cluster that has just elected its leaders may time out a first request.
        let mut attempts = 0;
        loop {
            match stream::ensure(&js, &config).await {
                Err(e) if *e.kind() == StreamErrorKind::Request && attempts < 2 => attempts += 1,
                other => break other?,
            }
        }
        let mux = mux::ReplyMux::start(&client).await?;
        let max_payload = client.server_info().max_payload;
        let inner = Arc::new(Inner {
            subjects: config.subjects(),
            client,
            js,
            mux,
            max_payload,
            counters: Counters::default(),
            metrics: crate::telemetry::metrics::Appends::new(),
            direct_in_flight: Default::default(),
            long_reads: Arc::new(tokio::sync::Semaphore::new(read::LONG_READS)),
            config,
        });
        let group = group_commit::start(inner.config.group_commit.clone());
        Ok(EventStore { inner, group })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The subjects it uses.
    pub fn subjects(&self) -> &Subjects {
        &self.inner.subjects
    }

    /// The NATS connection underneath.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The JetStream context underneath.
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.inner.js
    }

    /// The server's largest message, in bytes (`max_payload` of its INFO).
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// What has been sent so far.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            appends: c.appends.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            split_batches: c.split_batches.load(Ordering::Relaxed),
            reads: c.reads.load(Ordering::Relaxed),
        }
    }

    /// Appends one aggregate's events as one atomic batch, on its own.
    ///
    /// ```no_run
    /// # async fn demo(store: jetsource::EventStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use jetsource::store::{Append, Codec, ExpectedVersion, Metadata, NewEvent};
    /// let event = NewEvent::encode("PersonRegistered", 1, &serde_json::json!({"name": "Ada"}), Codec::Json, Metadata::default())?;
    /// let appended = store.append(Append::new("person", "42", ExpectedVersion::NoStream, vec![event])).await?;
    /// assert_eq!(appended.version, 1);
    /// # Ok(()) }
    /// ```
    pub async fn append(&self, append: Append) -> Result<Appended, AppendError> {
        self.append_via(append, false).await
    }

    /// Appends through the group-commit appender: concurrent appends to different
    /// aggregates share one atomic batch (one fsync), each caller gets its own
    /// outcome, and a stale one fails alone.
    pub async fn append_grouped(&self, append: Append) -> Result<Appended, AppendError> {
        self.append_via(append, true).await
    }

    async fn append_via(&self, append: Append, grouped: bool) -> Result<Appended, AppendError> {
        append::check_names(&append.aggregate, &append.id)?;
        let subject = self.inner.subjects.aggregate(&append.aggregate, &append.id);
        // `Any` is resolved to the current position, and a conflict on it re-read,
        // so that versions stay contiguous even without a caller-side expectation.
        const ANY_ATTEMPTS: u32 = 32;
        let mut attempt = 0;
        loop {
            let base = match append.expected {
                ExpectedVersion::NoStream => Position::default(),
                ExpectedVersion::Exact(p) => p,
                ExpectedVersion::Any => self
                    .last_position(&append.aggregate, &append.id)
                    .await
                    .map_err(|e| AppendError::with_source(AppendErrorKind::Unavailable, e))?
                    .unwrap_or_default(),
            };
            let prepared = prepare(
                (&append.aggregate, &append.id),
                subject.clone(),
                base,
                &append.events,
                self.inner.config.max_batch_events,
                self.inner.max_payload,
            )?;
            let result = if grouped && !self.take_direct_slot(&prepared) {
                self.group.submit(self, prepared).await
            } else {
                let result = self.publish_one(&prepared).await;
                if grouped {
                    self.inner.direct_in_flight.fetch_sub(1, Ordering::Relaxed);
                }
                result
            };
            match result {
                Err(e)
                    if e.is_conflict()
                        && append.expected == ExpectedVersion::Any
                        && attempt < ANY_ATTEMPTS =>
                {
                    attempt += 1;
                    let millis = fastrand::u64(0..=u64::from(attempt.min(10)));
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                }
                other => return other,
            }
        }
    }

    /// A single-event append skips the group-commit queue while fewer than
    /// `direct_singles` are in flight (see [`GroupCommitConfig`]).
    fn take_direct_slot(&self, prepared: &Prepared) -> bool {
        if prepared.msgs.len() != 1 {
            return false;
        }
        let limit = self.inner.config.group_commit.direct_singles;
        self.inner
            .direct_in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Sends one prepared append as its own batch; a conflict or duplicate that is
    /// really this append (or, with a command id, this command) already stored
    /// becomes a duplicate success that points at what was stored then.
    pub(crate) async fn publish_one(&self, p: &Prepared) -> Result<Appended, AppendError> {
        let msgs: Vec<_> = p.msgs.iter().collect();
        self.count_batch();
        match self.send(&msgs, Some(p.base.seq)).await {
            Ok(ack) if !ack.duplicate => {
                self.count_appends(1);
                Ok(appended_at(p, ack.last_seq, false))
            }
            // A duplicate's pub ack names the stored first event's sequence.
            Ok(ack) => self
                .resolve_duplicate(p, Some(ack.last_seq))
                .await?
                .ok_or_else(|| AppendError::new(AppendErrorKind::DuplicateEventId)),
            Err(e)
                if matches!(
                    e.kind(),
                    AppendErrorKind::Conflict { .. } | AppendErrorKind::DuplicateEventId
                ) =>
            {
                match self.resolve_duplicate(p, None).await? {
                    Some(done) => Ok(done),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn send(
        &self,
        msgs: &[&append::OutMsg],
        expected: Option<u64>,
    ) -> Result<append::Ack, AppendError> {
        let started = std::time::Instant::now();
        let acked = send(
            &self.inner.client,
            &self.inner.mux,
            msgs,
            expected,
            self.inner.config.request_timeout,
        )
        .await;
        self.inner.metrics.publish(msgs.len(), started.elapsed());
        acked
    }

    /// Finds what the server holds for this append: the same events right after
    /// its base (a resend), or, with a command id, that command's events wherever
    /// they are in the window (a retry decided anew). `None`: it is not stored.
    async fn resolve_duplicate(
        &self,
        p: &Prepared,
        first_seq: Option<u64>,
    ) -> Result<Option<Appended>, AppendError> {
        let (aggregate, id) = self
            .inner
            .subjects
            .parse_event_subject(&p.subject)
            .expect("prepared subjects are event subjects");
        let unavailable = |e| AppendError::with_source(AppendErrorKind::Unavailable, e);
        let stored = match &p.command_id {
            Some(command) => self
                .find_command(aggregate, id, command, first_seq)
                .await
                .map_err(unavailable)?,
            None => {
                let after = first_seq.map_or(p.base.seq, |s| s.saturating_sub(1));
                let stored = self
                    .read_aggregate_limit(aggregate, id, after, p.event_ids.len())
                    .await
                    .map_err(unavailable)?;
                let ids: Vec<_> = stored.iter().map(|e| e.event_id).collect();
                if ids != p.event_ids {
                    return Ok(None);
                }
                stored
            }
        };
        let (Some(first), Some(last)) = (stored.first(), stored.last()) else {
            return Ok(None);
        };
        self.count_appends(1);
        Ok(Some(Appended {
            first_seq: first.seq,
            last_seq: last.seq,
            version: last.version,
            duplicate: true,
        }))
    }

    pub(crate) fn count_batch(&self) {
        self.inner.counters.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_appends(&self, n: u64) {
        self.inner.counters.appends.fetch_add(n, Ordering::Relaxed);
        self.inner.metrics.appends(n);
    }

    pub(crate) fn count_group_commit(&self, appends: usize) {
        self.inner.metrics.group_commit(appends);
    }

    pub(crate) fn count_split(&self) {
        self.inner.metrics.split();
        self.inner
            .counters
            .split_batches
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The outcome of `p` when its last event landed at `last_seq`.
pub(crate) fn appended_at(p: &Prepared, last_seq: u64, duplicate: bool) -> Appended {
    let n = p.msgs.len() as u64;
    Appended {
        first_seq: last_seq + 1 - n,
        last_seq,
        version: p.base.version + n,
        duplicate,
    }
}
