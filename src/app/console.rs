//! `jetsource console`: one web page (embedded in the binary) showing the system
//! live: the event stream as it grows, an aggregate's history and its state at any
//! version, every consumer with checkpoint, lag and parked events, saga instances
//! by stage with their deadlines, and the nodes of the service.
//!
//! Read-only by default. `--actions` adds retry and discard of parked events, each
//! of which needs the console's action token (printed at start, or
//! `JETSOURCE_CONSOLE_TOKEN`) in `Authorization: Bearer <token>`: whoever holds it
//! may take them, and the console's own NATS identity must be allowed them too.

use super::connection::Connection;
use super::{Outcome, Result};
use crate::EventStore;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// The page: HTML, CSS and script in one file.
const PAGE: &str = include_str!("console.html");

/// Most events one `/api/events` answer holds.
const MAX_EVENTS: usize = 200;
/// Most events of one aggregate's history shown (its state at a version comes from
/// the node, which has its own bound).
const MAX_HISTORY: usize = 1_000;
/// Most stream messages one `/api/events` answer reads to find them (a filter
/// that matches little must not scan the whole stream).
const MAX_SCANNED: usize = 5_000;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    connection: Connection,
    /// Where the page is served.
    #[arg(long, default_value = "127.0.0.1:8480")]
    listen: SocketAddr,
    /// Allow retrying and discarding parked events from the page (with the
    /// action token).
    #[arg(long)]
    actions: bool,
    #[command(flatten)]
    telemetry: super::telemetry::Telemetry,
    /// The action token (default: a random one, printed at start).
    #[arg(long, env = "JETSOURCE_CONSOLE_TOKEN", hide_env_values = true)]
    action_token: Option<String>,
}

struct Console {
    store: EventStore,
    sagas: Vec<String>,
    /// `Some(token)` when actions are allowed.
    token: Option<String>,
    subjects: crate::Subjects,
}

type Shared = State<Arc<Console>>;

pub(crate) async fn run(args: Args, sagas: Vec<String>) -> Result<Outcome> {
    args.telemetry.init_logging("jetsource console")?;
    let store = args.connection.open_store("jetsource console").await?;
    let telemetry = args.telemetry.start("console", store.client()).await?;
    let token = args.actions.then(|| {
        args.action_token
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("jetsource console on http://{addr}/");
    match &token {
        Some(token) if args.action_token.is_none() => {
            println!("  actions allowed with token {token}")
        }
        Some(_) => println!("  actions allowed with the token from JETSOURCE_CONSOLE_TOKEN"),
        None => println!("  read-only (--actions allows retry and discard of parked events)"),
    }
    let console = Arc::new(Console {
        subjects: args.connection.subjects(),
        store,
        sagas,
        token,
    });
    let app = router(console);
    telemetry.serving();
    tokio::select! {
        served = axum::serve(listener, app) => served?,
        () = super::wait_for_signal() => {}
    }
    telemetry.stopping();
    Ok(Outcome::Done)
}

fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/overview", get(overview))
        .route("/api/events", get(events))
        .route("/api/aggregate/{aggregate}/{id}", get(aggregate))
        .route("/api/sagas", get(sagas))
        .route("/api/dlq", get(parked))
        .route("/api/dlq/{seq}/{action}", post(act))
        .with_state(console)
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

/// An error as `{"error": ...}` with a status.
fn failed(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

/// Stream, nodes and consumers, as `status --json` shows them, plus whether
/// actions are allowed.
async fn overview(State(console): Shared) -> Response {
    match super::status::gather(&console.store).await {
        Ok(mut report) => {
            report["actions"] = json!(console.token.is_some());
            Json(report).into_response()
        }
        Err(e) => failed(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[derive(Debug, Deserialize)]
struct EventFilter {
    /// Only events after this stream sequence (default: the last 50).
    after: Option<u64>,
    aggregate: Option<String>,
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    limit: Option<usize>,
}

/// Events after a sequence, oldest first, filtered by aggregate, id and type.
async fn events(State(console): Shared, Query(filter): Query<EventFilter>) -> Response {
    let last = match console.store.last_seq().await {
        Ok(last) => last,
        Err(e) => return failed(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let limit = filter.limit.unwrap_or(50).clamp(1, MAX_EVENTS);
    let after = filter
        .after
        .unwrap_or_else(|| last.saturating_sub(limit as u64));
    let wanted = |field: &Option<String>, value: &str| {
        field.as_deref().is_none_or(|f| f.is_empty() || f == value)
    };
    let mut found = Vec::new();
    let mut scanned_to = after;
    let mut stream = console.store.read_all(after + 1).take(MAX_SCANNED);
    while let Some(next) = stream.next().await {
        let event = match next {
            Ok(event) => event,
            Err(e) => return failed(StatusCode::SERVICE_UNAVAILABLE, e),
        };
        scanned_to = event.seq;
        if wanted(&filter.aggregate, &event.aggregate)
            && wanted(&filter.id, &event.aggregate_id)
            && wanted(&filter.event_type, &event.event_type)
        {
            found.push(event_json(&event));
            if found.len() == limit {
                break;
            }
        }
        if event.seq >= last {
            break;
        }
    }
    Json(json!({"events": found, "scanned_to": scanned_to, "last_seq": last})).into_response()
}

fn event_json(e: &crate::RecordedEvent) -> Value {
    json!({
        "seq": e.seq,
        "aggregate": e.aggregate,
        "id": e.aggregate_id,
        "version": e.version,
        "type": e.event_type,
        "occurred_at": e.occurred_at,
        "correlation_id": e.metadata.correlation_id,
        "actor": e.metadata.actor,
        "traceparent": e.metadata.traceparent,
        "data": e.body().unwrap_or_else(|m| json!({"unreadable": m.to_string()})),
    })
}

#[derive(Debug, Deserialize)]
struct AtVersion {
    version: Option<u64>,
}

/// An aggregate's history, and its state at `version` (default: the latest) as
/// the node's `qry.<aggregate>.at` answers it (so the console needs no domain code).
async fn aggregate(
    State(console): Shared,
    Path((aggregate, id)): Path<(String, String)>,
    Query(at): Query<AtVersion>,
) -> Response {
    for (what, token) in [("aggregate", &aggregate), ("id", &id)] {
        if let Err(reason) = crate::subjects::validate_id(token) {
            return failed(StatusCode::UNPROCESSABLE_ENTITY, format!("{what} {reason}"));
        }
    }
    let history: Vec<Value> = match console
        .store
        .stream_aggregate(&aggregate, &id, 0)
        .take(MAX_HISTORY)
        .try_collect::<Vec<_>>()
        .await
    {
        Ok(events) => events.iter().map(event_json).collect(),
        Err(e) => return failed(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let latest = history
        .last()
        .and_then(|e| e["version"].as_u64())
        .unwrap_or(0);
    let version = at.version.unwrap_or(latest).min(latest);
    let state = if version == 0 {
        Value::Null
    } else {
        let subject = format!("{}qry.{aggregate}.at", console.subjects.prefix());
        let body = json!({"id": id, "version": version}).to_string();
        match console.store.client().request(subject, body.into()).await {
            Ok(reply) => serde_json::from_slice(&reply.payload).unwrap_or(Value::Null),
            Err(e) => json!({"unavailable": format!("no node answered qry.{aggregate}.at: {e}")}),
        }
    };
    Json(json!({"aggregate": aggregate, "id": id, "version": version, "latest": latest, "state": state, "history": history}))
        .into_response()
}

/// Every saga's instances: stage, outcome, next deadline.
async fn sagas(State(console): Shared) -> Response {
    let mut all = Vec::new();
    for saga in &console.sagas {
        match crate::saga::instances::list(&console.store, saga).await {
            Ok(instances) => all.extend(instances.into_iter().map(|i| {
                json!({
                    "saga": i.saga, "id": i.id, "stage": i.stage, "outcome": i.outcome,
                    "deadlines": i.deadlines, "updated_at": i.updated_at,
                    "commands": i.log.iter().map(|e| e.sent.len()).sum::<usize>(),
                })
            })),
            Err(e) => return failed(StatusCode::SERVICE_UNAVAILABLE, e),
        }
    }
    Json(json!({"sagas": console.sagas, "instances": all})).into_response()
}

/// The parked events.
async fn parked(State(console): Shared) -> Response {
    match crate::projection::dlq::list(&console.store).await {
        Ok(parked) => Json(json!({"parked": parked.iter().map(|p| json!({
            "dlq_seq": p.dlq_seq, "consumer": p.consumer, "seq": p.seq,
            "subject": p.subject, "type": p.event_type, "error": p.error,
        })).collect::<Vec<_>>()}))
        .into_response(),
        Err(e) => failed(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `retry` or `discard` a parked event, with the action token.
async fn act(
    State(console): Shared,
    Path((seq, action)): Path<(u64, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = &console.token else {
        return failed(
            StatusCode::FORBIDDEN,
            "this console is read-only (start it with --actions)",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(token.as_str()) {
        tracing::warn!(target: "audit", dlq_seq = seq, action, "console action refused: no or a wrong token");
        return failed(
            StatusCode::UNAUTHORIZED,
            "the action token is missing or wrong",
        );
    }
    tracing::warn!(target: "audit", dlq_seq = seq, action, "console action");
    let result = match action.as_str() {
        "retry" => crate::projection::dlq::retry(&console.store, seq)
            .await
            .map(|p| json!({"retried": seq, "consumer": p.consumer, "seq": p.seq})),
        "discard" => crate::projection::dlq::discard(&console.store, seq)
            .await
            .map(|found| json!({"discarded": seq, "found": found})),
        _ => return failed(StatusCode::NOT_FOUND, format!("no action {action:?}")),
    };
    match result {
        Ok(done) => Json(done).into_response(),
        Err(e) => failed(StatusCode::CONFLICT, e),
    }
}
