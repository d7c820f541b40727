//! The saga runner on a small domain of its own (the ledger of `support`).

mod support;

use futures::StreamExt;
use jetsource::client::Client;
use jetsource::testing::TestServer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A saga whose state type cannot be stored (serde_json refuses map keys that are
/// not strings): the bug the saga runner used to `expect` away.
#[derive(Debug, Clone, Copy)]
struct Unstorable;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct PairKeyed {
    counts: HashMap<(u8, u8), u8>,
}

impl jetsource::saga::Saga for Unstorable {
    type State = PairKeyed;
    fn name(&self) -> &str {
        "unstorable"
    }
    fn aggregates(&self) -> &[&'static str] {
        &["ledger"]
    }
    fn correlate(
        &self,
        event: &jetsource::RecordedEvent,
    ) -> Result<Option<String>, jetsource::MalformedEvent> {
        Ok(Some(event.aggregate_id.clone()))
    }
    fn react(
        &self,
        _: &PairKeyed,
        _: jetsource::saga::Input<'_>,
    ) -> jetsource::saga::Reaction<PairKeyed> {
        let state = PairKeyed {
            counts: HashMap::from([((1, 2), 3)]),
        };
        let step = jetsource::saga::SagaCommand {
            step: "credit".into(),
            aggregate: "ledger".into(),
            command: "Credit".into(),
            body: serde_json::json!({"id": "l1", "amount": 1}),
        };
        jetsource::saga::Reaction::to(state).send(step)
    }
}

#[tokio::test]
async fn a_saga_state_that_cannot_be_stored_parks_its_input_and_sends_nothing() {
    let server = TestServer::start();
    let store = support::open_store(&server).await;
    let mut commands = store.client().subscribe("cmd.>").await.unwrap();
    support::append_new(&store, "l1", vec![support::event(1)]).await;
    let client = Client::new(store.client().clone(), jetsource::Subjects::default());
    let mut runner =
        jetsource::saga::SagaRunner::new(store.clone(), client, Unstorable, Default::default())
            .await
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let parked = loop {
        runner.step().await.unwrap();
        let parked = jetsource::projection::dlq::list(&store).await.unwrap();
        if !parked.is_empty() {
            break parked;
        }
        assert!(Instant::now() < deadline, "the event was never parked");
    };
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].consumer, "saga_unstorable");
    assert!(
        parked[0].error.contains("does not serialize"),
        "{}",
        parked[0].error
    );
    let sent = tokio::time::timeout(Duration::from_millis(300), commands.next()).await;
    assert!(
        sent.is_err(),
        "no command goes out for a state that cannot be stored"
    );
}
