//! What every long-running process (`node`, `project`, `saga`) shares: logging,
//! the opt-in metrics and health address, systemd's readiness notification.

use super::Result;
use crate::telemetry::{self, Health, Role, TelemetryServer};
use crate::EventStore;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The flags.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Telemetry {
    /// Serve Prometheus metrics (`/metrics`), `/healthz` and `/readyz` on this
    /// address, e.g. `127.0.0.1:9464` (`:0` picks a port, logged). Off by default.
    #[arg(long, env = "JETSOURCE_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Log filter (overridden by RUST_LOG), e.g. `info` or `jetsource=debug`.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// `text` for people, `json` (one object per line) for log collectors.
    #[arg(long, env = "JETSOURCE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines look.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// A process's telemetry while it runs.
#[derive(Debug)]
pub(crate) struct Running {
    health: Health,
    server: Option<TelemetryServer>,
}

/// How often a consumer's standing (lag, checkpoint, parked) and a saga's census
/// are read for the metrics.
const REFRESH: Duration = Duration::from_secs(5);

/// A background task that ends when this is dropped.
#[derive(Debug)]
pub(crate) struct Refreshing(tokio::task::JoinHandle<()>);

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Telemetry {
    /// Logs to stderr through tracing, filtered by `RUST_LOG` or `--log-level`.
    pub(crate) fn init_logging(&self) -> Result<()> {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| self.log_level.clone());
        let filter = tracing_subscriber::EnvFilter::try_new(&filter)?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init(),
            LogFormat::Json => builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .init(),
        }
        Ok(())
    }

    /// Starts the metrics and health address, if asked for, for `process` over
    /// `client`'s connection.
    pub(crate) async fn start(
        &self,
        process: &str,
        client: &async_nats::Client,
    ) -> Result<Running> {
        let health = Health::new(client.clone());
        let server = match self.metrics_addr {
            None => None,
            Some(addr) => {
                let prometheus = telemetry::install_prometheus()?;
                telemetry::metrics::process(process);
                let server = telemetry::serve(addr, prometheus, health.clone())
                    .await
                    .map_err(|e| format!("serving metrics on {addr}: {e}"))?;
                tracing::info!(addr = %server.addr(), "metrics on http://{}/metrics", server.addr());
                Some(server)
            }
        };
        Ok(Running { health, server })
    }
}

impl Running {
    /// The process serves commands and queries.
    pub(crate) fn serving(&self) {
        self.health.set_role(Role::Serving);
        notify_systemd(sd_notify::NotifyState::Ready);
    }

    /// The process runs `consumer` (`active`) or stands by for it.
    pub(crate) fn consumer(&self, consumer: &str, active: bool) {
        let role = if active { Role::Active } else { Role::Standby };
        self.health.set_consumer_role(role, consumer);
        telemetry::metrics::consumer_active(consumer, active);
        notify_systemd(sd_notify::NotifyState::Ready);
    }

    /// Keeps `consumer`'s lag, checkpoint and parked gauges fresh while the
    /// returned guard lives (when metrics are on). Active and standby instances
    /// both report them: they are the consumer's, not the process's.
    pub(crate) fn watch_consumer(&self, store: &EventStore, consumer: &str) -> Option<Refreshing> {
        self.server.as_ref()?;
        let (store, consumer) = (store.clone(), consumer.to_string());
        Some(Refreshing(tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tick.tick().await;
                match crate::projection::status::consumer(&store, &consumer).await {
                    Ok(Some(status)) => telemetry::metrics::consumer_status(&status),
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "consumer status unknown for now"),
                }
            }
        })))
    }

    /// Counts `saga`'s instances by stage, and their pending deadlines, while the
    /// returned guard lives (when metrics are on). It reads every instance, so it
    /// runs only in the active instance.
    pub(crate) fn census(&self, store: &EventStore, saga: &str) -> Option<Refreshing> {
        self.server.as_ref()?;
        let (store, saga) = (store.clone(), saga.to_string());
        Some(Refreshing(tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH * 3);
            let mut by_stage = BTreeMap::new();
            loop {
                tick.tick().await;
                let instances = match crate::saga::instances::list(&store, &saga).await {
                    Ok(instances) => instances,
                    Err(e) => {
                        tracing::debug!(error = %e, "saga census skipped");
                        continue;
                    }
                };
                // Stages seen before and empty now are reported as 0, not left stale.
                by_stage.values_mut().for_each(|n| *n = 0);
                let mut deadlines = 0;
                for i in &instances {
                    let stage = match &i.outcome {
                        Some(outcome) => format!("finished:{outcome}"),
                        None => {
                            deadlines += i.deadlines.len() as u64;
                            i.stage.clone()
                        }
                    };
                    *by_stage.entry(stage).or_insert(0) += 1;
                }
                telemetry::metrics::saga_census(&saga, &by_stage, deadlines);
            }
        })))
    }

    /// The process is shutting down.
    pub(crate) fn stopping(&self) {
        self.health.set_role(Role::Stopping);
        notify_systemd(sd_notify::NotifyState::Stopping);
    }
}

/// Tells systemd (a `Type=notify` unit) how the process is doing; nothing
/// without `NOTIFY_SOCKET`.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}
