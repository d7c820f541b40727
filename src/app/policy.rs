//! `jetsource policy nats-config <file>`: the NATS server's accounts for a policy.

use super::{Outcome, Result};
use crate::{Policy, Subjects};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the server's `accounts` block for a policy file (include it from the
    /// server config; `dev/nats-accounts.conf` is this for `dev/policy.toml`).
    NatsConfig {
        /// The policy file (TOML).
        file: PathBuf,
        /// Subject prefix of this deployment (default none).
        #[arg(long, env = "JETSOURCE_PREFIX", default_value = "")]
        prefix: String,
    },
}

pub(crate) fn run(args: Args) -> Result<Outcome> {
    match args.command {
        Command::NatsConfig { file, prefix } => {
            let policy = Policy::load(&file)?;
            print!("{}", policy.nats_config(&Subjects::new(&prefix)));
        }
    }
    Ok(Outcome::Done)
}
