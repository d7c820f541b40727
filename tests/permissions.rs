//! The documented permissions (dev/permissions.conf): applications may send
//! commands and queries but never publish to `events.>`.

use jetsource::domain::Person;
use jetsource::nats_server::Durability;
use jetsource::node::{Node, NodeConfig};
use jetsource::testing::TestServer;
use jetsource::{EventStore, StoreConfig};
use std::time::Duration;

fn config() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dev/permissions.conf"))
        .unwrap()
        .replace("$JETSOURCE_PASSWORD", "node-secret")
        .replace("$APP_PASSWORD", "app-secret")
}

async fn connect(server: &TestServer, user: &str, password: &str) -> async_nats::Client {
    let options = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into());
    jetsource::connect_with(&server.url(), options)
        .await
        .unwrap()
}

#[tokio::test]
async fn applications_send_commands_but_cannot_write_events() {
    let server = TestServer::start_with_config(Durability::Safe, &config());
    let node_client = connect(&server, "jetsource", "node-secret").await;
    let store = EventStore::open(node_client, StoreConfig::default())
        .await
        .unwrap();
    let _node = Node::new(store.clone(), NodeConfig::default())
        .register::<Person>(Default::default())
        .start()
        .await
        .unwrap();

    let app = connect(&server, "app", "app-secret").await;
    let reply = app
        .request(
            "cmd.person.Register",
            r#"{"id":"p1","name":"Ada","email":"ada@example.org"}"#.into(),
        )
        .await
        .unwrap();
    let ack: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(ack["status"], "accepted", "{ack}");
    let reply = app
        .request("qry.person.get", r#"{"id":"p1"}"#.into())
        .await
        .unwrap();
    assert!(reply.headers.is_none(), "{:?}", reply.payload);

    // A forged event: the server refuses the publish, so nothing reaches the stream.
    app.publish("events.person.p1", "forged".into())
        .await
        .unwrap();
    let forged = tokio::time::timeout(
        Duration::from_secs(2),
        async_nats::jetstream::new(app.clone()).publish("events.person.p1", "forged".into()),
    )
    .await;
    let acked = match forged {
        Ok(Ok(ack)) => ack.await.is_ok(),
        _ => false,
    };
    assert!(
        !acked,
        "a JetStream publish to events.> must not be acknowledged"
    );
    app.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = store.read_aggregate("person", "p1", 0).await.unwrap();
    assert_eq!(events.len(), 1, "only the command's event may be stored");
    // Nor can it read the stream behind jetsource's back.
    let info = tokio::time::timeout(
        Duration::from_secs(2),
        app.request("$JS.API.STREAM.INFO.EVENTS", "".into()),
    )
    .await;
    assert!(
        !matches!(info, Ok(Ok(_))),
        "an application must not reach the JetStream API"
    );
}
