//! `qry.sagas.get {"saga","id"}`: one saga instance as the saga runner stored it,
//! so a client can follow a saga's effect. With `Jetsource-Min-Seq` it waits,
//! bounded, until the saga has handled that stream sequence: then every command
//! the saga sent in reaction is in the instance's log with its own `seq`, to wait
//! for in turn (or to read a view with).

use super::reply::{Rejection, Status};
use crate::projection::query::{valid_id, QueryError};
use crate::store::EventStore;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// Answers one `qry.sagas.get`.
pub(crate) async fn get(
    store: &EventStore,
    fields: &Map<String, Value>,
    min_seq: Option<u64>,
    wait: Duration,
) -> Result<Value, Rejection> {
    let text = |name: &str| -> Result<String, Rejection> {
        let value = fields.get(name).and_then(Value::as_str).ok_or_else(|| {
            Rejection::new(
                Status::Malformed,
                "malformed",
                format!("\"{name}\" must be a string"),
            )
        })?;
        valid_id(name, value)
            .map(str::to_string)
            .map_err(super::views::rejection)
    };
    let (saga, id) = (text("saga")?, text("id")?);
    if let Some(min_seq) = min_seq {
        wait_for(store, &saga, min_seq, wait).await?;
    }
    let instance = crate::saga::instances::show(store, &saga, &id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            let missing = QueryError::not_found(format!("no {saga} instance {id:?}"));
            super::views::rejection(missing)
        })?;
    serde_json::to_value(instance)
        .map_err(|e| Rejection::new(Status::Internal, "internal", e.to_string()))
}

fn unavailable(e: impl std::fmt::Display) -> Rejection {
    Rejection::new(Status::Unavailable, "store_unavailable", e)
}

/// Waits until saga `saga` has handled stream sequence `min_seq`, or 503.
async fn wait_for(
    store: &EventStore,
    saga: &str,
    min_seq: u64,
    timeout: Duration,
) -> Result<(), Rejection> {
    let checkpoints = crate::store::buckets::open_plain(store, crate::consumer::CHECKPOINTS)
        .await
        .map_err(unavailable)?;
    let key = format!("saga_{saga}");
    let deadline = Instant::now() + timeout;
    loop {
        let handled = checkpoints
            .get(&key)
            .await
            .map_err(unavailable)?
            .and_then(|b| crate::projection::storage::decode_number(&b))
            .unwrap_or(0);
        if handled >= min_seq {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Rejection::new(
                Status::Unavailable,
                "saga_behind",
                format!("saga {saga} has handled sequence {handled}, not yet {min_seq}; retry"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
