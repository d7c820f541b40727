//! `jetsource project <name>`: one projection as its own process, following its
//! view's active version; `--rebuild` builds the next version and switches to it.

use super::active::Ended;
use super::connection::Connection;
use super::{Outcome, Result};
use crate::projection::lease::Lease;
use crate::projection::rebuild::Rebuild;
use crate::projection::{
    versions, PoisonPolicy, Projection, ProjectionRunner, RunnerConfig, RunnerErrorKind,
};
use crate::EventStore;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The projection's name (an unknown one is answered with the app's list).
    name: String,
    /// Build the next version of the view from the first event, with progress,
    /// switch queries to it once caught up, and exit. The running projection
    /// follows the switch.
    #[arg(long)]
    rebuild: bool,
    /// Delete the versions older than the active one (their view buckets and
    /// consumers), print which, and exit.
    #[arg(long, conflicts_with = "rebuild")]
    drop_retired: bool,
    #[command(flatten)]
    connection: Connection,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Stop (instead of going on) once an event had to be parked in DLQ.
    #[arg(long)]
    stop_on_poison: bool,
    #[command(flatten)]
    standby: super::Standby,
}

impl Args {
    /// The projection asked for.
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

fn stream_changed(e: &crate::projection::RunnerError) -> bool {
    matches!(e.kind(), RunnerErrorKind::StreamChanged(_))
}

/// Says once, as an error, that `version` of the view was built from a stream
/// that is gone, then waits (applying nothing) until a rebuild switches the view
/// to another version: true, go on with it; false, SIGINT/SIGTERM came first.
async fn refuse_until_switched(
    store: &EventStore,
    name: &str,
    version: u32,
    error: &crate::projection::RunnerError,
) -> bool {
    tracing::error!(
        projection = name,
        version,
        %error,
        "refusing to apply events: rebuild with `jetsource project {name} --rebuild`; this process follows the rebuilt version"
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = super::wait_for_signal() => return false,
        }
        if versions::active(store, name)
            .await
            .is_ok_and(|v| v != version)
        {
            return true;
        }
    }
}

/// Runs one projection as a process: follows its view's active version, holds
/// its lease while active and stands by otherwise; `--rebuild` builds the next
/// version and exits.
pub(super) async fn project<P: Projection>(make: impl Fn() -> P, args: Args) -> Result<Outcome> {
    args.standby
        .telemetry
        .init_logging(&format!("jetsource project {}", args.name))?;
    let store = args
        .connection
        .open_store(&format!("jetsource project {}", args.name))
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
    let ttl = args.standby.lease_ttl();
    if args.rebuild {
        return rebuild(make(), store, config, ttl).await;
    }
    if args.drop_retired {
        let dropped = versions::drop_retired(&store, &args.name).await?;
        match dropped.is_empty() {
            true => println!("{}: no retired versions", args.name),
            false => println!("{}: dropped versions {dropped:?}", args.name),
        }
        return Ok(Outcome::Done);
    }
    let telemetry = args
        .standby
        .telemetry
        .start("project", store.client())
        .await?;
    // Run the active version; when a rebuild switches it, move over to the new one.
    loop {
        let active = || versions::active(&store, &args.name);
        let Some(version) = super::active::until_ok("reading the view version", active).await
        else {
            return Ok(Outcome::Done);
        };
        let key = versions::consumer_name(&args.name, version);
        let _watch = telemetry.watch_consumer(&store, &key);
        // Only the lease holder touches the consumer and the view; others wait.
        let Some(lease) = super::active::take_lease(&store, &key, ttl, &telemetry).await? else {
            telemetry.stopping();
            return Ok(Outcome::Done);
        };
        let config = RunnerConfig {
            version,
            ..config.clone()
        };
        // A server that is away is waited for; a stream that changed is not.
        let start = || async {
            match ProjectionRunner::new(store.clone(), make(), config.clone()).await {
                Err(e) if stream_changed(&e) => Ok(Err(e)),
                started => started.map(Ok),
            }
        };
        let Some(started) = super::active::until_ok("starting the projection", start).await else {
            lease.release().await;
            return Ok(Outcome::Done);
        };
        let runner = match started {
            Ok(runner) => runner,
            Err(e) => {
                lease.release().await;
                match refuse_until_switched(&store, &args.name, version, &e).await {
                    true => continue,
                    false => return Ok(Outcome::Done),
                }
            }
        };
        tracing::info!(
            projection = args.name,
            version,
            checkpoint = runner.checkpoint(),
            "projection running"
        );
        // Not being able to ask (the server is away) is no reason to stop: the
        // runner rides the outage out, and this asks again next second.
        let switched = async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match versions::active(&store, &args.name).await {
                    Ok(active) if active != version => return,
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "active view version unknown for now"),
                }
            }
        };
        let run = |stopped| runner.run(stopped);
        let ended = match super::active::while_holding(lease, &key, run, switched).await {
            Ok(ended) => ended,
            Err(e) => match e.downcast_ref::<crate::projection::RunnerError>() {
                Some(changed) if stream_changed(changed) => {
                    match refuse_until_switched(&store, &args.name, version, changed).await {
                        true => continue,
                        false => return Ok(Outcome::Done),
                    }
                }
                _ => return Err(e),
            },
        };
        match ended {
            Ended::Done => {
                telemetry.stopping();
                tracing::info!(projection = args.name, "projection stopped");
                return Ok(Outcome::Done);
            }
            Ended::Interrupted => tracing::info!(
                projection = args.name,
                "view version switched: following it"
            ),
            Ended::LeaseLost => {}
        }
    }
}

async fn rebuild<P: Projection>(
    projection: P,
    store: EventStore,
    config: RunnerConfig,
    ttl: Duration,
) -> Result<Outcome> {
    let name = projection.name().to_string();
    let mut rebuild = Rebuild::start(store.clone(), projection, config).await?;
    let version = rebuild.version();
    let lease = Lease::acquire(&store, &versions::consumer_name(&name, version), ttl).await?;
    let bar = indicatif::ProgressBar::new(0);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message(format!("rebuilding {name} v{version}"));
    loop {
        let progress = tokio::select! {
            p = rebuild.step() => p?,
            _ = super::wait_for_signal() => {
                lease.release().await;
                return Err(format!("rebuild of {name} v{version} interrupted; queries still read the old version").into());
            }
        };
        bar.set_length(progress.target);
        bar.set_position(progress.applied);
        if progress.caught_up {
            break;
        }
    }
    bar.finish();
    rebuild.switch().await?;
    lease.release().await;
    println!(
        "{name}: version {version} built and active; queries read view_{name}{}",
        if version > 1 {
            format!("_v{version}")
        } else {
            String::new()
        }
    );
    if version > 1 {
        println!("older versions stay until `jetsource project {name} --drop-retired`");
    }
    Ok(Outcome::Done)
}
