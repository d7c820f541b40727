//! `jetsource events <aggregate> <id>`: an aggregate's history, one JSON line per event.

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
    #[command(flatten)]
    connection: Connection,
}

pub(crate) async fn run(args: Args) -> Result<Outcome> {
    let store = args.connection.open_store("jetsource events").await?;
    let mut events = store.stream_aggregate(&args.aggregate, &args.id, args.after);
    let mut count = 0;
    while let Some(e) = events.try_next().await? {
        let line = serde_json::json!({
            "seq": e.seq,
            "version": e.version,
            "type": e.event_type,
            "occurred_at": e.occurred_at,
            "event_id": e.event_id,
            "correlation_id": e.metadata.correlation_id,
            "data": e.body()?,
        });
        println!("{line}");
        count += 1;
    }
    if count == 0 {
        eprintln!("no events for {} {}", args.aggregate, args.id);
    }
    Ok(Outcome::Done)
}
