//! `jetsource saga <name>`: one saga as its own process (one active per saga through
//! a lease, others wait as standbys), and `jetsource sagas`: its instances.

use super::active::Ended;
use super::connection::Connection;
use super::{Outcome, Result};
use crate::client::Client;
use crate::projection::lease::Lease;
use crate::saga::{instances, Saga, SagaConfig, SagaRunner};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The saga's name.
    name: String,
    #[command(flatten)]
    connection: Connection,
    /// Seconds to wait for a command's reply before resending it.
    #[arg(long, default_value_t = 5)]
    command_timeout: u64,
    #[command(flatten)]
    standby: super::Standby,
}

impl Args {
    /// The saga asked for.
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// Runs `saga` as a process: holds its lease while active, stands by otherwise.
pub(super) async fn run<S: Saga + Clone>(saga: S, args: Args) -> Result<Outcome> {
    super::init_logging(&args.standby.log_level)?;
    let title = format!("jetsource saga {}", args.name);
    let store = args.connection.open_store(&title).await?;
    let client = Client::new(store.client().clone(), args.connection.subjects());
    let key = format!("saga_{}", args.name);
    let ttl = args.standby.lease_ttl();
    let config = SagaConfig {
        command_timeout: Duration::from_secs(args.command_timeout.max(1)),
        ..Default::default()
    };
    // Only the lease holder runs; others (and a holder that lost it) stand by.
    loop {
        let lease = tokio::select! {
            lease = Lease::acquire(&store, &key, ttl) => lease?,
            _ = super::wait_for_signal() => return Ok(Outcome::Done),
        };
        let start = || SagaRunner::new(store.clone(), client.clone(), saga.clone(), config.clone());
        let Some(runner) = super::active::until_ok("starting the saga", start).await else {
            lease.release().await;
            return Ok(Outcome::Done);
        };
        tracing::info!(
            saga = args.name,
            checkpoint = runner.checkpoint(),
            "saga running"
        );
        let run = |stopped| runner.run(stopped);
        match super::active::while_holding(lease, &key, run, std::future::pending()).await? {
            Ended::LeaseLost => continue,
            Ended::Done | Ended::Interrupted => break,
        }
    }
    tracing::info!(saga = args.name, "saga stopped");
    Ok(Outcome::Done)
}

#[derive(clap::Args, Debug)]
pub(crate) struct ListArgs {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// One line per instance: id, outcome (or `running`), stage, last change.
    List {
        /// The saga, e.g. `hiring`.
        saga: String,
        /// Only instances still running.
        #[arg(long)]
        running: bool,
    },
    /// One instance as JSON: state, pending deadlines, the log of inputs and commands.
    Show {
        /// The saga, e.g. `hiring`.
        saga: String,
        /// The instance (for hiring: the offer id).
        id: String,
    },
}

pub(crate) async fn list(args: ListArgs) -> Result<Outcome> {
    let store = args.connection.open_store("jetsource sagas").await?;
    match args.action {
        Action::List { saga, running } => {
            for i in instances::list(&store, &saga).await? {
                if running && i.outcome.is_some() {
                    continue;
                }
                println!(
                    "{}\t{}\t{}\t{}",
                    i.id,
                    i.outcome.as_deref().unwrap_or("running"),
                    i.state["stage"].as_str().unwrap_or("-"),
                    i.updated_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
            }
            Ok(Outcome::Done)
        }
        Action::Show { saga, id } => match instances::show(&store, &saga, &id).await? {
            Some(i) => {
                println!("{}", serde_json::to_string_pretty(&i)?);
                Ok(Outcome::Done)
            }
            None => Err(format!("no {saga} instance {id:?}").into()),
        },
    }
}
