//! `jetsource project <name>`: one projection as its own process.

use crate::connection::Connection;
use crate::{Outcome, Result};
use jetsource::domain::directory::PersonDirectory;
use jetsource::domain::views::{OffersView, OrganizationsView};
use jetsource::projection::lease::Lease;
use jetsource::projection::{PoisonPolicy, Projection, ProjectionRunner, RunnerConfig};
use jetsource::{EventStore, StoreConfig};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The projection: `person_directory`, `organizations` or `offers`.
    name: String,
    #[command(flatten)]
    connection: Connection,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Stop (instead of going on) once an event had to be parked in DLQ.
    #[arg(long)]
    stop_on_poison: bool,
    /// Seconds a dead instance's lease lasts before a standby takes over.
    #[arg(long, default_value_t = 10)]
    lease_ttl: u64,
    /// Log filter (overridden by RUST_LOG).
    #[arg(long, default_value = "info")]
    log_level: String,
}

pub(crate) async fn run(args: Args) -> Result<Outcome> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match args.name.as_str() {
        "person_directory" => project(PersonDirectory, args).await,
        "organizations" => project(OrganizationsView, args).await,
        "offers" => project(OffersView, args).await,
        other => Err(format!(
            "no projection {other:?} (known: person_directory, organizations, offers)"
        )
        .into()),
    }
}

async fn project(projection: impl Projection, args: Args) -> Result<Outcome> {
    let client = args
        .connection
        .connect(&format!("jetsource project {}", args.name))
        .await?;
    let store = EventStore::open(
        client,
        StoreConfig {
            prefix: args.connection.prefix.clone(),
            ..Default::default()
        },
    )
    .await?;
    let config = RunnerConfig {
        batch: args.batch,
        poison: if args.stop_on_poison {
            PoisonPolicy::Stop
        } else {
            PoisonPolicy::Park
        },
        ..Default::default()
    };
    // Only the lease holder touches the consumer and the view; others wait.
    let key = format!("proj_{}", projection.name());
    let ttl = Duration::from_secs(args.lease_ttl.max(1));
    let lease = tokio::select! {
        lease = Lease::acquire(&store, &key, ttl) => lease?,
        _ = crate::wait_for_signal() => return Ok(Outcome::Done),
    };
    let runner = ProjectionRunner::new(store, projection, config).await?;
    tracing::info!(
        projection = args.name,
        checkpoint = runner.checkpoint(),
        "projection running"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut task = tokio::spawn(runner.run(stopped));
    let mut lost = lease.lost();
    let outcome: Result<()> = tokio::select! {
        _ = crate::wait_for_signal() => {
            let _ = stop.send(true);
            (&mut task).await?.map_err(Into::into)
        }
        _ = lost.wait_for(|l| *l) => {
            let _ = stop.send(true);
            let _ = (&mut task).await;
            Err(format!("lost the lease on {key}: another instance may be active").into())
        }
        result = &mut task => result?.map_err(Into::into),
    };
    lease.release().await;
    outcome?;
    tracing::info!(projection = args.name, "projection stopped");
    Ok(Outcome::Done)
}
