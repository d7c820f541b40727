//! A tiny ledger aggregate: the platform's tests use it as their own domain.
#![allow(dead_code, unreachable_pub, unused_imports)]

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

pub use jetsource::testing::{view_rows, wait_applied};
