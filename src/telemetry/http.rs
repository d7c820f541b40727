//! The telemetry address: `/metrics`, `/healthz`, `/readyz`.

use super::Health;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::time::Duration;

/// How often histograms are compacted when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// The running HTTP server; stops when dropped.
#[derive(Debug)]
pub struct TelemetryServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TelemetryServer {
    /// Where it listens (the port the system chose, for `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TelemetryServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    prometheus: PrometheusHandle,
    health: Health,
}

/// Listens on `addr` and answers `GET /metrics` (Prometheus text format),
/// `/healthz` (200 while the process's runtime answers at all) and `/readyz`
/// (200 once the process does its job and is connected to NATS, else 503), both
/// with a JSON [`Report`](super::health::Report).
pub async fn serve(
    addr: SocketAddr,
    prometheus: PrometheusHandle,
    health: Health,
) -> std::io::Result<TelemetryServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Shared {
            prometheus: prometheus.clone(),
            health,
        });
    let task = tokio::spawn(async move {
        let upkeep = async {
            let mut tick = tokio::time::interval(UPKEEP);
            loop {
                tick.tick().await;
                prometheus.run_upkeep();
            }
        };
        tokio::select! {
            served = axum::serve(listener, app) => {
                if let Err(e) = served {
                    tracing::warn!(error = %e, "the telemetry server stopped");
                }
            }
            () = upkeep => {}
        }
    });
    Ok(TelemetryServer { addr, task })
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.prometheus.render(),
    )
}

async fn healthz(State(shared): State<Shared>) -> impl IntoResponse {
    (StatusCode::OK, Json(shared.health.report()))
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let report = shared.health.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
