//! Saga instance records in KV `sagas`: what the runner writes, what `jetsource
//! sagas` lists and shows. Finished instances stay, marked with their outcome.

use super::BUCKET;
use crate::consumer::{js_err, JetStreamError, JetStreamErrorKind};
use crate::store::EventStore;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Entries kept in an instance's log (the oldest are dropped).
pub const LOG_LIMIT: usize = 64;

/// One saga instance as stored under `<saga>.<instance>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance<S> {
    /// The saga's name.
    pub saga: String,
    /// The instance (correlation key).
    pub id: String,
    /// The saga's own state.
    pub state: S,
    /// Where it stands ([`Saga::stage`](super::Saga::stage)); empty in records
    /// written before stages were kept.
    #[serde(default)]
    pub stage: String,
    /// `None` while running; the outcome once finished.
    pub outcome: Option<String>,
    /// Correlation id of the event that started it; every command it sends carries it.
    pub correlation_id: Option<String>,
    /// The last event (stream sequence in `EVENTS`) it handled.
    pub seq: u64,
    /// The last fired deadline (sequence in `TIMERS`) it handled.
    pub timer_seq: u64,
    /// Deadlines set and not yet passed or cancelled.
    pub deadlines: BTreeMap<String, DateTime<Utc>>,
    /// When it started (runner's clock).
    pub started_at: DateTime<Utc>,
    /// When it last changed (runner's clock).
    pub updated_at: DateTime<Utc>,
    /// What happened, oldest first.
    pub log: Vec<LogEntry>,
}

/// One handled input and the commands it sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When (runner's clock).
    pub at: DateTime<Utc>,
    /// What came in.
    pub input: String,
    /// What went out and how it was answered.
    pub sent: Vec<Sent>,
}

/// A command a step sent and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    /// The step.
    pub step: String,
    /// `cmd.<aggregate>.<Command>` and the aggregate id.
    pub command: String,
    /// Its deterministic command id.
    pub command_id: String,
    /// `accepted seq 42` or `refused 409 position_not_open`.
    pub reply: String,
    /// The stream sequence of the command's last event, when it was accepted:
    /// what to wait for next (`Jetsource-Min-Seq` on `qry.sagas.get` or a view).
    #[serde(default)]
    pub seq: Option<u64>,
}

impl<S: Default> Instance<S> {
    pub(crate) fn new(saga: &str, id: &str, now: DateTime<Utc>) -> Instance<S> {
        Instance {
            saga: saga.to_string(),
            id: id.to_string(),
            state: S::default(),
            stage: String::new(),
            outcome: None,
            correlation_id: None,
            seq: 0,
            timer_seq: 0,
            deadlines: BTreeMap::new(),
            started_at: now,
            updated_at: now,
            log: Vec::new(),
        }
    }
}

/// Why `instance` cannot name a saga instance (it must be an id, see
/// [`validate_id`](crate::subjects::validate_id)): the runner parks the event
/// rather than stall on a record it cannot store.
pub(crate) fn check_instance_id(instance: &str) -> Result<(), String> {
    crate::subjects::validate_id(instance).map_err(|reason| {
        let shown: String = instance.chars().take(80).collect();
        format!("saga instance id {shown:?} is unusable: it {reason}")
    })
}

/// The key of an instance in `sagas`.
pub fn key(saga: &str, instance: &str) -> String {
    format!("{saga}.{instance}")
}

/// The bucket and the keys of `saga`'s instances; `None` before any saga ran.
async fn keys_of(
    store: &EventStore,
    saga: &str,
) -> Result<Option<(async_nats::jetstream::kv::Store, Vec<String>)>, JetStreamError> {
    let Ok(bucket) = store.jetstream().get_key_value(BUCKET).await else {
        return Ok(None);
    };
    let prefix = format!("{saga}.");
    let keys: Vec<String> = bucket
        .keys()
        .await
        .map_err(js_err)?
        .try_filter(|k| futures::future::ready(k.starts_with(&prefix)))
        .try_collect()
        .await
        .map_err(js_err)?;
    Ok(Some((bucket, keys)))
}

/// Every instance of `saga` (finished ones included), ordered by start time.
///
/// ```no_run
/// # async fn demo(store: jetsource::EventStore) {
/// for i in jetsource::saga::instances::list(&store, "hiring").await.unwrap() {
///     println!("{} {:?}", i.id, i.outcome);
/// }
/// # }
/// ```
pub async fn list(store: &EventStore, saga: &str) -> Result<Vec<Instance<Value>>, JetStreamError> {
    let Some((bucket, keys)) = keys_of(store, saga).await? else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for key in keys {
        if let Some(bytes) = bucket.get(&key).await.map_err(js_err)? {
            match serde_json::from_slice(&bytes) {
                Ok(instance) => found.push(instance),
                Err(e) => tracing::warn!(key, error = %e, "unreadable saga instance"),
            }
        }
    }
    found.sort_by_key(|i: &Instance<Value>| i.started_at);
    Ok(found)
}

/// Removes the records of `saga`'s instances that finished before `cutoff` (by
/// their last change) and returns their ids; running instances, and finished ones
/// with a deadline still pending, stay whatever their age. A record that changes while this runs is kept (the removal expects
/// the revision it read). An event that later names a removed instance starts it
/// afresh, as if it had never run: keep records for longer than such an event
/// can arrive.
///
/// ```no_run
/// # async fn demo(store: jetsource::EventStore) {
/// let month_ago = chrono::Utc::now() - chrono::Duration::days(30);
/// let gone = jetsource::saga::instances::prune(&store, "hiring", month_ago).await.unwrap();
/// println!("{} finished instances removed", gone.len());
/// # }
/// ```
pub async fn prune(
    store: &EventStore,
    saga: &str,
    cutoff: DateTime<Utc>,
) -> Result<Vec<String>, JetStreamError> {
    let Some((bucket, keys)) = keys_of(store, saga).await? else {
        return Ok(Vec::new());
    };
    let mut pruned = Vec::new();
    for key in keys {
        let Some(entry) = bucket.entry(&key).await.map_err(js_err)? else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<Instance<Value>>(&entry.value) else {
            continue;
        };
        if record.outcome.is_none() || !record.deadlines.is_empty() || record.updated_at >= cutoff {
            continue;
        }
        // A purge, not a delete: the record's history goes with it.
        if bucket
            .purge_expect_revision(&key, Some(entry.revision))
            .await
            .is_ok()
        {
            pruned.push(record.id);
        }
    }
    Ok(pruned)
}

/// One instance, if it exists.
///
/// ```no_run
/// # async fn demo(store: jetsource::EventStore) {
/// let offer = jetsource::saga::instances::show(&store, "hiring", "offer-1").await.unwrap();
/// # }
/// ```
pub async fn show(
    store: &EventStore,
    saga: &str,
    instance: &str,
) -> Result<Option<Instance<Value>>, JetStreamError> {
    let Ok(bucket) = store.jetstream().get_key_value(BUCKET).await else {
        return Ok(None);
    };
    match bucket.get(key(saga, instance)).await.map_err(js_err)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            JetStreamError::with_source(
                JetStreamErrorKind::Unreadable(format!("saga instance {saga}.{instance}")),
                e,
            )
        }),
        None => Ok(None),
    }
}
