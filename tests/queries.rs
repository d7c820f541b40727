//! Typed queries a projection declares, served by a node that knows nothing of the
//! domain: the request decoded into the query's type, its refusals as replies, and
//! a response that cannot be encoded answered as a 500 rather than a hang.

mod support;

use jetsource::node::{Node, NodeConfig};
use jetsource::projection::query::{valid_id, Queries, QueryError, Rows};
use jetsource::projection::{ApplyError, Projection, ProjectionRunner, RunnerConfig, View};
use jetsource::testing::TestServer;
use jetsource::{decode_event, RecordedEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use support::LedgerEvent;

/// Each ledger's balance, as rows `ledger.<id>` = `{"balance": n}`.
#[derive(Clone, Copy)]
struct Balances;

#[derive(Deserialize)]
struct ById {
    id: String,
}

#[derive(Deserialize)]
struct Above {
    at_least: u64,
    #[serde(default)]
    limit: Option<u64>,
}

#[derive(Serialize)]
struct Balance {
    id: String,
    balance: u64,
}

async fn balance(rows: Rows, ById { id }: ById) -> Result<Balance, QueryError> {
    let id = valid_id("id", &id)?.to_string();
    let row = rows
        .get(&format!("ledger.{id}"))
        .await?
        .ok_or_else(|| QueryError::not_found(format!("no ledger {id}")))?;
    Ok(Balance {
        balance: row["balance"].as_u64().unwrap_or(0),
        id,
    })
}

async fn above(rows: Rows, Above { at_least, limit }: Above) -> Result<Vec<Value>, QueryError> {
    if at_least == 0 {
        return Err(QueryError::invalid(
            "zero_floor",
            "\"at_least\" must be positive",
        ));
    }
    let page = rows
        .page("ledger.", 0, limit.unwrap_or(100) as usize)
        .await?;
    Ok(page
        .rows
        .into_iter()
        .map(|(_, row)| row)
        .filter(|row| row["balance"].as_u64() >= Some(at_least))
        .collect())
}

/// A response JSON cannot hold: a map whose keys are not strings.
async fn unencodable(_: Rows, _: ById) -> Result<HashMap<(u8, u8), u8>, QueryError> {
    Ok(HashMap::from([((1, 2), 3)]))
}

impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    fn aggregates(&self) -> &[&'static str] {
        &["ledger"]
    }

    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError> {
        let key = format!("ledger.{}", event.aggregate_id);
        let balance = view
            .get(&key)?
            .and_then(|row| row["balance"].as_u64())
            .unwrap_or(0);
        let balance = match decode_event::<LedgerEvent>(event)
            .map_err(|e| ApplyError::Failed(e.to_string()))?
        {
            LedgerEvent::Opened { .. } => 0,
            LedgerEvent::Credited { amount } => balance + amount,
            LedgerEvent::Debited { amount } => balance.saturating_sub(amount),
        };
        view.put(&key, json!({"id": event.aggregate_id, "balance": balance}));
        Ok(())
    }

    fn queries(&self) -> Queries {
        Queries::on("balances")
            .query("get", balance)
            .query("above", above)
            .query("unencodable", unencodable)
    }
}

async fn ask(client: &async_nats::Client, subject: &str, body: &str) -> (Option<u16>, Value) {
    let reply = client
        .request(subject.to_string(), body.to_string().into())
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR_CODE))
        .map(|c| c.as_str().parse().unwrap());
    (code, serde_json::from_slice(&reply.payload).unwrap())
}

#[tokio::test]
async fn a_projections_declared_queries_are_served_typed() {
    let server = TestServer::start();
    let store = support::open_store(&server).await;
    let _node = Node::new(store.clone(), NodeConfig::default())
        .view(&Balances)
        .start()
        .await
        .unwrap();
    support::append_new(&store, "a", vec![support::event(5), support::event(7)]).await;
    let last = support::append_new(&store, "b", vec![support::event(1)]).await;
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(
        ProjectionRunner::new(store.clone(), Balances, RunnerConfig::default())
            .await
            .unwrap()
            .run(stopped),
    );
    support::wait_applied(
        &store,
        "view_balances",
        last.last_seq,
        Duration::from_secs(10),
    )
    .await;
    let client = jetsource::connect(&server.url()).await.unwrap();

    let (code, body) = ask(&client, "qry.balances.get", r#"{"id":"a"}"#).await;
    assert_eq!((code, body), (None, json!({"id": "a", "balance": 12})));
    let (code, body) = ask(&client, "qry.balances.above", r#"{"at_least":2}"#).await;
    assert_eq!((code, body), (None, json!([{"id": "a", "balance": 12}])));

    // The body is decoded into the request type: a wrong type or a missing field
    // is a 400 that names it.
    let (code, body) = ask(&client, "qry.balances.get", r#"{"id":5}"#).await;
    assert_eq!(code, Some(400));
    assert_eq!(body["error"]["code"], "malformed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid type"),
        "{body}"
    );
    let (code, body) = ask(&client, "qry.balances.above", "").await;
    assert_eq!(code, Some(400));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at_least"),
        "{body}"
    );

    // The query's own refusals keep their status and code.
    let (code, body) = ask(&client, "qry.balances.get", r#"{"id":"nobody"}"#).await;
    assert_eq!(
        (code, &body["error"]["code"]),
        (Some(404), &json!("not_found"))
    );
    let (code, body) = ask(&client, "qry.balances.get", r#"{"id":"a.b"}"#).await;
    assert_eq!(
        (code, &body["error"]["code"]),
        (Some(422), &json!("invalid_id"))
    );
    let (code, body) = ask(&client, "qry.balances.above", r#"{"at_least":0}"#).await;
    assert_eq!(
        (code, &body["error"]["code"]),
        (Some(422), &json!("zero_floor"))
    );

    // A response JSON cannot hold is the app's bug: a 500, not a retryable 503.
    let (code, body) = ask(&client, "qry.balances.unencodable", r#"{"id":"a"}"#).await;
    assert_eq!(
        (code, &body["error"]["code"]),
        (Some(500), &json!("internal"))
    );
}

#[test]
fn a_projection_without_queries_declares_none() {
    struct Silent;
    impl Projection for Silent {
        fn name(&self) -> &str {
            "silent"
        }
        fn aggregates(&self) -> &[&'static str] {
            &["ledger"]
        }
        fn apply(&self, _: &mut View, _: &RecordedEvent) -> Result<(), ApplyError> {
            Ok(())
        }
    }
    assert_eq!(Silent.queries().view(), None);
    assert_eq!(
        Balances.queries().names().collect::<Vec<_>>(),
        ["get", "above", "unencodable"]
    );
}

/// An aggregate whose state JSON cannot hold: `qry.<aggregate>.get` used to
/// panic in the node (the `json!` macro's `unwrap`) and leave the request
/// unanswered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Pairs {
    #[serde(skip_deserializing)]
    counts: HashMap<(u8, u8), u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum PairsCommand {
    Count { a: u8, b: u8 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum PairsEvent {
    Counted { a: u8, b: u8 },
}

impl jetsource::DomainEvent for PairsEvent {}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl jetsource::DomainError for Never {
    fn code(&self) -> &'static str {
        "never"
    }
}

impl jetsource::Aggregate for Pairs {
    const NAME: &'static str = "pairs";
    type Command = PairsCommand;
    type Event = PairsEvent;
    type Error = Never;
    fn handle(
        &self,
        PairsCommand::Count { a, b }: &PairsCommand,
    ) -> Result<Vec<PairsEvent>, Never> {
        Ok(vec![PairsEvent::Counted { a: *a, b: *b }])
    }
    fn apply(&mut self, PairsEvent::Counted { a, b }: &PairsEvent) {
        *self.counts.entry((*a, *b)).or_default() += 1;
    }
}

#[tokio::test]
async fn an_aggregate_state_json_cannot_hold_is_a_500_not_a_panic() {
    let server = TestServer::start();
    let store = support::open_store(&server).await;
    let _node = Node::new(store.clone(), NodeConfig::default())
        .register::<Pairs>(Default::default())
        .start()
        .await
        .unwrap();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let (code, body) = ask(&client, "cmd.pairs.Count", r#"{"id":"p1","a":1,"b":2}"#).await;
    assert_eq!(
        (code, &body["status"]),
        (None, &json!("accepted")),
        "{body}"
    );
    for _ in 0..2 {
        let (code, body) = ask(&client, "qry.pairs.get", r#"{"id":"p1"}"#).await;
        assert_eq!(
            (code, &body["error"]["code"]),
            (Some(500), &json!("internal")),
            "{body}"
        );
    }
}
