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
}

pub(crate) async fn run(args: Args) -> Result<Outcome> {
    let store = args.connection.open_store("jetsource dlq").await?;
    match args.action {
        Action::List => {
            let parked = dlq::list(&store).await?;
            if parked.is_empty() {
                println!("no parked events");
            }
            for p in parked {
                println!(
                    "{}\t{}\tseq {}\t{}\t{}\t{}",
                    p.dlq_seq, p.consumer, p.seq, p.subject, p.event_type, p.error
                );
            }
        }
        Action::Show { dlq_seq } => {
            let p = dlq::get(&store, dlq_seq)
                .await?
                .ok_or_else(|| format!("no parked event at {dlq_seq}"))?;
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
    }
    Ok(Outcome::Done)
}
