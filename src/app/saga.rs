//! `jetsource saga <name>`: one saga as its own process (one active per saga through
//! a lease, others wait as standbys), and `jetsource sagas`: its instances.

use super::active::Ended;
use super::connection::Connection;
use super::{Outcome, Result};
use crate::client::Client;
use crate::saga::{instances, Saga, SagaConfig, SagaErrorKind, SagaRunner};
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
    args.standby
        .telemetry
        .init_logging(&format!("jetsource saga {}", args.name))?;
    let title = format!("jetsource saga {}", args.name);
    let store = args.connection.open_store(&title).await?;
    let telemetry = args.standby.telemetry.start("saga", store.client()).await?;
    let _watch = telemetry.watch_consumer(&store, &format!("saga_{}", args.name));
    let client = Client::new(store.client().clone(), args.connection.subjects());
    let key = format!("saga_{}", args.name);
    let ttl = args.standby.lease_ttl();
    let config = SagaConfig {
        command_timeout: Duration::from_secs(args.command_timeout.max(1)),
        ..Default::default()
    };
    // Only the lease holder runs; others (and a holder that lost it) stand by.
    loop {
        let Some(lease) = super::active::take_lease(&store, &key, ttl, &telemetry).await? else {
            break;
        };
        let _census = telemetry.census(&store, &args.name);
        // A server that is away is waited for; a stream that changed ends the
        // process with why (a saga cannot be rebuilt the way a view can).
        let start = || async {
            match SagaRunner::new(store.clone(), client.clone(), saga.clone(), config.clone()).await
            {
                Err(e) if matches!(e.kind(), SagaErrorKind::StreamChanged(_)) => Ok(Err(e)),
                started => started.map(Ok),
            }
        };
        let Some(started) = super::active::until_ok("starting the saga", start).await else {
            lease.release().await;
            return Ok(Outcome::Done);
        };
        let runner = match started {
            Ok(runner) => runner,
            Err(e) => {
                lease.release().await;
                return Err(e.into());
            }
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
    telemetry.stopping();
    tracing::info!(saga = args.name, "saga stopped");
    Ok(Outcome::Done)
}

#[derive(clap::Args, Debug)]
pub(crate) struct ListArgs {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    connection: Connection,
    /// Print JSON (`list`: an array of instances).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// One row per instance: id, outcome (or `running`), stage, next deadline, last change.
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
    /// Remove the records of instances that finished longer ago than
    /// `--finished-before` (running ones stay); prints the ids removed.
    Prune {
        /// The saga, e.g. `hiring`.
        saga: String,
        /// Age of the last change, e.g. `30d`, `12h`.
        #[arg(long, value_parser = super::connection::parse_duration)]
        finished_before: std::time::Duration,
    },
}

pub(crate) async fn list(args: ListArgs) -> Result<Outcome> {
    let store = args.connection.open_store("jetsource sagas").await?;
    match args.action {
        Action::List { saga, running } => {
            let listed: Vec<_> = instances::list(&store, &saga)
                .await?
                .into_iter()
                .filter(|i| !running || i.outcome.is_none())
                .collect();
            if args.json {
                println!("{}", serde_json::to_string(&listed)?);
                return Ok(Outcome::Done);
            }
            let rows: Vec<Vec<String>> = listed
                .iter()
                .map(|i| {
                    let next = i.deadlines.values().min();
                    vec![
                        i.id.clone(),
                        i.outcome.clone().unwrap_or_else(|| "running".into()),
                        if i.stage.is_empty() {
                            "-".into()
                        } else {
                            i.stage.clone()
                        },
                        next.map_or("-".into(), |at| {
                            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        }),
                        i.updated_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ]
                })
                .collect();
            super::print_table(
                &["ID", "OUTCOME", "STAGE", "NEXT_DEADLINE", "UPDATED"],
                &rows,
            );
            Ok(Outcome::Done)
        }
        Action::Show { saga, id } => match instances::show(&store, &saga, &id).await? {
            Some(i) => {
                println!("{}", serde_json::to_string_pretty(&i)?);
                Ok(Outcome::Done)
            }
            None => Err(format!("no {saga} instance {id:?}").into()),
        },
        Action::Prune {
            saga,
            finished_before,
        } => {
            let age = chrono::Duration::from_std(finished_before)
                .map_err(|e| format!("--finished-before: {e}"))?;
            let pruned = instances::prune(&store, &saga, chrono::Utc::now() - age).await?;
            if args.json {
                println!("{}", serde_json::to_string(&pruned)?);
            } else {
                for id in &pruned {
                    println!("{id}");
                }
                eprintln!("{} finished {saga} instances removed", pruned.len());
            }
            Ok(Outcome::Done)
        }
    }
}
