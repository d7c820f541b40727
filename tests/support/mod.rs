//! A tiny ledger aggregate shared by the integration tests, and helpers.
#![allow(dead_code, unreachable_pub)]

pub mod raw;

use jetsource::testing::TestServer;
use jetsource::{Aggregate, DomainEvent, EventStore, StoreConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum LedgerEvent {
    Opened { owner: String },
    Credited { amount: u64 },
    Debited { amount: u64 },
}

impl DomainEvent for LedgerEvent {}

#[derive(Debug, Clone)]
pub enum LedgerCommand {
    Open {
        owner: String,
    },
    Credit(u64),
    /// Two events from one command, to exercise atomic multi-event appends.
    Transfer {
        credit: u64,
        debit: u64,
    },
    Debit(u64),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger is not open")]
    NotOpen,
    #[error("ledger is already open")]
    AlreadyOpen,
    #[error("insufficient funds")]
    InsufficientFunds,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub open: bool,
    pub balance: u64,
    pub entries: u64,
}

impl Aggregate for Ledger {
    const NAME: &'static str = "ledger";
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type Error = LedgerError;

    fn handle(&self, command: &LedgerCommand) -> Result<Vec<LedgerEvent>, LedgerError> {
        use LedgerCommand::*;
        match command {
            Open { owner } if !self.open => Ok(vec![LedgerEvent::Opened {
                owner: owner.clone(),
            }]),
            Open { .. } => Err(LedgerError::AlreadyOpen),
            _ if !self.open => Err(LedgerError::NotOpen),
            Credit(amount) => Ok(vec![LedgerEvent::Credited { amount: *amount }]),
            Debit(amount) if *amount > self.balance => Err(LedgerError::InsufficientFunds),
            Debit(amount) => Ok(vec![LedgerEvent::Debited { amount: *amount }]),
            Transfer { credit, debit } => Ok(vec![
                LedgerEvent::Credited { amount: *credit },
                LedgerEvent::Debited { amount: *debit },
            ]),
        }
    }

    fn apply(&mut self, event: &LedgerEvent) {
        self.entries += 1;
        match event {
            LedgerEvent::Opened { .. } => self.open = true,
            LedgerEvent::Credited { amount } => self.balance += amount,
            LedgerEvent::Debited { amount } => self.balance -= amount,
        }
    }
}

pub async fn open_store(server: &TestServer) -> EventStore {
    open_store_with(server, StoreConfig::default()).await
}

pub async fn open_store_with(server: &TestServer, config: StoreConfig) -> EventStore {
    let client = jetsource::connect(&server.url()).await.expect("connect");
    EventStore::open(client, config).await.expect("open store")
}

pub fn event(n: u64) -> jetsource::NewEvent {
    jetsource::encode_event(
        &LedgerEvent::Credited { amount: n },
        jetsource::store::Codec::Json,
        &Default::default(),
    )
    .expect("encode")
}

/// Appends `events` to a new ledger `id`, expecting success.
pub async fn append_new(
    store: &EventStore,
    id: &str,
    events: Vec<jetsource::NewEvent>,
) -> jetsource::store::Appended {
    store
        .append(jetsource::store::Append::new(
            "ledger",
            id,
            jetsource::store::ExpectedVersion::NoStream,
            events,
        ))
        .await
        .unwrap_or_else(|e| panic!("append to ledger {id}: {e}"))
}

/// Every row of a view bucket, as stored (`{seq, value}`), by key (not the
/// checkpoint stored beside them).
pub async fn view_rows(
    store: &EventStore,
    bucket: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    use futures::StreamExt;
    let kv = store.jetstream().get_key_value(bucket).await.unwrap();
    let mut keys = kv.keys().await.unwrap();
    let mut out = std::collections::BTreeMap::new();
    while let Some(key) = keys.next().await {
        let key = key.unwrap();
        if !jetsource::projection::storage::is_row_key(&key) {
            continue;
        }
        let row = serde_json::from_slice(&kv.get(&key).await.unwrap().unwrap()).unwrap();
        out.insert(key, row);
    }
    out
}

/// A `jetsource` child process (the binary under test), SIGKILLed on drop.
pub struct Process(pub std::process::Child);

impl Process {
    /// `jetsource <args…> --nats-url <url> --log-level warn`.
    pub fn start(url: &str, args: &[&str]) -> Process {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_jetsource"))
            .args(args)
            .args(["--nats-url", url, "--log-level", "warn"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start jetsource {args:?}: {e}"));
        Process(child)
    }

    /// SIGTERM, then waits up to `within` for it to exit: its exit status, or `None`
    /// if it is still running (it is then SIGKILLed on drop).
    pub fn terminate(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).expect("a child pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// kill -9, and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `n` nodes serve every endpoint.
pub async fn wait_for_nodes(client: &async_nats::Client, n: usize) {
    let subjects = jetsource::Subjects::default();
    let timeout = std::time::Duration::from_secs(20);
    if let Err(e) = jetsource::node::wait_until_serving(client, &subjects, n, timeout).await {
        panic!("{e}");
    }
}

/// Waits until the view in `bucket` has applied `seq`, or panics after `within`.
pub async fn wait_applied(store: &EventStore, bucket: &str, seq: u64, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let applied = jetsource::projection::storage::applied(store, bucket)
            .await
            .unwrap_or(0);
        if applied >= seq {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{bucket} stayed at {applied} of {seq}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Takes `person_directory`'s rows as they are (its processes must be stopped),
/// rebuilds the view from nothing up to `last` in this process, and asserts that
/// every row is the same.
pub async fn assert_directory_equals_a_rebuild(store: &EventStore, last: u64) {
    use jetsource::projection::{ProjectionRunner, RunnerConfig};
    let survived = view_rows(store, "view_person_directory").await;
    let js = store.jetstream();
    let events = js.get_stream(&store.config().stream).await.unwrap();
    let _ = events.delete_consumer("proj_person_directory").await;
    js.delete_key_value("view_person_directory").await.unwrap();
    let directory = jetsource::domain::directory::PersonDirectory;
    let mut fresh = ProjectionRunner::new(store.clone(), directory, RunnerConfig::default())
        .await
        .unwrap();
    while fresh.checkpoint() < last {
        fresh.step().await.unwrap();
    }
    let rebuilt = view_rows(store, "view_person_directory").await;
    let differing: Vec<_> = rebuilt
        .keys()
        .chain(survived.keys())
        .filter(|k| survived.get(*k) != rebuilt.get(*k))
        .map(|k| format!("{k}: {:?}, rebuilt {:?}", survived.get(k), rebuilt.get(k)))
        .take(5)
        .collect();
    assert!(
        differing.is_empty(),
        "rows differ from a fresh rebuild: {differing:#?}"
    );
}

/// A node of the reference domain (Person, Organization, the directory's
/// queries) on its own connection to `server`.
pub async fn reference_node(
    server: &TestServer,
    config: jetsource::node::NodeConfig,
) -> (async_nats::Client, EventStore, jetsource::node::RunningNode) {
    use jetsource::domain::{directory::PersonDirectory, Organization, Person};
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client.clone(), StoreConfig::default())
        .await
        .unwrap();
    let node = jetsource::node::Node::new(store.clone(), config)
        .register::<Person>(Default::default())
        .register::<Organization>(Default::default())
        .view(&PersonDirectory)
        .start()
        .await
        .unwrap();
    (client, store, node)
}
