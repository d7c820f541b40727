//! Where every durable consumer on `EVENTS` stands (projections' `proj_*` and
//! sagas' `saga_*`): checkpoint, lag in events and seconds, redeliveries, parked
//! events.

use super::runner::{CHECKPOINTS, DLQ};
use crate::store::EventStore;
use futures::TryStreamExt;
use serde::Serialize;

/// One consumer's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumerStatus {
    /// `proj_<name>` or `saga_<name>`.
    pub consumer: String,
    /// Last stream sequence fully applied.
    pub checkpoint: u64,
    /// The event stream's last sequence.
    pub stream_last_seq: u64,
    /// Events of this consumer not yet applied.
    pub lag_events: u64,
    /// How far behind the newest event the oldest unapplied one was stored.
    pub lag_seconds: f64,
    /// Deliveries beyond the first so far outstanding.
    pub redelivered: usize,
    /// Events parked in `DLQ` by this consumer.
    pub parked: u64,
    /// The instance holding the consumer's lease (`<pid>/<instance id>`), if one
    /// is running it.
    pub active: Option<String>,
    /// A projection version queries no longer read (a rebuild replaced it): its
    /// lag means nothing and nobody needs to run it.
    pub retired: bool,
    /// Why the checkpoint no longer fits the event stream (recreated, restored to
    /// an earlier point, cut short by a power loss): a projection refuses to go
    /// on until it is rebuilt, a saga refuses to start. `None`: it fits.
    pub stream_changed: Option<String>,
}

/// What went wrong gathering the consumers' status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusErrorKind {
    /// The event stream or its info could not be read.
    Stream,
    /// The `DLQ` stream's subjects could not be counted.
    Dlq,
    /// The consumers could not be listed.
    Consumers,
}

impl std::fmt::Display for StatusErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StatusErrorKind::Stream => "the event stream could not be read",
            StatusErrorKind::Dlq => "the DLQ stream could not be read",
            StatusErrorKind::Consumers => "the consumers could not be listed",
        })
    }
}

/// Error of [`consumers`].
pub type StatusError = crate::error::Error<StatusErrorKind>;

fn failed<E: Into<crate::error::BoxError>>(kind: StatusErrorKind) -> impl FnOnce(E) -> StatusError {
    move |e| StatusError::with_source(kind, e)
}

/// The status of every durable consumer on the event stream.
pub async fn consumers(store: &EventStore) -> Result<Vec<ConsumerStatus>, StatusError> {
    gather(store, None).await
}

/// The status of one consumer (`proj_<name>`, `saga_<name>`), if it exists.
///
/// ```no_run
/// # async fn demo(store: jetsource::EventStore) {
/// if let Ok(Some(s)) = jetsource::projection::status::consumer(&store, "proj_person_directory").await {
///     println!("{} events behind", s.lag_events);
/// }
/// # }
/// ```
pub async fn consumer(
    store: &EventStore,
    name: &str,
) -> Result<Option<ConsumerStatus>, StatusError> {
    Ok(gather(store, Some(name)).await?.pop())
}

async fn gather(
    store: &EventStore,
    only: Option<&str>,
) -> Result<Vec<ConsumerStatus>, StatusError> {
    let js = store.jetstream();
    let mut stream = js
        .get_stream(&store.config().stream)
        .await
        .map_err(failed(StatusErrorKind::Stream))?;
    let info = stream
        .info()
        .await
        .map_err(failed(StatusErrorKind::Stream))?
        .clone();
    let last_seq = info.state.last_sequence;
    let last_ts = info.state.last_timestamp;
    let checkpoints = js.get_key_value(CHECKPOINTS).await.ok();
    let leases = js.get_key_value(super::lease::BUCKET).await.ok();
    let versions = super::versions::all_active(store).await.unwrap_or_default();
    let parked = match js.get_stream(DLQ).await {
        Ok(dlq) => {
            let mut per_subject = std::collections::HashMap::new();
            let mut subjects = dlq
                .info_with_subjects(format!("{}dlq.>", store.subjects().prefix()))
                .await
                .map_err(failed(StatusErrorKind::Dlq))?;
            while let Some((subject, count)) = subjects
                .try_next()
                .await
                .map_err(failed(StatusErrorKind::Dlq))?
            {
                per_subject.insert(subject, count as u64);
            }
            per_subject
        }
        Err(_) => Default::default(),
    };
    let mut out = Vec::new();
    let mut consumers = stream.consumers();
    while let Some(c) = consumers
        .try_next()
        .await
        .map_err(failed(StatusErrorKind::Consumers))?
    {
        let name = c.name.clone();
        if only.is_some_and(|only| only != name) {
            continue;
        }
        // A projection's checkpoint lives beside its rows; a saga's in `checkpoints`.
        let kv = match super::versions::bucket_of_consumer(&name) {
            Some(bucket) => js.get_key_value(&bucket).await.ok(),
            None => checkpoints.clone(),
        };
        let key = match super::versions::bucket_of_consumer(&name) {
            Some(_) => super::storage::CHECKPOINT_KEY,
            None => name.as_str(),
        };
        let stored = match &kv {
            Some(kv) => super::storage::read_checkpoint_at(kv, key).await.ok(),
            None => None,
        };
        let (checkpoint, stream_changed) = match stored {
            Some(stored) => (
                stored.value,
                super::storage::check_stream(store, &stored)
                    .await
                    .ok()
                    .flatten()
                    .map(|e| e.to_string()),
            ),
            None => (0, None),
        };
        let lag_events = c.num_pending + c.num_ack_pending as u64;
        let lag_seconds = if lag_events == 0 {
            0.0
        } else {
            match store.read_seq(checkpoint + 1).await {
                Ok(Some(e)) => e
                    .stored_at
                    .map(|t| {
                        (last_ts.unix_timestamp_nanos() as f64 / 1e9
                            - t.timestamp_nanos_opt().unwrap_or(0) as f64 / 1e9)
                            .max(0.0)
                    })
                    .unwrap_or(0.0),
                _ => 0.0,
            }
        };
        let active = match &leases {
            Some(kv) => kv
                .get(&name)
                .await
                .ok()
                .flatten()
                .map(|holder| String::from_utf8_lossy(&holder).into_owned()),
            None => None,
        };
        out.push(ConsumerStatus {
            active,
            retired: super::versions::is_retired(&name, &versions),
            parked: parked
                .get(&format!("{}dlq.{name}", store.subjects().prefix()))
                .copied()
                .unwrap_or(0),
            consumer: name,
            checkpoint,
            stream_last_seq: last_seq,
            lag_events,
            lag_seconds,
            redelivered: c.num_redelivered,
            stream_changed,
        });
    }
    out.sort_by(|a, b| a.consumer.cmp(&b.consumer));
    Ok(out)
}
