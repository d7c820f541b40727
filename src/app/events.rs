//! `jetsource events <aggregate> <id>`: an aggregate's history as today's code
//! reads it (upcast), a table or (`--json`) an array of events; `--raw` shows
//! the stored form beside each.

use super::connection::Connection;
use super::{Outcome, Result};
use crate::aggregate::EventForm;
use crate::store::RecordedEvent;
use futures::TryStreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Aggregate type, e.g. `person`.
    aggregate: String,
    /// Aggregate id.
    id: String,
    /// Only events after this stream sequence.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
    /// Also show each event as stored (type, schema, body) beside today's form.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    connection: Connection,
}

/// One aggregate's upcasting: a stored event to today's ([`crate::aggregate::upcast`]).
type UpcastFn = fn(EventForm) -> std::result::Result<Vec<EventForm>, String>;

/// Each registered aggregate's upcasting, by aggregate name.
pub(crate) type Upcasts = HashMap<&'static str, UpcastFn>;

pub(crate) async fn run(args: Args, upcasts: &Upcasts) -> Result<Outcome> {
    let store = args.connection.open_store("jetsource events").await?;
    let mut events = store.stream_aggregate(&args.aggregate, &args.id, args.after);
    let upcast = upcasts.get(args.aggregate.as_str());
    let mut all = Vec::new();
    while let Some(e) = events.try_next().await? {
        all.extend(rows_of(&e, upcast, args.raw)?);
    }
    if args.json {
        println!("{}", Value::from(all));
        return Ok(Outcome::Done);
    }
    if all.is_empty() {
        eprintln!("no events for {} {}", args.aggregate, args.id);
        return Ok(Outcome::Done);
    }
    let mut header = vec!["SEQ", "VERSION", "TYPE", "OCCURRED_AT", "DATA"];
    if args.raw {
        header.push("STORED");
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|e| {
            let text = |field: &str| match &e[field] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            header.iter().map(|h| text(&h.to_lowercase())).collect()
        })
        .collect();
    super::print_table(&header, &rows);
    Ok(Outcome::Done)
}

/// One stored event as today's events (several where an upcaster splits it, the
/// stored form itself for an aggregate this app does not register), each with
/// the stored form under `stored` when `raw`.
fn rows_of(e: &RecordedEvent, upcast: Option<&UpcastFn>, raw: bool) -> Result<Vec<Value>> {
    let stored = EventForm::new(e.event_type.clone(), e.schema, e.body()?);
    let today = match upcast {
        Some(upcast) => upcast(stored.clone()).map_err(|reason| {
            format!(
                "event {} ({}) does not upcast: {reason}",
                e.seq, e.event_type
            )
        })?,
        None => vec![stored.clone()],
    };
    Ok(today
        .into_iter()
        .map(|form| {
            let mut row = json!({
                "seq": e.seq,
                "version": e.version,
                "type": form.event_type,
                "schema": form.schema,
                "occurred_at": e.occurred_at,
                "event_id": e.event_id,
                "correlation_id": e.metadata.correlation_id,
                "data": form.body,
            });
            if raw {
                row["stored"] =
                    json!({"type": stored.event_type, "schema": stored.schema, "data": stored.body});
            }
            row
        })
        .collect())
}
