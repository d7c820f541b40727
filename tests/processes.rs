//! The binary's processes as an operator meets them: when a node counts as up, and
//! that SIGTERM stops every long-running process whenever it arrives.

mod support;

use jetsource::testing::TestServer;
use serde_json::{json, Value};
use std::time::Duration;
use support::{wait_for_nodes, Process};

/// Regression: `jetsource up --demo` waited on `$SRV.PING`, which a node answers
/// before its endpoints are subscribed, and its first command got "no responders".
#[tokio::test]
async fn a_node_counted_as_serving_answers_its_first_command() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    for round in 0..3 {
        let mut node = Process::start(&server.url(), &["node"]);
        wait_for_nodes(&client, 1).await;
        let body = json!({"id": format!("org{round}"), "name": "Org"});
        let reply = client
            .request(
                "cmd.organization.Register",
                serde_json::to_vec(&body).unwrap().into(),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: the first command: {e}"));
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["status"], "accepted", "round {round}: {reply}");
        node.kill();
        // Let the server notice the dead connection before the next round counts.
        wait_for_no_nodes(&client).await;
    }
}

/// Regression: a SIGTERM that landed between two waits for it was dropped (tokio
/// keeps the handler installed and discards signals nobody waits for), so `jetsource
/// up` had to SIGKILL the saga after 10 s.
#[tokio::test]
async fn sigterm_at_any_moment_of_startup_stops_the_process() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let _node = Process::start(&server.url(), &["node"]);
    wait_for_nodes(&client, 1).await;
    let kinds: [&[&str]; 3] = [
        &["saga", "hiring"],
        &["project", "person_directory"],
        &["node"],
    ];
    for args in kinds {
        for delay_ms in [0, 30, 80, 150, 300, 600, 1200] {
            let mut process = Process::start(&server.url(), args);
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let status = process.terminate(Duration::from_secs(5));
            assert!(
                status.is_some(),
                "jetsource {args:?} still running 5 s after a SIGTERM sent {delay_ms} ms after its start"
            );
        }
    }
}

async fn wait_for_no_nodes(client: &async_nats::Client) {
    for _ in 0..100 {
        let subjects = jetsource::Subjects::default();
        let none = Duration::from_millis(1);
        // `wait_until_serving` for 1 node failing within 1 ms means none answered.
        if jetsource::node::wait_until_serving(client, &subjects, 1, none)
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a killed node still answers $SRV.INFO");
}
