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
    /// Export trace spans over OTLP/HTTP to this collector, e.g.
    /// `http://127.0.0.1:4318` (`/v1/traces` is appended). Protobuf, or JSON with
    /// OTEL_EXPORTER_OTLP_PROTOCOL=http/json; the batch delay is OTEL_BSP_SCHEDULE_DELAY.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// The OpenTelemetry tracer provider, when exporting: flushed on shutdown.
static TRACER: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> =
    std::sync::OnceLock::new();

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
    /// Logs to stderr through tracing, filtered by `RUST_LOG` or `--log-level`,
    /// and exports spans over OTLP when `--otlp-endpoint` is given, as service
    /// `process` (`OTEL_SERVICE_NAME` overrides it).
    pub(crate) fn init_logging(&self, process: &str) -> Result<()> {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| self.log_level.clone());
        let filter = tracing_subscriber::EnvFilter::try_new(&filter)?;
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let fmt = match self.log_format {
            LogFormat::Text => fmt
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter)
                .boxed(),
            LogFormat::Json => fmt
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_filter(filter)
                .boxed(),
        };
        // Only spans continuing a client's trace are exported (traces start at the
        // client), whatever the log level: quiet logs, full traces.
        let otel = match &self.otlp_endpoint {
            Some(endpoint) => Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer(endpoint, process)?)
                    // Per traced command these cost more than they tell: source
                    // location, thread and target attributes, busy/idle timings
                    // taken at every poll, and an OpenTelemetry context attached
                    // at every poll (nothing here reads the ambient context;
                    // `TraceContext::onward` asks the span itself).
                    .with_location(false)
                    .with_threads(false)
                    .with_target(false)
                    .with_tracked_inactivity(false)
                    .with_context_activation(false)
                    .with_filter(tracing_subscriber::filter::Targets::new().with_target(
                        crate::telemetry::trace::TARGET,
                        tracing_subscriber::filter::LevelFilter::INFO,
                    )),
            ),
            None => None,
        };
        tracing_subscriber::registry().with(fmt).with(otel).init();
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

    /// The process is shutting down: the spans not exported yet go out now.
    pub(crate) fn stopping(&self) {
        self.health.set_role(Role::Stopping);
        notify_systemd(sd_notify::NotifyState::Stopping);
        if let Some(provider) = TRACER.get() {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing trace spans");
            }
        }
    }
}

/// An OTLP/HTTP exporter to `endpoint`, batched, for service `process`.
fn tracer(endpoint: &str, process: &str) -> Result<opentelemetry_sdk::trace::SdkTracer> {
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let endpoint = endpoint.trim_end_matches('/');
    let endpoint = if endpoint.ends_with("/v1/traces") {
        endpoint.to_string()
    } else {
        format!("{endpoint}/v1/traces")
    };
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("http/json") => Protocol::HttpJson,
        _ => Protocol::HttpBinary,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| format!("the OTLP exporter to {endpoint}: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| process.to_string());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("jetsource");
    let _ = TRACER.set(provider);
    Ok(tracer)
}

/// Tells systemd (a `Type=notify` unit) how the process is doing; nothing
/// without `NOTIFY_SOCKET`.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}
