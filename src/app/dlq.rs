//! `jetsource dlq`: list, show, retry and discard parked events.

use super::connection::Connection;
use super::{Outcome, Result};
use crate::projection::dlq;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    connection: Connection,
    /// Print JSON (`list`: an array; `show`: the event with its headers).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// One line per parked event.
    List,
    /// A parked event in full: headers and body.
    Show {
        /// Its DLQ sequence (from `list`).
        dlq_seq: u64,
    },
    /// Rewind its projection to it and drop it from the DLQ (restart the projection
    /// to apply it again).
    Retry {
        /// Its DLQ sequence.
        dlq_seq: u64,
    },
    /// Drop it for good.
    Discard {
        /// Its DLQ sequence.
        dlq_seq: u64,
    },
    /// Drop every event one consumer parked (or, with `--all`, every consumer's);
    /// events waiting to be retried stay.
    Purge {
        /// The consumer, e.g. `proj_offers` or `saga_hiring`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        consumer: Option<String>,
        /// Every consumer's parked events.
        #[arg(long)]
        all: bool,
    },
}

pub(crate) async fn run(args: Args) -> Result<Outcome> {
    let store = args.connection.open_store("jetsource dlq").await?;
    match args.action {
        Action::List => {
            let parked = dlq::list(&store).await?;
            if args.json {
                let all: Vec<_> = parked.iter().map(summary).collect();
                println!("{}", serde_json::Value::from(all));
                return Ok(Outcome::Done);
            }
            let rows: Vec<Vec<String>> = parked
                .iter()
                .map(|p| {
                    vec![
                        p.dlq_seq.to_string(),
                        p.consumer.clone(),
                        p.seq.to_string(),
                        p.subject.clone(),
                        p.event_type.clone(),
                        p.error.clone(),
                    ]
                })
                .collect();
            super::print_table(
                &["DLQ_SEQ", "CONSUMER", "SEQ", "SUBJECT", "TYPE", "ERROR"],
                &rows,
            );
        }
        Action::Show { dlq_seq } => {
            let p = dlq::get(&store, dlq_seq)
                .await?
                .ok_or_else(|| format!("no parked event at {dlq_seq}"))?;
            if args.json {
                let mut shown = summary(&p);
                shown["headers"] = super::headers_json(&p.headers);
                shown["payload"] = String::from_utf8_lossy(&p.payload).into();
                println!("{shown}");
                return Ok(Outcome::Done);
            }
            for (name, values) in p.headers.iter() {
                for v in values {
                    println!("{}: {}", AsRef::<str>::as_ref(name), v.as_str());
                }
            }
            println!();
            println!("{}", String::from_utf8_lossy(&p.payload));
        }
        Action::Retry { dlq_seq } => {
            let p = dlq::retry(&store, dlq_seq).await?;
            println!(
                "{} rewound to before sequence {}; restart it to apply the event again",
                p.consumer, p.seq
            );
        }
        Action::Discard { dlq_seq } => {
            if !dlq::discard(&store, dlq_seq).await? {
                return Err(format!("no parked event at {dlq_seq}").into());
            }
            println!("discarded {dlq_seq}");
        }
        Action::Purge { consumer, .. } => {
            let purged = dlq::purge(&store, consumer.as_deref()).await?;
            println!("purged {purged} parked events");
        }
    }
    Ok(Outcome::Done)
}

fn summary(p: &dlq::Parked) -> serde_json::Value {
    serde_json::json!({
        "dlq_seq": p.dlq_seq,
        "consumer": p.consumer,
        "seq": p.seq,
        "subject": p.subject,
        "type": p.event_type,
        "error": p.error,
    })
}
