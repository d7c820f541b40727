//! The `jetsource` binary: a thin layer over the library. Errors become one line on
//! stderr and a non-zero exit code.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Event-sourced, CQRS domains on NATS JetStream.
#[derive(Parser, Debug)]
#[command(name = "jetsource", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Find a nats-server >= 2.12 (NATS_SERVER_BIN, PATH, cache) or provision the
    /// pinned one, and print its path.
    NatsServer,
    /// Connect to a server, check its version and JetStream, and ensure the EVENTS stream.
    Check {
        /// Server URL (falls back to NATS_URL).
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jetsource: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::NatsServer => {
            let path = jetsource::nats_server::find_or_provision()?;
            let version = jetsource::nats_server::binary_version(&path)?;
            println!("{} (v{version})", path.display());
        }
        Command::Check { nats_url } => {
            let client = jetsource::connect(&nats_url).await?;
            let info = client.server_info();
            jetsource::EventStore::open(client, jetsource::StoreConfig::default()).await?;
            println!(
                "nats-server {} at {nats_url}: JetStream on, stream EVENTS ready",
                info.version
            );
        }
    }
    Ok(())
}
