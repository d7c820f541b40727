//! Parked events in stream `DLQ`: list, show, retry, discard.
//!
//! Retrying rewinds the consumer's checkpoint to just before the parked event and
//! removes the consumer, so the projection (once restarted; a running one notices
//! the checkpoint move and stops) applies it again and replays what followed.
//! Replays change nothing a later event already wrote, so this is safe.

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
    let h = raw.headers;
    let text = |name: &str| {
        h.get(name)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default()
    };
    Ok(Some(Parked {
        dlq_seq,
        consumer: text("Jetsource-Dlq-Consumer"),
        seq: text("Jetsource-Dlq-Seq").parse().unwrap_or(0),
        subject: text("Jetsource-Dlq-Subject"),
        event_type: text(crate::store::headers::EVENT_TYPE),
        error: text("Jetsource-Dlq-Error"),
        payload: raw.payload,
        headers: h,
    }))
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

/// Sends a parked event back to its projection (see the module docs) and drops it
/// from `DLQ`.
pub async fn retry(store: &EventStore, dlq_seq: u64) -> Result<Parked, DlqError> {
    let parked = get(store, dlq_seq)
        .await?
        .ok_or_else(|| DlqError(format!("no parked event at DLQ sequence {dlq_seq}")))?;
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
        .and_then(|b| String::from_utf8_lossy(&b).parse::<u64>().ok())
        .unwrap_or(0);
    if current > rewound {
        checkpoints
            .put(&parked.consumer, rewound.to_string().into_bytes().into())
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
