//! `jetsource node`: the command and query service until SIGINT/SIGTERM.

use super::connection::Connection;
use super::{Outcome, Result};
use crate::nats_server::Durability;
use crate::node::NodeConfig;
use crate::store::GroupCommitConfig;
use crate::{EventStore, Policy, StoreConfig};
use std::time::Duration;

/// Requests queued per served subject before the client drops more.
const QUEUED_PER_SUBJECT: usize = 1024;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    connection: Connection,
    /// How the server is run: `safe` (sync_interval: always, or R3) or `fast`
    /// (lazy fsync); tunes group commit.
    #[arg(long, env = "JETSOURCE_DURABILITY", default_value = "safe")]
    durability: Durability,
    /// Replicas of the streams and buckets jetsource creates (3 in a cluster).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// How long a command id is remembered for idempotent retries, in seconds (the
    /// event stream's duplicate window; widened, never narrowed, on start).
    #[arg(long, default_value_t = 600)]
    idempotency_window: u64,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_body_bytes: usize,
    #[command(flatten)]
    telemetry: super::telemetry::Telemetry,
    /// Snapshot every N events of an aggregate.
    #[arg(long, default_value_t = 100)]
    snapshot_every: u64,
    /// Who may send which command and ask which query (see `jetsource policy`).
    /// Without one every caller may do everything: development only, and the
    /// node says so when it starts.
    #[arg(long, env = "JETSOURCE_POLICY")]
    policy: Option<std::path::PathBuf>,
    /// Seconds to let in-flight commands finish on shutdown.
    #[arg(long, default_value_t = 10)]
    grace: u64,
}

pub(super) async fn run(app: &super::App, args: Args) -> Result<Outcome> {
    args.telemetry.init_logging("jetsource node")?;
    let policy = match &args.policy {
        Some(path) => Some(std::sync::Arc::new(Policy::load(path)?)),
        None => {
            tracing::warn!(
                "no --policy: every caller may send every command and query, and a client \
                 may name any actor (fine for development on loopback, never in production)"
            );
            None
        }
    };
    // Requests beyond the in-flight limit wait in each endpoint's subscription
    // queue; bounding it (async-nats' default is 65,536 messages) bounds the
    // node's memory: past it the client drops requests (logged as a slow
    // consumer) and their senders time out and retry.
    let options = async_nats::ConnectOptions::new().subscription_capacity(QUEUED_PER_SUBJECT);
    let client = args
        .connection
        .connect_with("jetsource node", options)
        .await?;
    let telemetry = args.telemetry.start("node", &client).await?;
    let store = EventStore::open(
        client,
        StoreConfig {
            prefix: args.connection.prefix.clone(),
            replicas: args.replicas,
            group_commit: GroupCommitConfig::for_durability(args.durability),
            duplicate_window: Duration::from_secs(args.idempotency_window),
            ..Default::default()
        },
    )
    .await?;
    let config = NodeConfig {
        max_body_bytes: args.max_body_bytes,
        policy,
        ..Default::default()
    };
    let node = app
        .node(store, config, args.snapshot_every)
        .await?
        .start()
        .await?;
    tracing::info!(url = %args.connection.url(), durability = %args.durability, "jetsource node ready");
    telemetry.serving();
    super::wait_for_signal().await;
    telemetry.stopping();
    tracing::info!("shutting down: no new requests, finishing the ones in flight");
    node.shutdown(Duration::from_secs(args.grace)).await;
    Ok(Outcome::Done)
}
