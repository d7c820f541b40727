//! Snapshots: an aggregate's state at a position, in KV `snapshots`, so a load reads
//! only the events after it.
//!
//! Opt-in per aggregate type: implement [`Snapshot`] (serde plus a state schema
//! number) and build the repository with [`Repository::with_snapshots`]. Snapshots
//! are written every `every` events, off the command's reply path. A snapshot whose
//! schema is not the current one, or whose bytes do not decode, is ignored (the
//! aggregate is replayed in full) and logged: a snapshot is a cache of the events,
//! never the truth.
//!
//! [`Repository::with_snapshots`]: crate::Repository::with_snapshots

use crate::aggregate::Aggregate;
use crate::store::{EventStore, Position};
use async_nats::jetstream::kv;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The bucket's name.
pub const BUCKET: &str = "snapshots";

/// An aggregate whose state can be snapshotted.
///
/// ```
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # #[serde(tag = "type", content = "data")]
/// # enum CounterEvent { Incremented { by: u32 } }
/// # impl jetsource::DomainEvent for CounterEvent {}
/// # #[derive(Debug, thiserror::Error)] #[error("overflow")] struct Overflow;
/// #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
/// struct Counter { value: u32 }
/// # impl jetsource::Aggregate for Counter {
/// #     const NAME: &'static str = "counter";
/// #     type Command = u32; type Event = CounterEvent; type Error = Overflow;
/// #     fn handle(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> { Ok(vec![CounterEvent::Incremented { by: *by }]) }
/// #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Incremented { by } => self.value += by } }
/// # }
/// impl jetsource::snapshot::Snapshot for Counter {
///     // Raise when the state's shape changes: old snapshots are then ignored.
///     const STATE_SCHEMA: u32 = 1;
/// }
/// ```
pub trait Snapshot: Aggregate + Serialize + DeserializeOwned {
    /// Version of the state's serialized shape.
    const STATE_SCHEMA: u32 = 1;
}

/// A command remembered for deduplication, carried in snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommandRecord {
    pub(crate) command_id: String,
    pub(crate) version: u64,
    pub(crate) seq: u64,
    pub(crate) event_types: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Stored<S> {
    schema: u32,
    version: u64,
    seq: u64,
    state: S,
    #[serde(default)]
    recent: Vec<CommandRecord>,
}

/// What a repository restores from a snapshot.
pub(crate) struct Restored<A> {
    pub(crate) state: A,
    pub(crate) position: Position,
    pub(crate) recent: Vec<CommandRecord>,
}

type Encode<A> = fn(&A, Position, &[CommandRecord]) -> serde_json::Result<Vec<u8>>;
type Decode<A> = fn(&[u8]) -> Result<Restored<A>, String>;

/// Reads and writes one aggregate type's snapshots; built only where `A: Snapshot`,
/// so the repository itself needs no serde bounds.
pub(crate) struct Snapshots<A> {
    kv: kv::Store,
    pub(crate) every: u64,
    encode: Encode<A>,
    decode: Decode<A>,
}

impl<A> std::fmt::Debug for Snapshots<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("every", &self.every)
            .finish()
    }
}

fn encode<A: Snapshot>(
    state: &A,
    p: Position,
    recent: &[CommandRecord],
) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Stored {
        schema: A::STATE_SCHEMA,
        version: p.version,
        seq: p.seq,
        state,
        recent: recent.to_vec(),
    })
}

fn decode<A: Snapshot>(bytes: &[u8]) -> Result<Restored<A>, String> {
    let stored: Stored<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if stored.schema != A::STATE_SCHEMA {
        return Err(format!(
            "state schema {} is not the current {}",
            stored.schema,
            A::STATE_SCHEMA
        ));
    }
    let state = serde_json::from_value(stored.state).map_err(|e| e.to_string())?;
    Ok(Restored {
        state,
        position: Position {
            seq: stored.seq,
            version: stored.version,
        },
        recent: stored.recent,
    })
}

/// Snapshot keys are `<aggregate>.<id>`; ids with characters KV keys cannot hold
/// are simply not snapshotted.
fn key<A: Aggregate>(id: &str) -> Option<String> {
    id.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '/'))
        .then(|| format!("{}.{id}", A::NAME))
}

impl<A: Aggregate> Snapshots<A> {
    pub(crate) async fn open(
        store: &EventStore,
        every: u64,
    ) -> Result<Snapshots<A>, async_nats::jetstream::context::CreateKeyValueError>
    where
        A: Snapshot,
    {
        let config = kv::Config {
            description: "jetsource: aggregate snapshots".into(),
            ..crate::store::buckets::plain(BUCKET, store.config().replicas)
        };
        let kv = crate::store::buckets::ensure(store.jetstream(), config).await?;
        Ok(Snapshots {
            kv,
            every: every.max(1),
            encode: encode::<A>,
            decode: decode::<A>,
        })
    }

    /// The latest usable snapshot of `id`, if any.
    pub(crate) async fn load(&self, id: &str) -> Option<Restored<A>> {
        let key = key::<A>(id)?;
        let bytes = match self.kv.get(&key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(key, error = %e, "snapshot unreadable; replaying in full");
                return None;
            }
        };
        match (self.decode)(&bytes) {
            Ok(restored) => Some(restored),
            Err(reason) => {
                tracing::warn!(key, reason, "snapshot ignored; replaying in full");
                None
            }
        }
    }

    /// True when going from `before` to `after` crossed a multiple of `every`.
    pub(crate) fn due(&self, before: u64, after: u64) -> bool {
        after / self.every > before / self.every
    }

    /// Writes a snapshot in the background.
    pub(crate) fn save(&self, id: &str, state: &A, position: Position, recent: &[CommandRecord]) {
        let Some(key) = key::<A>(id) else { return };
        let bytes = match (self.encode)(state, position, recent) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(key, error = %e, "snapshot not encodable");
                return;
            }
        };
        let kv = self.kv.clone();
        tokio::spawn(async move {
            if let Err(e) = kv.put(&key, bytes.into()).await {
                tracing::warn!(key, error = %e, "snapshot not written");
            }
        });
    }
}
