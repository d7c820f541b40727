//! The app builder: a domain's aggregates, projections, queries and sagas in, the
//! whole command line out (`up`, `node`, `project`, `saga`, `sagas`, `dlq`, `send`,
//! `query`, `events`, `status`, `console`, `policy`, `nats-server`), with the process runtime
//! behind it: leases and standbys, riding out outages, following a view's version
//! switch, rebuilds with progress, one signal listener and graceful shutdown.
//!
//! ```no_run
//! # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
//! # #[serde(tag = "type", content = "data")]
//! # enum CounterEvent { Incremented { by: u32 } }
//! # impl jetsource::DomainEvent for CounterEvent {}
//! # #[derive(Debug, thiserror::Error)] #[error("overflow")] struct Overflow;
//! # impl jetsource::DomainError for Overflow { fn code(&self) -> &'static str { "overflow" } }
//! # #[derive(Debug, serde::Deserialize)] enum CounterCommand { Increment { by: u32 } }
//! # #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)] struct Counter { value: u32 }
//! # impl jetsource::Aggregate for Counter {
//! #     const NAME: &'static str = "counter";
//! #     type Command = CounterCommand; type Event = CounterEvent; type Error = Overflow;
//! #     fn handle(&self, c: &CounterCommand) -> Result<Vec<CounterEvent>, Overflow> { let CounterCommand::Increment { by } = c; Ok(vec![CounterEvent::Incremented { by: *by }]) }
//! #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Incremented { by } => self.value += by } }
//! # }
//! # impl jetsource::snapshot::Snapshot for Counter {}
//! fn main() -> std::process::ExitCode {
//!     jetsource::App::new("counters")
//!         .aggregate::<Counter>()
//!         .run()
//! }
//! ```
//!
//! One file per subcommand, as in the binary it came from; errors become one line
//! on stderr and an exit code (1 for errors, 2 when a command or query was
//! rejected).

mod active;
mod connection;
mod console;
mod dlq;
mod events;
mod node;
mod policy;
mod project;
mod saga;
mod send;
mod status;
mod telemetry;
mod up;

pub use up::Stack;

use crate::aggregate::{Aggregate, DomainError};
use crate::node::Node;
use crate::projection::Projection;
use crate::saga::Saga;
use crate::snapshot::Snapshot;
use crate::store::EventStore;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use futures::future::{BoxFuture, LocalBoxFuture};
use serde::de::DeserializeOwned;
use std::process::ExitCode;
use std::sync::Arc;

/// A domain's parts, and the command line that runs them.
///
/// See the [module docs](self) for an example.
#[derive(Clone)]
pub struct App {
    name: &'static str,
    aggregates: Vec<AggregateEntry>,
    upcasts: events::Upcasts,
    projections: Vec<Arc<dyn RunProjection>>,
    sagas: Vec<Arc<dyn RunSaga>>,
    demo: Option<Demo>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("projections", &self.projection_names())
            .field("sagas", &self.saga_names())
            .finish_non_exhaustive()
    }
}

/// Serves one aggregate on a node being built (with snapshots every `every` events).
type AggregateEntry =
    Arc<dyn Fn(Node, EventStore, u64) -> BoxFuture<'static, Result<Node>> + Send + Sync + 'static>;

/// The story `jetsource up --demo` tells against the running stack, if the app has one.
pub type Demo = Arc<
    dyn for<'a> Fn(async_nats::Client, &'a mut Stack) -> LocalBoxFuture<'a, Result<()>>
        + Send
        + Sync
        + 'static,
>;

/// A projection the app can run as a process (`project <name>`).
trait RunProjection: Send + Sync + 'static {
    fn name(&self) -> String;
    fn run(&self, args: project::Args) -> LocalBoxFuture<'static, Result<Outcome>>;
    /// `node`, also serving this projection's queries.
    fn serve_queries(&self, node: Node) -> Node;
}

impl<P: Projection + Clone> RunProjection for P {
    fn name(&self) -> String {
        Projection::name(self).to_string()
    }
    fn run(&self, args: project::Args) -> LocalBoxFuture<'static, Result<Outcome>> {
        let projection = self.clone();
        Box::pin(project::project(move || projection.clone(), args))
    }
    fn serve_queries(&self, node: Node) -> Node {
        node.view(self)
    }
}

/// A saga the app can run as a process (`saga <name>`).
trait RunSaga: Send + Sync + 'static {
    fn name(&self) -> String;
    fn run(&self, args: saga::Args) -> LocalBoxFuture<'static, Result<Outcome>>;
}

impl<S: Saga + Clone> RunSaga for S {
    fn name(&self) -> String {
        Saga::name(self).to_string()
    }
    fn run(&self, args: saga::Args) -> LocalBoxFuture<'static, Result<Outcome>> {
        Box::pin(saga::run(self.clone(), args))
    }
}

impl App {
    /// An app called `name` (the binary's name in its help) with nothing in it yet.
    pub fn new(name: &'static str) -> App {
        App {
            name,
            aggregates: Vec::new(),
            upcasts: events::Upcasts::default(),
            projections: Vec::new(),
            sagas: Vec::new(),
            demo: None,
        }
    }

    /// Serves aggregate `A` (`cmd.<A::NAME>.<Command>`, `qry.<A::NAME>.get|history|at`),
    /// snapshotted every `--snapshot-every` events.
    pub fn aggregate<A>(mut self) -> App
    where
        A: Aggregate + Snapshot,
        A::Command: DeserializeOwned,
        A::Error: DomainError,
    {
        self.aggregates.push(Arc::new(|node: Node, store, every| {
            Box::pin(async move {
                let repository =
                    crate::Repository::<A>::with_snapshots(store, Default::default(), every)
                        .await?;
                Ok(node.serve(repository))
            })
        }));
        self.upcasts
            .insert(A::NAME, crate::aggregate::upcast::<A::Event>);
        self
    }

    /// Runs `projection` as `project <name>` (and under `up`), and serves the
    /// queries it declares ([`Projection::queries`]) on every node.
    pub fn projection<P: Projection + Clone>(mut self, projection: P) -> App {
        self.projections.push(Arc::new(projection));
        self
    }

    /// Runs `saga` as `saga <name>` (and under `up`).
    pub fn saga<S: Saga + Clone>(mut self, saga: S) -> App {
        self.sagas.push(Arc::new(saga));
        self
    }

    /// The story `up --demo` tells once the stack is up; `Stack::check` says
    /// whether every process is still running.
    pub fn demo(mut self, demo: Demo) -> App {
        self.demo = Some(demo);
        self
    }

    fn projection_names(&self) -> Vec<String> {
        self.projections.iter().map(|p| p.name()).collect()
    }

    fn saga_names(&self) -> Vec<String> {
        self.sagas.iter().map(|s| s.name()).collect()
    }

    /// A node over `store` serving every aggregate and view query of the app.
    async fn node(
        &self,
        store: EventStore,
        config: crate::node::NodeConfig,
        every: u64,
    ) -> Result<Node> {
        let mut node = Node::new(store.clone(), config);
        for serve in &self.aggregates {
            node = serve(node, store.clone(), every).await?;
        }
        for projection in &self.projections {
            node = projection.serve_queries(node);
        }
        Ok(node)
    }

    /// Parses the command line and runs the subcommand: the whole `main` of an app.
    pub fn run(self) -> ExitCode {
        let matches = Cli::command()
            .name(self.name)
            .bin_name(self.name)
            .get_matches();
        let cli = match Cli::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        };
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("{}: no async runtime: {e}", self.name);
                return ExitCode::FAILURE;
            }
        };
        let name = self.name;
        match runtime.block_on(self.dispatch(cli.command)) {
            Ok(Outcome::Done) => ExitCode::SUCCESS,
            Ok(Outcome::Rejected) => ExitCode::from(2),
            Err(e) => {
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        }
    }

    async fn dispatch(self, command: Command) -> Result<Outcome> {
        if let Command::Up(_)
        | Command::Node(_)
        | Command::Project(_)
        | Command::Saga(_)
        | Command::Console(_) = command
        {
            listen_for_signals();
        }
        match command {
            Command::Up(args) => up::run(&self, args).await,
            Command::Node(args) => node::run(&self, args).await,
            Command::Project(args) => {
                let name = args.name().to_string();
                match self.projections.iter().find(|p| p.name() == name) {
                    Some(p) => p.run(args).await,
                    None => Err(format!(
                        "no projection {name:?} (known: {})",
                        self.projection_names().join(", ")
                    )
                    .into()),
                }
            }
            Command::Saga(args) => {
                let name = args.name().to_string();
                match self.sagas.iter().find(|s| s.name() == name) {
                    Some(s) => s.run(args).await,
                    None => Err(format!(
                        "no saga {name:?} (known: {})",
                        self.saga_names().join(", ")
                    )
                    .into()),
                }
            }
            Command::Sagas(args) => saga::list(args).await,
            Command::Dlq(args) => dlq::run(args).await,
            Command::Send(args) => send::run(args).await,
            Command::Query(args) => send::query(args).await,
            Command::Events(args) => events::run(args, &self.upcasts).await,
            Command::Status(args) => status::run(args).await,
            Command::Console(args) => console::run(args, self.saga_names()).await,
            Command::Policy(args) => policy::run(args),
            Command::NatsServer => nats_server(),
        }
    }
}

/// Event-sourced, CQRS domains on NATS JetStream.
#[derive(Parser, Debug)]
#[command(name = "jetsource", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local nats-server (safe durability), a node, every projection and saga
    /// as child processes; Ctrl-C stops them all. `--demo` runs the app's story and
    /// exits.
    Up(up::Args),
    /// Serve the app's commands and queries (the `jetsource` NATS service).
    Node(node::Args),
    /// Run one projection as its own process until SIGINT/SIGTERM.
    Project(project::Args),
    /// Run one saga as its own process until SIGINT/SIGTERM.
    Saga(saga::Args),
    /// List a saga's instances or show one, e.g. `sagas list hiring`.
    Sagas(saga::ListArgs),
    /// List, show, retry or discard events parked in the DLQ.
    Dlq(dlq::Args),
    /// Send a command, e.g. `send person.Register '{"id":"p1","name":"Ada","email":"ada@example.org"}'`.
    Send(send::Args),
    /// Ask a query, e.g. `query person.get '{"id":"p1"}'`.
    Query(send::QueryArgs),
    /// Print an aggregate's events, e.g. `events person p1`.
    Events(events::Args),
    /// Show the nodes of the service and the event store.
    Status(status::Args),
    /// Serve a web page showing the system live: events, aggregates at any
    /// version, consumers, parked events, saga instances, nodes.
    Console(console::Args),
    /// Who may do what: `policy nats-config dev/policy.toml` prints the NATS
    /// accounts the node's `--policy` expects.
    Policy(policy::Args),
    /// Find a nats-server >= 2.12 (NATS_SERVER_BIN, PATH, cache) or provision the
    /// pinned one; print its path on stdout (its version on stderr).
    NatsServer,
}

/// How a subcommand ended.
enum Outcome {
    Done,
    Rejected,
}

/// What a subcommand (or a [`Demo`]) fails with: printed as one line.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn nats_server() -> Result<Outcome> {
    let path = crate::nats_server::find_or_provision()?;
    let version = crate::nats_server::binary_version(&path)?;
    println!("{}", path.display());
    eprintln!("nats-server v{version}");
    Ok(Outcome::Done)
}

/// The flags of processes that hold a lease while active (`project`, `saga`).
#[derive(clap::Args, Debug)]
struct Standby {
    /// Seconds a dead instance's lease lasts before a standby takes over (it is
    /// renewed every third of that). Give every process of a deployment the same.
    #[arg(long, default_value_t = 1.5)]
    lease_ttl: f64,
    #[command(flatten)]
    telemetry: telemetry::Telemetry,
}

impl Standby {
    fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.lease_ttl.clamp(0.5, 3600.0))
    }
}

/// Prints rows under a header row, each column as wide as its widest cell (the
/// last one left ragged).
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| match i == last {
                true => c.to_string(),
                false => format!("{c:<w$}", w = widths[i]),
            })
            .collect();
        println!("{}", text.join("  "));
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A parked event's or a header map's headers as a JSON object (repeated
/// values joined with `, `).
fn headers_json(headers: &async_nats::HeaderMap) -> serde_json::Value {
    headers
        .iter()
        .map(|(name, values)| {
            let values: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
            (name.to_string(), serde_json::Value::from(values.join(", ")))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Resolves once SIGINT or SIGTERM has arrived, at any time since the listener was
/// installed (by [`listen_for_signals`] or the first call).
///
/// Why one process-wide listener: once tokio has installed a handler, a signal that
/// arrives while nobody is waiting is dropped, so a listener per `select!` loses a
/// SIGTERM landing between two of them and the process never stops.
async fn wait_for_signal() {
    let mut signalled = listen_for_signals();
    let _ = signalled.wait_for(|s| *s).await;
}

/// Installs the SIGINT/SIGTERM listener (once) and returns a view of it.
fn listen_for_signals() -> tokio::sync::watch::Receiver<bool> {
    static SIGNALLED: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> =
        std::sync::OnceLock::new();
    SIGNALLED
        .get_or_init(|| {
            let (tx, rx) = tokio::sync::watch::channel(false);
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                // Registered here, synchronously, not when the task first runs.
                let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
                let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
                tokio::spawn(async move {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    let _ = tx.send(true);
                });
            }
            #[cfg(not(unix))]
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
            });
            rx
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Regression: `console --token` clashed with the connection's NATS `--token`,
    /// and clap only says so when the subcommand is first run.
    #[test]
    fn every_subcommand_parses() {
        Cli::command().debug_assert();
    }
}
