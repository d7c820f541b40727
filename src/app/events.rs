//! `jetsource events <aggregate> <id>`: an aggregate's history, a table or
//! (`--json`) an array of events.

use super::connection::Connection;
use super::{Outcome, Result};
use futures::TryStreamExt;

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
    #[command(flatten)]
    connection: Connection,
}

pub(crate) async fn run(args: Args) -> Result<Outcome> {
    let store = args.connection.open_store("jetsource events").await?;
    let mut events = store.stream_aggregate(&args.aggregate, &args.id, args.after);
    let mut all = Vec::new();
    while let Some(e) = events.try_next().await? {
        all.push(serde_json::json!({
            "seq": e.seq,
            "version": e.version,
            "type": e.event_type,
            "occurred_at": e.occurred_at,
            "event_id": e.event_id,
            "correlation_id": e.metadata.correlation_id,
            "data": e.body()?,
        }));
    }
    if args.json {
        println!("{}", serde_json::Value::from(all));
        return Ok(Outcome::Done);
    }
    if all.is_empty() {
        eprintln!("no events for {} {}", args.aggregate, args.id);
        return Ok(Outcome::Done);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|e| {
            let text = |field: &str| match &e[field] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            ["seq", "version", "type", "occurred_at", "data"]
                .map(text)
                .to_vec()
        })
        .collect();
    super::print_table(&["SEQ", "VERSION", "TYPE", "OCCURRED_AT", "DATA"], &rows);
    Ok(Outcome::Done)
}
