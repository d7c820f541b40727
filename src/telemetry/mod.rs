//! What a running process tells its operators: Prometheus metrics, health and
//! readiness, and where its work sits in a trace.
//!
//! - [`metrics`]: every metric jetsource records, by name (the `metrics` crate's
//!   macros; nothing is recorded until a process installs an exporter).
//! - [`Health`]: what `/healthz` and `/readyz` answer: the process's role
//!   (serving, active, standby) and its NATS connection.
//! - [`trace`]: W3C trace context from a command through its events into the
//!   projections' and sagas' work and the commands sagas send.
//! - [`serve`]: one opt-in HTTP address (`--metrics-addr`) answering `/metrics`
//!   (Prometheus text), `/healthz` and `/readyz`.
//!
//! ```no_run
//! # async fn demo(client: async_nats::Client) -> std::io::Result<()> {
//! use jetsource::telemetry::{self, Health, Role};
//! let health = Health::new(client);
//! let exporter = telemetry::install_prometheus().expect("the first recorder");
//! let server = telemetry::serve("127.0.0.1:9464".parse().unwrap(), exporter, health.clone()).await?;
//! health.set_role(Role::Serving);
//! println!("metrics on http://{}/metrics", server.addr());
//! # Ok(()) }
//! ```

mod health;
mod http;
pub mod metrics;
pub mod trace;

pub use health::{Health, Report, Role};
pub use http::{serve, TelemetryServer};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: 100 µs to 10 s.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Size buckets (events in a batch, appends in a group commit): 1 to 1000.
const SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1000.0,
];

/// Installs the process-wide Prometheus recorder (histograms with jetsource's
/// buckets) and returns the handle that renders it. Fails if a recorder is
/// installed already.
pub fn install_prometheus() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_events".into()), SIZES))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_appends".into()), SIZES))
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| format!("installing the Prometheus recorder: {e}"))?;
    metrics::describe();
    Ok(handle)
}
