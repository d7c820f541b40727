//! The command and query service: `jetsource node`.
//!
//! One NATS service, `jetsource` (so `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`
//! answer), with one endpoint per command (`cmd.<aggregate>.<Command>`) and per
//! query (`qry.<aggregate>.get|history`) of every registered aggregate, all in the
//! service's queue group, so any number of nodes share the load. A node answers
//! only the subjects it serves: nodes of different domains share one NATS without
//! answering for each other, and a subject nobody serves gets the server's "no
//! responders" status.
//!
//! - [`request`]: reading a request (size, content type, id, headers).
//! - [`reply`]: the ack, the rejection and the fixed status table.
//! - `registry`: one registered aggregate behind a type-erased handler.
//!
//! Idempotency needs no bucket of its own: a command id rides on its first event
//! as the stream's `Nats-Msg-Id`, so the server refuses a retry for the whole
//! duplicate window, and the node answers it with the events stored the first
//! time (see [`Repository::execute`]).
//! - `views`: the queries projections declare, served over their active version, with
//!   `Jetsource-Min-Seq`.
//! - `sagas`: `qry.sagas.get`, one saga instance, with `Jetsource-Min-Seq` on the
//!   saga's checkpoint (how a client follows a saga's effect).

mod registry;
pub mod reply;
pub mod request;
mod sagas;
mod views;

pub use reply::{Ack, Rejection, Status};

use crate::aggregate::{Aggregate, DomainError};
use crate::policy::{Action, Caller, Policy};
use crate::projection::query::Queries;
use crate::projection::Projection;
use crate::repository::{Repository, RepositoryConfig};
use crate::store::EventStore;
use crate::telemetry::metrics::Requests;
use crate::telemetry::trace::TraceContext;
use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use registry::{Handler, Registered};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

/// The service name every node registers under.
pub const SERVICE_NAME: &str = "jetsource";

/// How a node serves.
///
/// ```
/// let cfg = jetsource::node::NodeConfig { max_body_bytes: 16 * 1024, ..Default::default() };
/// assert_eq!(cfg.max_in_flight, 1024);
/// ```
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Largest request body accepted (bytes); larger ones get a 400.
    pub max_body_bytes: usize,
    /// Requests handled at once; more wait in the client connection.
    pub max_in_flight: usize,
    /// Queries answered at once (a query may read a page of rows or replay an
    /// aggregate): more wait up to `query_wait`, then get a 503 `busy`, so
    /// queries can never crowd commands out.
    pub max_concurrent_queries: usize,
    /// How long a query waits for one of the `max_concurrent_queries` slots.
    pub query_wait: Duration,
    /// Most events one `history` query returns.
    pub history_limit: usize,
    /// How long a query with `Jetsource-Min-Seq` waits for its view.
    pub min_seq_wait: Duration,
    /// Who may send which command and ask which query; `None` lets every caller
    /// do everything (a development deployment without accounts).
    pub policy: Option<Arc<Policy>>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            max_body_bytes: 64 * 1024,
            max_in_flight: 1024,
            max_concurrent_queries: 32,
            query_wait: Duration::from_secs(2),
            history_limit: 1000,
            min_seq_wait: Duration::from_secs(2),
            policy: None,
        }
    }
}

/// The name of the endpoint a node adds last (`qry.system.status`).
const STATUS_ENDPOINT: &str = "qry-system-status";

/// Waits until `nodes` nodes serve every endpoint, or `timeout` passes.
///
/// `$SRV.PING` is no readiness check: a node's service answers it before its
/// endpoints are subscribed. A node is counted once its `$SRV.INFO` lists the
/// endpoint it adds last, so a command sent after this returns finds a responder.
/// Nodes serving another subject prefix are not counted.
///
/// ```no_run
/// # async fn demo(nats: async_nats::Client) -> Result<(), jetsource::node::NotServing> {
/// use jetsource::{node, Subjects};
/// node::wait_until_serving(&nats, &Subjects::default(), 1, std::time::Duration::from_secs(30)).await?;
/// # Ok(()) }
/// ```
pub async fn wait_until_serving(
    client: &async_nats::Client,
    subjects: &crate::Subjects,
    nodes: usize,
    timeout: Duration,
) -> Result<(), NotServing> {
    let status = format!("{}qry.system.status", subjects.prefix());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut serving = 0;
    loop {
        if let Ok(count) = count_serving(client, &status).await {
            serving = count;
            if serving >= nodes {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NotServing {
                serving,
                wanted: nodes,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nodes whose `$SRV.INFO` reply, within 250 ms, lists `status` as an endpoint.
async fn count_serving(
    client: &async_nats::Client,
    status: &str,
) -> Result<usize, async_nats::Error> {
    let replies = service_replies(client, "INFO", Duration::from_millis(250)).await?;
    Ok(replies
        .iter()
        .filter_map(|r| serde_json::from_slice::<service::Info>(r).ok())
        .filter(|info| info.endpoints.iter().any(|e| e.subject == status))
        .count())
}

/// Every node's reply to `$SRV.<verb>.jetsource` (`PING`, `INFO`, `STATS`) that
/// arrives within `wait`.
///
/// ```no_run
/// # async fn demo(nats: async_nats::Client) -> Result<(), async_nats::Error> {
/// let stats = jetsource::node::service_replies(&nats, "STATS", std::time::Duration::from_millis(500)).await?;
/// println!("{} nodes", stats.len());
/// # Ok(()) }
/// ```
pub async fn service_replies(
    client: &async_nats::Client,
    verb: &str,
    wait: Duration,
) -> Result<Vec<Bytes>, async_nats::Error> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(format!("$SRV.{verb}.{SERVICE_NAME}"), inbox, Bytes::new())
        .await?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await {
        out.push(reply.payload);
    }
    Ok(out)
}

/// Fewer nodes than wanted served every endpoint in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "{serving} of {wanted} jetsource nodes serving: is `jetsource node` running? (see its log)"
)]
pub struct NotServing {
    /// Nodes that were serving at the deadline.
    pub serving: usize,
    /// Nodes waited for.
    pub wanted: usize,
}

/// What went wrong starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The service or an endpoint could not be added.
    #[error("could not start the NATS service: {0}")]
    Service(async_nats::Error),
    /// A view's bucket could not be opened.
    #[error("could not open a view's bucket: {0}")]
    Bucket(#[from] async_nats::jetstream::context::CreateKeyValueError),
    /// An aggregate was registered twice.
    #[error("aggregate {0} is registered twice")]
    Duplicate(&'static str),
}

/// A node being assembled: the store plus the aggregates it serves.
///
/// ```no_run
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// # enum LampCommand { SwitchOff { reason: String } }
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # #[serde(tag = "type", content = "data")]
/// # enum LampEvent { SwitchedOff {} }
/// # impl jetsource::DomainEvent for LampEvent {}
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # impl jetsource::DomainError for Never { fn code(&self) -> &'static str { "never" } }
/// # #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)] struct Lamp;
/// # impl jetsource::Aggregate for Lamp {
/// #     const NAME: &'static str = "lamp";
/// #     type Command = LampCommand; type Event = LampEvent; type Error = Never;
/// #     fn handle(&self, _: &LampCommand) -> Result<Vec<LampEvent>, Never> { Ok(vec![LampEvent::SwitchedOff {}]) }
/// #     fn apply(&mut self, _: &LampEvent) {}
/// # }
/// # async fn demo(store: jetsource::EventStore) -> Result<(), Box<dyn std::error::Error>> {
/// let node = jetsource::node::Node::new(store, Default::default())
///     .register::<Lamp>(Default::default())
///     .start()
///     .await?;
/// tokio::signal::ctrl_c().await?;
/// node.shutdown(std::time::Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
pub struct Node {
    store: EventStore,
    config: NodeConfig,
    handlers: Vec<Arc<dyn Handler>>,
    /// Projections whose queries are served: name, view token, queries.
    views: Vec<(String, &'static str, Queries)>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.handlers.iter().map(|h| h.aggregate()).collect();
        f.debug_struct("Node").field("aggregates", &names).finish()
    }
}

struct Context {
    config: NodeConfig,
    queries: Semaphore,
}

impl Node {
    /// A node over `store` serving nothing yet.
    pub fn new(store: EventStore, config: NodeConfig) -> Node {
        Node {
            store,
            config,
            handlers: Vec::new(),
            views: Vec::new(),
        }
    }

    /// Serves aggregate `A`: its commands (the variants of `A::Command`, an
    /// externally tagged serde enum of struct variants) and its `get`/`history`
    /// queries. One line per aggregate.
    pub fn register<A>(self, config: RepositoryConfig) -> Node
    where
        A: Aggregate + Serialize,
        A::Command: DeserializeOwned,
        A::Error: DomainError,
    {
        let repository = Repository::<A>::new(self.store.clone(), config);
        self.serve(repository)
    }

    /// Serves aggregate `A` through a repository built elsewhere (with snapshots,
    /// say). It should be over this node's store.
    pub fn serve<A>(mut self, repository: Repository<A>) -> Node
    where
        A: Aggregate + Serialize,
        A::Command: DeserializeOwned,
        A::Error: DomainError,
    {
        self.handlers.push(Arc::new(Registered::<A> {
            repository,
            commands: registry::variant_names::<A::Command>(),
        }));
        self
    }

    /// Serves the queries `projection` declares ([`Projection::queries`]) over its
    /// view, as `qry.<view>.<query>`.
    pub fn view(mut self, projection: &dyn Projection) -> Node {
        let queries = projection.queries();
        if let Some(view) = queries.view() {
            self.views
                .push((projection.name().to_string(), view, queries));
        }
        self
    }

    /// Joins the `jetsource` service and starts answering.
    pub async fn start(self) -> Result<RunningNode, NodeError> {
        let mut seen = HashSet::new();
        for h in &self.handlers {
            if !seen.insert(h.aggregate()) {
                return Err(NodeError::Duplicate(h.aggregate()));
            }
        }
        let client = self.store.client().clone();
        let prefix = self.store.subjects().prefix().to_string();
        let aggregates: Vec<_> = self.handlers.iter().map(|h| h.aggregate()).collect();
        let service = client
            .service_builder()
            .description("jetsource command and query service")
            .metadata([("aggregates".to_string(), aggregates.join(","))].into())
            .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(NodeError::Service)?;

        let mut routes: Vec<(String, Route)> = Vec::new();
        for h in &self.handlers {
            let agg = h.aggregate();
            for &command in h.commands() {
                routes.push((
                    format!("{prefix}cmd.{agg}.{command}"),
                    Route::Command(h.clone(), command),
                ));
            }
            for query in ["get", "history", "at"] {
                routes.push((
                    format!("{prefix}qry.{agg}.{query}"),
                    Route::Query(h.clone(), query),
                ));
            }
        }
        for (projection, view, queries) in self.views {
            let served =
                Arc::new(views::Served::open(&self.store, &projection, view, queries).await?);
            for query in served.names() {
                // A view's query takes the subject over from an aggregate's own
                // (`qry.person.get` from the directory rather than from the events).
                let subject = format!("{prefix}qry.{view}.{query}");
                routes.retain(|(s, _)| *s != subject);
                routes.push((subject, Route::View(served.clone(), query)));
            }
        }
        routes.push((
            format!("{prefix}qry.sagas.get"),
            Route::Saga(self.store.clone()),
        ));
        let context = Arc::new(Context {
            config: self.config.clone(),
            queries: Semaphore::new(self.config.max_concurrent_queries.max(1)),
        });
        let in_flight = Arc::new(Semaphore::new(self.config.max_in_flight));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = JoinSet::new();
        let mut endpoints = Vec::new();
        for (subject, route) in routes {
            let endpoint = service
                .endpoint_builder()
                .name(subject.replace('.', "-").replace('>', "all"))
                .add(subject.clone())
                .await
                .map_err(NodeError::Service)?;
            endpoints.push((endpoint, route));
        }
        // Last on purpose: `$SRV.PING` answers as soon as the service exists, so
        // readiness is "`$SRV.INFO` lists the status endpoint" (see `wait_until_serving`).
        let status = service
            .endpoint_builder()
            .name(STATUS_ENDPOINT)
            .add(format!("{prefix}qry.system.status"))
            .await
            .map_err(NodeError::Service)?;
        endpoints.push((status, Route::Status(self.store.clone())));
        for (endpoint, route) in endpoints {
            loops.spawn(serve_endpoint(
                endpoint,
                route,
                context.clone(),
                in_flight.clone(),
                stop_rx.clone(),
            ));
        }
        tracing::info!(aggregates = ?aggregates, "node serving");
        Ok(RunningNode {
            service,
            loops,
            stop: stop_tx,
            in_flight,
            max_in_flight: self.config.max_in_flight,
        })
    }
}

#[derive(Clone)]
enum Route {
    Command(Arc<dyn Handler>, &'static str),
    Query(Arc<dyn Handler>, &'static str),
    View(Arc<views::Served>, &'static str),
    Saga(EventStore),
    Status(EventStore),
}

impl Route {
    /// The metrics of the endpoint serving this route.
    fn metrics(&self) -> Requests {
        match self {
            Route::Command(h, command) => Requests::command(h.aggregate(), command),
            Route::Query(h, query) => Requests::query(h.aggregate(), query),
            Route::View(served, query) => Requests::query(served.view, query),
            Route::Saga(_) => Requests::query("sagas", "get"),
            Route::Status(_) => Requests::query("system", "status"),
        }
    }
}

/// A serving node.
pub struct RunningNode {
    service: service::Service,
    loops: JoinSet<()>,
    stop: watch::Sender<bool>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode").finish_non_exhaustive()
    }
}

impl RunningNode {
    /// The service's per-endpoint statistics (what `$SRV.STATS` reports).
    pub async fn stats(&self) -> std::collections::HashMap<String, service::endpoint::Stats> {
        self.service.stats().await
    }

    /// Stops taking requests, lets the ones in flight finish (up to `grace`), and
    /// leaves the service.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        while self.loops.join_next().await.is_some() {}
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, self.in_flight.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over with requests still in flight");
        }
        if let Err(e) = self.service.stop().await {
            tracing::warn!(error = %e, "leaving the service");
        }
        tracing::info!("node stopped");
    }
}

async fn serve_endpoint(
    mut endpoint: service::endpoint::Endpoint,
    route: Route,
    context: Arc<Context>,
    in_flight: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = Arc::new(route.metrics());
    loop {
        let request = tokio::select! {
            r = endpoint.next() => match r { Some(r) => r, None => return },
            _ = stop.changed() => {
                let _ = endpoint.stop().await;
                return;
            }
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let route = route.clone();
        let context = context.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            handle(&context, route, &metrics, request).await;
            drop(permit);
        });
    }
}

async fn handle(context: &Context, route: Route, metrics: &Requests, request: service::Request) {
    let started = std::time::Instant::now();
    let msg = &request.message;
    // A sampled request's span continues the caller's trace (under the target an
    // exporter records); the command's events carry the trace on, sampled or not.
    let trace = request::trace_context(msg);
    let span = match &trace {
        Ok(Some(t)) if t.sampled() => {
            let span = tracing::info_span!(
                target: crate::telemetry::trace::TARGET,
                "request",
                subject = %msg.subject,
                correlation_id = tracing::field::Empty
            );
            t.continue_in(&span);
            span
        }
        _ => tracing::info_span!(
            "request",
            subject = %msg.subject,
            correlation_id = tracing::field::Empty
        ),
    };
    async {
        let result = match (trace, authorize(context, &route, msg)) {
            (Ok(trace), Ok(caller)) => answer(context, &route, &caller, msg, trace).await,
            (Err(rejection), _) | (_, Err(rejection)) => Err(rejection),
        };
        metrics.record(result.as_ref().err().map(|r| r.status), started.elapsed());
        let sent = match result {
            Ok(body) => {
                tracing::debug!("accepted");
                request.respond(Ok(body)).await
            }
            Err(rejection) => {
                match rejection.status {
                    Status::Unavailable => tracing::warn!(%rejection, "rejected"),
                    _ => tracing::info!(%rejection, "rejected"),
                }
                // An error reply with the rejection as its body, counted in
                // `$SRV.STATS`' errors.
                let error = service::error::Error {
                    status: rejection.message.replace(['\r', '\n'], " "),
                    code: rejection.status.code().into(),
                };
                request
                    .respond_error_with_body(error, rejection.headers(), rejection.body())
                    .await
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not send the reply");
        }
    }
    .instrument(span)
    .await
}

/// The caller, if the policy lets it take this route; a refusal is logged for audit.
fn authorize(
    context: &Context,
    route: &Route,
    msg: &async_nats::Message,
) -> Result<Caller, Rejection> {
    let caller = request::caller(msg)?;
    let Some(policy) = &context.config.policy else {
        return Ok(caller);
    };
    let action = match route {
        Route::Command(h, command) => Action::Command {
            aggregate: h.aggregate(),
            command,
        },
        Route::Query(h, query) => Action::Query {
            view: h.aggregate(),
            query,
        },
        Route::View(served, query) => Action::Query {
            view: served.view,
            query,
        },
        Route::Saga(_) => Action::Query {
            view: "sagas",
            query: "get",
        },
        Route::Status(_) => Action::Query {
            view: "system",
            query: "status",
        },
    };
    policy.authorize(&caller, action).map_err(|denied| {
        tracing::warn!(target: "audit", caller = %caller, %action, "denied");
        Rejection::new(Status::Forbidden, "forbidden", denied)
    })?;
    Ok(caller)
}

async fn answer(
    context: &Context,
    route: &Route,
    caller: &Caller,
    msg: &async_nats::Message,
    trace: Option<TraceContext>,
) -> Result<Bytes, Rejection> {
    let _slot = match route {
        Route::Command(..) => None,
        _ => Some(query_slot(context).await?),
    };
    match route {
        Route::Command(h, command) => {
            command_reply(context, h.as_ref(), command, caller, msg, trace).await
        }
        // Boxed: inline, these futures would make every command's task as large
        // as the largest query's (22 KB, copied whenever the task moves).
        Route::Query(h, query) => Box::pin(query_reply(context, h.as_ref(), query, msg)).await,
        Route::View(served, query) => Box::pin(view_reply(context, served, query, msg)).await,
        Route::Saga(store) => {
            let fields = request::object(msg, context.config.max_body_bytes)?;
            let min_seq = request::min_seq(msg)?;
            let wait = context.config.min_seq_wait;
            let instance = Box::pin(sagas::get(store, &fields, min_seq, wait)).await?;
            Ok(serde_json::to_vec(&instance)
                .expect("a JSON value serializes")
                .into())
        }
        Route::Status(store) => Box::pin(crate::projection::status::consumers(store))
            .await
            .map(|c| {
                serde_json::to_vec(&serde_json::json!({"consumers": c}))
                    .expect("JSON")
                    .into()
            })
            .map_err(|e| Rejection::new(Status::Unavailable, "store_unavailable", e)),
    }
}

/// One of the node's query slots, or a 503 once `query_wait` has passed.
async fn query_slot(context: &Context) -> Result<tokio::sync::SemaphorePermit<'_>, Rejection> {
    let wait = context.config.query_wait;
    match tokio::time::timeout(wait, context.queries.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(Rejection::new(
            Status::Unavailable,
            "busy",
            format!(
                "all {} query slots busy for {wait:?}; retry",
                context.config.max_concurrent_queries
            ),
        )),
    }
}

async fn command_reply(
    context: &Context,
    handler: &dyn Handler,
    command: &str,
    caller: &Caller,
    msg: &async_nats::Message,
    trace: Option<TraceContext>,
) -> Result<Bytes, Rejection> {
    let client_id = request::client_command_id(msg)?;
    let body = request::body(msg, context.config.max_body_bytes)?;
    let expected = request::expected_version(msg)?;
    // Only a client's own id can come back as a retry; a made-up one cannot.
    let may_be_retry = client_id.is_some();
    let command_id = client_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let mut metadata =
        request::metadata(msg, &command_id, caller, context.config.policy.as_deref())?;
    if let Some(trace) = trace {
        trace.onward(&tracing::Span::current()).write(&mut metadata);
    }
    if let Some(correlation) = &metadata.correlation_id {
        tracing::Span::current().record("correlation_id", correlation.as_str());
    }
    let ack = handler
        .execute(command, body, metadata, expected, may_be_retry)
        .await?;
    Ok(Bytes::from(
        serde_json::to_vec(&ack).expect("an ack serializes"),
    ))
}

async fn view_reply(
    context: &Context,
    served: &views::Served,
    query: &str,
    msg: &async_nats::Message,
) -> Result<Bytes, Rejection> {
    let fields = request::object(msg, context.config.max_body_bytes)?;
    let rows = served.rows().await?;
    if let Some(min_seq) = request::min_seq(msg)? {
        served
            .wait_for(&rows, min_seq, context.config.min_seq_wait)
            .await?;
    }
    let value = served
        .answer(query, rows, serde_json::Value::Object(fields))
        .await?;
    Ok(serde_json::to_vec(&value)
        .expect("a JSON value serializes")
        .into())
}

async fn query_reply(
    context: &Context,
    handler: &dyn Handler,
    query: &str,
    msg: &async_nats::Message,
) -> Result<Bytes, Rejection> {
    let body = request::body(msg, context.config.max_body_bytes)?;
    let number = |name: &str| -> Result<Option<u64>, Rejection> {
        match body.fields.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Rejection::new(
                    Status::Malformed,
                    "malformed",
                    format!("\"{name}\" must be a non-negative integer"),
                )
            }),
        }
    };
    let value = match query {
        "get" => handler.get(&body.id, None).await?,
        "at" => {
            let point = match (number("version")?, body.fields.get("at")) {
                (Some(v), None) => crate::repository::PointInTime::Version(v),
                (None, Some(t)) => {
                    let instant = t
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .ok_or_else(|| {
                            Rejection::new(
                                Status::Malformed,
                                "malformed",
                                "\"at\" must be an RFC 3339 instant",
                            )
                        })?;
                    crate::repository::PointInTime::Instant(instant.with_timezone(&chrono::Utc))
                }
                _ => {
                    return Err(Rejection::new(
                        Status::Malformed,
                        "malformed",
                        "give either \"version\" or \"at\"",
                    ))
                }
            };
            handler.get(&body.id, Some(point)).await?
        }
        _ => {
            let after = number("after")?.unwrap_or(0);
            let limit = number("limit")?.map_or(context.config.history_limit, |l| {
                (l as usize).min(context.config.history_limit)
            });
            handler.history(&body.id, after, limit).await?
        }
    };
    Ok(serde_json::to_vec(&value)
        .expect("a JSON value serializes")
        .into())
}
