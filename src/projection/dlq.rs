//! Parked events in stream `DLQ`: list, show, retry, discard, purge.
//!
//! Retrying a projection's event hands it to the projection where it stands: the
//! event moves to `dlq.retry.<consumer>`, and the running projection (or the next
//! one to start) applies it on its next idle step, after everything it has applied
//! since, and drops it (or parks it again with the new error). Nothing is rewound,
//! so the running instance goes on undisturbed; a row a later event wrote keeps
//! that event's value. Retrying a saga's event rewinds the saga's checkpoint to
//! just before it; the running saga picks the rewind up and handles the events
//! again (an instance skips what it has already handled).

use super::runner::{CHECKPOINTS, DLQ};
use crate::store::EventStore;
use async_nats::HeaderMap;
use bytes::Bytes;

/// A parked event.
#[derive(Debug, Clone)]
pub struct Parked {
    /// Its sequence in `DLQ`.
    pub dlq_seq: u64,
    /// The consumer that parked it (`proj_<name>`).
    pub consumer: String,
    /// Its sequence in `EVENTS`.
    pub seq: u64,
    /// Its event subject.
    pub subject: String,
    /// Its event type.
    pub event_type: String,
    /// Why it failed.
    pub error: String,
    /// Its headers as parked.
    pub headers: HeaderMap,
    /// Its body.
    pub payload: Bytes,
}

/// A DLQ operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DlqError(String);

fn err(e: impl std::fmt::Display) -> DlqError {
    DlqError(e.to_string())
}

async fn stream(
    store: &EventStore,
) -> Result<Option<async_nats::jetstream::stream::Stream>, DlqError> {
    match store.jetstream().get_stream(DLQ).await {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(_)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(err(e)),
    }
}

/// One parked event, if `dlq_seq` holds one.
pub async fn get(store: &EventStore, dlq_seq: u64) -> Result<Option<Parked>, DlqError> {
    let Some(stream) = stream(store).await? else {
        return Ok(None);
    };
    let Ok(raw) = stream.get_raw_message(dlq_seq).await else {
        return Ok(None);
    };
    if raw.subject.starts_with(&retry_prefix(store)) {
        return Ok(None); // Handed back already: its projection owns it now.
    }
    Ok(Some(Parked::from_message(dlq_seq, raw)))
}

impl Parked {
    /// Reads a `DLQ` message's `Jetsource-Dlq-*` headers (see `consumer::park`).
    pub(crate) fn from_message(
        dlq_seq: u64,
        raw: async_nats::jetstream::message::StreamMessage,
    ) -> Parked {
        let h = raw.headers;
        let text = |name: &str| {
            h.get(name)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        Parked {
            dlq_seq,
            consumer: text("Jetsource-Dlq-Consumer"),
            seq: text("Jetsource-Dlq-Seq").parse().unwrap_or(0),
            subject: text("Jetsource-Dlq-Subject"),
            event_type: text(crate::store::headers::EVENT_TYPE),
            error: text("Jetsource-Dlq-Error"),
            payload: raw.payload,
            headers: h,
        }
    }
}

/// Every parked event, oldest first.
pub async fn list(store: &EventStore) -> Result<Vec<Parked>, DlqError> {
    let Some(mut stream) = stream(store).await? else {
        return Ok(Vec::new());
    };
    let state = stream.info().await.map_err(err)?.state.clone();
    let mut parked = Vec::new();
    if state.messages == 0 {
        return Ok(parked);
    }
    for dlq_seq in state.first_sequence..=state.last_sequence {
        if let Some(p) = get(store, dlq_seq).await? {
            parked.push(p);
        }
    }
    Ok(parked)
}

/// Drops a parked event for good; false if there was none.
pub async fn discard(store: &EventStore, dlq_seq: u64) -> Result<bool, DlqError> {
    let Some(stream) = stream(store).await? else {
        return Ok(false);
    };
    Ok(stream.delete_message(dlq_seq).await.is_ok())
}

/// Drops every event `consumer` parked (every consumer's with `None`) and returns
/// how many; events waiting to be retried (`dlq.retry.…`) stay.
///
/// ```no_run
/// # async fn demo(store: jetsource::EventStore) {
/// let dropped = jetsource::projection::dlq::purge(&store, Some("proj_offers")).await.unwrap();
/// # }
/// ```
pub async fn purge(store: &EventStore, consumer: Option<&str>) -> Result<u64, DlqError> {
    let Some(stream) = stream(store).await? else {
        return Ok(0);
    };
    let prefix = store.subjects().prefix();
    let filter = match consumer {
        // A name is one subject token: no wildcard may widen the purge.
        Some(c) if c.is_empty() || c.contains(['.', '*', '>', ' ', '\t']) => {
            return Err(DlqError(format!("{c:?} is not a consumer name")))
        }
        Some(c) => format!("{prefix}dlq.{c}"),
        None => format!("{prefix}dlq.*"),
    };
    let purged = stream.purge().filter(filter).await.map_err(err)?;
    Ok(purged.purged)
}

fn retry_prefix(store: &EventStore) -> String {
    format!("{}dlq.retry.", store.subjects().prefix())
}

/// Where a retried event of projection consumer `consumer` waits for it.
///
/// ```no_run
/// # fn demo(store: jetsource::EventStore) {
/// assert_eq!(jetsource::projection::dlq::retry_subject(&store, "proj_offers"), "dlq.retry.proj_offers");
/// # }
/// ```
pub fn retry_subject(store: &EventStore, consumer: &str) -> String {
    format!("{}{consumer}", retry_prefix(store))
}

/// Sends a parked event back to its projection or saga (see the module docs) and
/// drops it from `DLQ`.
pub async fn retry(store: &EventStore, dlq_seq: u64) -> Result<Parked, DlqError> {
    let parked = get(store, dlq_seq)
        .await?
        .ok_or_else(|| DlqError(format!("no parked event at DLQ sequence {dlq_seq}")))?;
    if super::versions::bucket_of_consumer(&parked.consumer).is_some() {
        store
            .jetstream()
            .publish_with_headers(
                retry_subject(store, &parked.consumer),
                parked.headers.clone(),
                parked.payload.clone(),
            )
            .await
            .map_err(err)?
            .await
            .map_err(err)?;
        discard(store, dlq_seq).await?;
        return Ok(parked);
    }
    let checkpoints = store
        .jetstream()
        .get_key_value(CHECKPOINTS)
        .await
        .map_err(err)?;
    let rewound = parked.seq.saturating_sub(1);
    let current = checkpoints
        .get(&parked.consumer)
        .await
        .map_err(err)?
        .and_then(|b| super::storage::decode_number::<u64>(&b))
        .unwrap_or(0);
    if current > rewound {
        checkpoints
            .put(&parked.consumer, super::storage::encode_number(rewound))
            .await
            .map_err(err)?;
    }
    let events = store
        .jetstream()
        .get_stream(&store.config().stream)
        .await
        .map_err(err)?;
    let _ = events.delete_consumer(&parked.consumer).await;
    discard(store, dlq_seq).await?;
    Ok(parked)
}
