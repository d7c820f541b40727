//! The repository: load, decide, append with the expected sequence, retry conflicts.
//!
//! It keeps a bounded cache of hydrated aggregates (state plus position), so a
//! command on a warm aggregate reads nothing before it appends; a conflict evicts
//! the entry and the command reloads and decides again. Commands on one aggregate
//! in one process take turns (a per-aggregate lock), so a node never conflicts with
//! itself; across processes the server's expected-sequence check keeps order.

use crate::aggregate::{decode_events, encode_event, Aggregate, EncodeError};
use crate::snapshot::{CommandRecord, Snapshot, Snapshots};
use crate::store::{
    Append, AppendError, AppendErrorKind, EventStore, ExpectedVersion, Metadata, Position,
    ReadError, ReadErrorKind,
};
use crate::subjects::{validate_id, InvalidToken};
use futures::TryStreamExt;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a repository caches and retries.
///
/// ```
/// let cfg = jetsource::RepositoryConfig { cache_capacity: 50_000, ..Default::default() };
/// assert_eq!(cfg.conflict_retries, 8);
/// ```
#[derive(Debug, Clone)]
pub struct RepositoryConfig {
    /// Hydrated aggregates kept in memory (least recently used go first).
    pub cache_capacity: usize,
    /// How many times a conflicting command is reloaded and decided again.
    pub conflict_retries: usize,
    /// First backoff after a conflict; doubles each time, with jitter, up to 100 ms.
    pub conflict_backoff: Duration,
    /// How many times an append that timed out is resent (same event ids, so it is
    /// stored at most once).
    pub timeout_retries: usize,
    /// Share batches with concurrent commands (group commit). On by default.
    pub group_commit: bool,
    /// Most events one time-travel load ([`Repository::load_at`]) replays.
    pub max_time_travel_events: u64,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            cache_capacity: 10_000,
            conflict_retries: 8,
            conflict_backoff: Duration::from_millis(2),
            timeout_retries: 2,
            group_commit: true,
            max_time_travel_events: 10_000,
        }
    }
}

/// How many recent commands per cached aggregate are remembered for deduplication.
const RECENT_COMMANDS: usize = 64;

/// A point in an aggregate's past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointInTime {
    /// Right after the event with this version.
    Version(u64),
    /// After every event the server stored at or before this instant.
    Instant(chrono::DateTime<chrono::Utc>),
}

/// An aggregate's state and where it stands in the store.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The state after all its events.
    pub state: A,
    /// Its last event's stream sequence and its version.
    pub position: Position,
    /// The last commands that produced its events (their `Jetsource-Command-Id`):
    /// a retry of one of them is answered from here, not executed again.
    recent: std::collections::VecDeque<CommandRecord>,
}

impl<A: Aggregate> Loaded<A> {
    /// Applies one stored event and moves the position past it.
    fn advance(&mut self, recorded: &crate::store::RecordedEvent) -> Result<(), ReadError> {
        let events = decode_events::<A::Event>(recorded)
            .map_err(|m| ReadError::new(ReadErrorKind::Malformed(m)))?;
        for event in &events {
            self.state.apply(event);
        }
        self.position = Position {
            seq: recorded.seq,
            version: recorded.version,
        };
        Ok(())
    }
}

impl<A> Loaded<A> {
    fn remember(&mut self, command_id: &str, seq: u64, version: u64, event_type: &str) {
        match self.recent.back_mut() {
            Some(last) if last.command_id == command_id => {
                last.seq = seq;
                last.version = version;
                last.event_types.push(event_type.to_string());
            }
            _ => {
                if self.recent.len() == RECENT_COMMANDS {
                    self.recent.pop_front();
                }
                self.recent.push_back(CommandRecord {
                    command_id: command_id.to_string(),
                    version,
                    seq,
                    event_types: vec![event_type.to_string()],
                });
            }
        }
    }

    fn executed<E>(&self, command_id: &str) -> Option<Executed<E>> {
        self.recent
            .iter()
            .rev()
            .find(|r| r.command_id == command_id)
            .map(|r| Executed {
                version: r.version,
                seq: r.seq,
                events: Vec::new(),
                event_types: r.event_types.clone(),
                duplicate: true,
            })
    }
}

/// A command's outcome.
#[derive(Debug, Clone)]
pub struct Executed<E> {
    /// The aggregate's version after the command.
    pub version: u64,
    /// Stream sequence of the command's last event (or of the aggregate's last event
    /// when the command produced none).
    pub seq: u64,
    /// The new events, in order.
    pub events: Vec<E>,
    /// Their type names.
    pub event_types: Vec<String>,
    /// True when this command id had already been executed: nothing was appended,
    /// and `version`, `seq` and `event_types` are those of the first execution
    /// (`events` is then empty).
    pub duplicate: bool,
}

/// A duplicate's outcome from the events its first execution stored.
fn executed_from<E>(stored: &[crate::store::RecordedEvent]) -> Option<Executed<E>> {
    let last = stored.last()?;
    Some(Executed {
        version: last.version,
        seq: last.seq,
        events: Vec::new(),
        event_types: stored.iter().map(|e| e.event_type.clone()).collect(),
        duplicate: true,
    })
}

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate id cannot be a subject token.
    #[error("invalid aggregate id: it {0}")]
    InvalidId(InvalidToken),
    /// The domain refused the command.
    #[error("{0}")]
    Rejected(#[source] E),
    /// The caller expected another version.
    #[error("expected version {expected}, but the aggregate is at {actual}")]
    WrongVersion {
        /// What the caller expected.
        expected: u64,
        /// Where it is.
        actual: u64,
    },
    /// Still conflicting after every retry: the aggregate is too contended.
    #[error("gave up after {attempts} concurrency conflicts")]
    Conflict {
        /// Attempts made.
        attempts: usize,
    },
    /// An event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The append failed for a reason other than a conflict.
    #[error(transparent)]
    Append(AppendError),
    /// The aggregate could not be loaded.
    #[error(transparent)]
    Load(#[from] ReadError),
}

type Slot<A> = Arc<tokio::sync::Mutex<Option<Loaded<A>>>>;

/// Loads and saves one aggregate type.
///
/// ```no_run
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
/// # async fn demo(store: jetsource::EventStore) -> Result<(), Box<dyn std::error::Error>> {
/// let counters = jetsource::Repository::<Counter>::new(store, Default::default());
/// let done = counters.execute("c1", &5, &jetsource::Metadata::default()).await?;
/// println!("counter c1 is at version {}", done.version);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Repository<A: Aggregate> {
    store: EventStore,
    cache: Mutex<LruCache<String, Slot<A>>>,
    config: RepositoryConfig,
    snapshots: Option<Snapshots<A>>,
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store`.
    pub fn new(store: EventStore, config: RepositoryConfig) -> Self {
        let capacity = NonZeroUsize::new(config.cache_capacity.max(1)).expect("non-zero");
        Repository {
            store,
            cache: Mutex::new(LruCache::new(capacity)),
            config,
            snapshots: None,
        }
    }

    /// A repository that keeps a snapshot of each aggregate every `every` events
    /// (in KV `snapshots`) and loads from the latest one.
    ///
    /// ```no_run
    /// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # #[serde(tag = "type", content = "data")]
    /// # enum CounterEvent { Incremented { by: u32 } }
    /// # impl jetsource::DomainEvent for CounterEvent {}
    /// # #[derive(Debug, thiserror::Error)] #[error("overflow")] struct Overflow;
    /// # #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)] struct Counter { value: u32 }
    /// # impl jetsource::Aggregate for Counter {
    /// #     const NAME: &'static str = "counter";
    /// #     type Command = u32; type Event = CounterEvent; type Error = Overflow;
    /// #     fn handle(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> { Ok(vec![CounterEvent::Incremented { by: *by }]) }
    /// #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Incremented { by } => self.value += by } }
    /// # }
    /// impl jetsource::snapshot::Snapshot for Counter {}
    /// # async fn demo(store: jetsource::EventStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let counters = jetsource::Repository::<Counter>::with_snapshots(store, Default::default(), 100).await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_snapshots(
        store: EventStore,
        config: RepositoryConfig,
        every: u64,
    ) -> Result<Self, async_nats::jetstream::context::CreateKeyValueError>
    where
        A: Snapshot,
    {
        let snapshots = Snapshots::open(&store, every).await?;
        Ok(Repository {
            snapshots: Some(snapshots),
            ..Repository::new(store, config)
        })
    }

    /// The store underneath.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    fn slot(&self, id: &str) -> Slot<A> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = cache.get(id) {
            return slot.clone();
        }
        let slot = Slot::<A>::default();
        cache.put(id.to_string(), slot.clone());
        slot
    }

    /// How many aggregates are cached now.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Loads an aggregate from the store (bypassing and refreshing the cache).
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, ReadError> {
        let loaded = self.load_from_store(id).await?;
        *self.slot(id).lock().await = Some(loaded.clone());
        Ok(loaded)
    }

    /// The aggregate as it was at a version or an instant (time travel), never from
    /// the cache. A version at or after the latest snapshot starts from it; any
    /// other point replays from the first event. Either way at most
    /// [`RepositoryConfig::max_time_travel_events`] are replayed, or the load fails with
    /// [`ReadErrorKind::TooLong`].
    ///
    /// ```no_run
    /// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # #[serde(tag = "type", content = "data")]
    /// # enum CounterEvent { Incremented { by: u32 } }
    /// # impl jetsource::DomainEvent for CounterEvent {}
    /// # #[derive(Debug, thiserror::Error)] #[error("overflow")] struct Overflow;
    /// # #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)] struct Counter { value: u32 }
    /// # impl jetsource::Aggregate for Counter {
    /// #     const NAME: &'static str = "counter";
    /// #     type Command = u32; type Event = CounterEvent; type Error = Overflow;
    /// #     fn handle(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> { Ok(vec![CounterEvent::Incremented { by: *by }]) }
    /// #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Incremented { by } => self.value += by } }
    /// # }
    /// # async fn demo(counters: jetsource::Repository<Counter>) -> Result<(), jetsource::store::ReadError> {
    /// use jetsource::repository::PointInTime;
    /// let then = counters.load_at("c1", PointInTime::Version(2)).await?;
    /// println!("at version 2 the count was {}", then.state.value);
    /// # Ok(()) }
    /// ```
    pub async fn load_at(&self, id: &str, point: PointInTime) -> Result<Loaded<A>, ReadError> {
        let mut loaded = Loaded {
            state: A::default(),
            position: Position::default(),
            recent: Default::default(),
        };
        if let (Some(snapshots), PointInTime::Version(v)) = (&self.snapshots, point) {
            if let Some(restored) = snapshots.load(id).await {
                if restored.position.version <= v {
                    loaded.state = restored.state;
                    loaded.position = restored.position;
                }
            }
        }
        let mut events = self
            .store
            .stream_aggregate(A::NAME, id, loaded.position.seq);
        let mut replayed = 0;
        while let Some(recorded) = events.try_next().await? {
            let past = match point {
                PointInTime::Version(v) => recorded.version > v,
                PointInTime::Instant(t) => recorded.stored_at.is_some_and(|at| at > t),
            };
            if past {
                break;
            }
            replayed += 1;
            let limit = self.config.max_time_travel_events;
            if replayed > limit {
                return Err(ReadError::new(crate::store::ReadErrorKind::TooLong {
                    limit,
                }));
            }
            loaded.advance(&recorded)?;
        }
        Ok(loaded)
    }

    async fn load_from_store(&self, id: &str) -> Result<Loaded<A>, ReadError> {
        let mut loaded = Loaded {
            state: A::default(),
            position: Position::default(),
            recent: Default::default(),
        };
        if let Some(restored) = match &self.snapshots {
            Some(s) => s.load(id).await,
            None => None,
        } {
            loaded.state = restored.state;
            loaded.position = restored.position;
            loaded.recent = restored.recent.into();
        }
        let from_snapshot = loaded.position.version;
        let mut events = self
            .store
            .stream_aggregate(A::NAME, id, loaded.position.seq);
        while let Some(recorded) = events.try_next().await? {
            loaded.advance(&recorded)?;
            if let Some(command_id) = &recorded.metadata.command_id {
                loaded.remember(
                    command_id,
                    recorded.seq,
                    recorded.version,
                    &recorded.event_type,
                );
            }
        }
        self.snapshot_if_due(id, &loaded, from_snapshot);
        Ok(loaded)
    }

    /// Runs a command against the aggregate `id`.
    ///
    /// With a command id in `metadata`, the command runs at most once within the
    /// store's duplicate window: a retry gets the first execution's outcome
    /// (`duplicate: true`), whatever ran on the aggregate in between and whether or
    /// not the retry would now be refused.
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
        metadata: &Metadata,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Error>> {
        self.execute_inner(id, command, metadata, None, true).await
    }

    /// Runs a command whose id was just made up (nobody can be retrying it): a
    /// refusal needs no look for an earlier execution.
    pub(crate) async fn execute_new(
        &self,
        id: &str,
        command: &A::Command,
        metadata: &Metadata,
        expected_version: Option<u64>,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Error>> {
        self.execute_inner(id, command, metadata, expected_version, false)
            .await
    }

    /// Runs a command only if the aggregate is at `expected_version` (the client's
    /// own optimistic check, `Jetsource-Expected-Version`).
    pub async fn execute_expecting(
        &self,
        id: &str,
        command: &A::Command,
        metadata: &Metadata,
        expected_version: u64,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Error>> {
        self.execute_inner(id, command, metadata, Some(expected_version), true)
            .await
    }

    async fn execute_inner(
        &self,
        id: &str,
        command: &A::Command,
        metadata: &Metadata,
        expected_version: Option<u64>,
        may_be_retry: bool,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Error>> {
        validate_id(id).map_err(ExecuteError::InvalidId)?;
        let slot = self.slot(id);
        let mut cached = slot.lock().await;
        let codec = self.store.config().codec;
        let mut attempt = 0;
        loop {
            let fresh = cached.is_none();
            let loaded = match cached.as_mut() {
                Some(loaded) => loaded,
                // Boxed, as `earlier_execution` below: rare paths with large
                // futures would otherwise enlarge every command's task.
                None => cached.insert(Box::pin(self.load_from_store(id)).await?),
            };
            if let Some(done) = metadata
                .command_id
                .as_deref()
                .and_then(|c| loaded.executed(c))
            {
                return Ok(done);
            }
            if let Some(expected) = expected_version {
                if loaded.position.version != expected {
                    if !fresh {
                        // The cache may be behind another node: check the store.
                        *cached = None;
                        continue;
                    }
                    return match Box::pin(self.earlier_execution(id, metadata, may_be_retry))
                        .await?
                    {
                        Some(done) => Ok(done),
                        None => Err(ExecuteError::WrongVersion {
                            expected,
                            actual: loaded.position.version,
                        }),
                    };
                }
            }
            let events = match loaded.state.handle(command) {
                Ok(events) if !events.is_empty() || fresh => events,
                Err(refusal) if fresh => {
                    // Refused now, but maybe accepted before, with more events since.
                    return match Box::pin(self.earlier_execution(id, metadata, may_be_retry))
                        .await?
                    {
                        Some(done) => Ok(done),
                        None => Err(ExecuteError::Rejected(refusal)),
                    };
                }
                // A refusal or a no-op decided on cached state may only mean the cache
                // is behind another node (which may even have run this very command):
                // decide again on the store's state.
                _ => {
                    *cached = None;
                    continue;
                }
            };
            if events.is_empty() {
                if let Some(done) =
                    Box::pin(self.earlier_execution(id, metadata, may_be_retry)).await?
                {
                    return Ok(done);
                }
                return Ok(Executed {
                    version: loaded.position.version,
                    seq: loaded.position.seq,
                    events,
                    event_types: Vec::new(),
                    duplicate: false,
                });
            }
            let new_events = events
                .iter()
                .map(|e| encode_event(e, codec, metadata))
                .collect::<Result<Vec<_>, _>>()?;
            let event_types = new_events.iter().map(|e| e.event_type.clone()).collect();
            let expected = match loaded.position.version {
                0 => ExpectedVersion::NoStream,
                _ => ExpectedVersion::Exact(loaded.position),
            };
            let append = Append::new(A::NAME, id, expected, new_events);
            match self.append_resending_on_timeout(append).await {
                Ok(appended) if appended.duplicate && metadata.command_id.is_some() => {
                    // The server knew the command: it ran before (perhaps deciding
                    // otherwise); answer with what it stored then.
                    *cached = None;
                    let command_id = metadata.command_id.as_deref().unwrap_or_default();
                    let stored = self
                        .store
                        .find_command(A::NAME, id, command_id, Some(appended.first_seq))
                        .await?;
                    return Ok(executed_from(&stored).unwrap_or(Executed {
                        version: appended.version,
                        seq: appended.last_seq,
                        events: Vec::new(),
                        event_types: Vec::new(),
                        duplicate: true,
                    }));
                }
                Ok(appended) => {
                    for e in &events {
                        loaded.state.apply(e);
                    }
                    let before = loaded.position.version;
                    loaded.position = appended.position();
                    if let Some(command_id) = &metadata.command_id {
                        let types: &Vec<String> = &event_types;
                        for (i, t) in types.iter().enumerate() {
                            let version = appended.version - (types.len() - 1 - i) as u64;
                            loaded.remember(command_id, appended.last_seq, version, t);
                        }
                    }
                    self.snapshot_if_due(id, loaded, before);
                    return Ok(Executed {
                        version: appended.version,
                        seq: appended.last_seq,
                        events,
                        event_types,
                        duplicate: false,
                    });
                }
                Err(e) if e.is_conflict() => {
                    *cached = None;
                    attempt += 1;
                    if attempt > self.config.conflict_retries {
                        return Err(ExecuteError::Conflict { attempts: attempt });
                    }
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => {
                    // The outcome may be unknown: forget what we believed.
                    *cached = None;
                    return Err(ExecuteError::Append(e));
                }
            }
        }
    }

    /// The outcome of this command's earlier execution, if it ran within the
    /// store's duplicate window (read from the aggregate's events).
    async fn earlier_execution(
        &self,
        id: &str,
        metadata: &Metadata,
        may_be_retry: bool,
    ) -> Result<Option<Executed<A::Event>>, ExecuteError<A::Error>> {
        let Some(command_id) = metadata.command_id.as_deref().filter(|_| may_be_retry) else {
            return Ok(None);
        };
        let stored = self
            .store
            .find_command(A::NAME, id, command_id, None)
            .await?;
        Ok(executed_from(&stored))
    }

    async fn append_resending_on_timeout(
        &self,
        append: Append,
    ) -> Result<crate::store::Appended, AppendError> {
        let mut resends = 0;
        loop {
            let result = if self.config.group_commit {
                self.store.append_grouped(append.clone()).await
            } else {
                self.store.append(append.clone()).await
            };
            match result {
                Err(e)
                    if *e.kind() == AppendErrorKind::TimedOut
                        && resends < self.config.timeout_retries =>
                {
                    resends += 1;
                }
                other => return other,
            }
        }
    }

    /// Writes a snapshot (in the background) when the aggregate passed a multiple
    /// of the snapshot interval since `since_version`.
    fn snapshot_if_due(&self, id: &str, loaded: &Loaded<A>, since_version: u64) {
        if let Some(s) = &self.snapshots {
            if s.due(since_version, loaded.position.version) {
                let recent: Vec<_> = loaded.recent.iter().cloned().collect();
                s.save(id, &loaded.state, loaded.position, &recent);
            }
        }
    }

    fn backoff(&self, attempt: usize) -> Duration {
        let base = self.config.conflict_backoff.as_secs_f64() * 2f64.powi(attempt as i32 - 1);
        let capped = base.min(0.1);
        Duration::from_secs_f64(capped * (0.5 + fastrand::f64()))
    }
}
