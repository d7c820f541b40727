//! The `jetsource` binary: thin commands over the library, one file each. Errors
//! become one line on stderr and a non-zero exit code (1 for errors, 2 when a
//! command or query was rejected).

mod active;
mod connection;
mod demo;
mod dlq;
mod events;
mod node;
mod policy;
mod project;
mod saga;
mod send;
mod status;
mod up;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Event-sourced, CQRS domains on NATS JetStream.
#[derive(Parser, Debug)]
#[command(name = "jetsource", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local nats-server (safe durability), a node, the projections and the
    /// hiring saga as child processes; Ctrl-C stops them all. `--demo` runs the
    /// hiring story and exits.
    Up(up::Args),
    /// Serve commands and queries for Person and Organization (the `jetsource` NATS service).
    Node(node::Args),
    /// Run one projection (`person_directory`) as its own process until SIGINT/SIGTERM.
    Project(project::Args),
    /// Run one saga (`hiring`) as its own process until SIGINT/SIGTERM.
    Saga(saga::Args),
    /// List saga instances or show one, e.g. `jetsource sagas list hiring`.
    Sagas(saga::ListArgs),
    /// List, show, retry or discard events parked in the DLQ.
    Dlq(dlq::Args),
    /// Send a command, e.g. `jetsource send person.Register '{"id":"p1","name":"Ada","email":"ada@example.org"}'`.
    Send(send::Args),
    /// Ask a query, e.g. `jetsource query person.get '{"id":"p1"}'`.
    Query(send::QueryArgs),
    /// Print an aggregate's events, e.g. `jetsource events person p1`.
    Events(events::Args),
    /// Show the nodes of the service and the event store.
    Status(status::Args),
    /// Who may do what: `jetsource policy nats-config dev/policy.toml` prints the
    /// NATS accounts the node's `--policy` expects.
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Up(_) | Command::Node(_) | Command::Project(_) | Command::Saga(_) = cli.command
    {
        listen_for_signals();
    }
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Node(args) => node::run(args).await,
        Command::Project(args) => project::run(args).await,
        Command::Saga(args) => saga::run(args).await,
        Command::Sagas(args) => saga::list(args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::Send(args) => send::run(args).await,
        Command::Query(args) => send::query(args).await,
        Command::Events(args) => events::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Policy(args) => policy::run(args),
        Command::NatsServer => nats_server(),
    };
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Rejected) => ExitCode::from(2),
        Err(e) => {
            eprintln!("jetsource: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn nats_server() -> Result<Outcome> {
    let path = jetsource::nats_server::find_or_provision()?;
    let version = jetsource::nats_server::binary_version(&path)?;
    println!("{}", path.display());
    eprintln!("nats-server v{version}");
    Ok(Outcome::Done)
}

/// The flags of processes that hold a lease while active (`project`, `saga`).
#[derive(clap::Args, Debug)]
pub(crate) struct Standby {
    /// Seconds a dead instance's lease lasts before a standby takes over (it is
    /// renewed every third of that). Give every process of a deployment the same.
    #[arg(long, default_value_t = 1.5)]
    lease_ttl: f64,
    /// Log filter (overridden by RUST_LOG).
    #[arg(long, default_value = "info")]
    log_level: String,
}

impl Standby {
    fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.lease_ttl.clamp(0.5, 3600.0))
    }
}

/// Logs to stderr through tracing, filtered by `RUST_LOG` or `level`.
pub(crate) fn init_logging(level: &str) -> Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

/// Resolves once SIGINT or SIGTERM has arrived, at any time since the listener was
/// installed (by [`listen_for_signals`] or the first call).
///
/// Why one process-wide listener: once tokio has installed a handler, a signal that
/// arrives while nobody is waiting is dropped, so a listener per `select!` loses a
/// SIGTERM landing between two of them and the process never stops.
pub(crate) async fn wait_for_signal() {
    let mut signalled = listen_for_signals();
    let _ = signalled.wait_for(|s| *s).await;
}

/// Installs the SIGINT/SIGTERM listener (once) and returns a view of it.
pub(crate) fn listen_for_signals() -> tokio::sync::watch::Receiver<bool> {
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
