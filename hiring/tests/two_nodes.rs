//! Two real `jetsource node` processes serving the same aggregates under
//! concurrent clients: conflicts are retried and nothing is lost.

mod support;

use jetsource::testing::TestServer;
use serde_json::{json, Value};
use std::time::Duration;
use support::wait_for_nodes;

#[tokio::test]
async fn two_node_processes_share_the_load_and_lose_nothing() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let _a = support::start(&server.url(), &["node"]);
    let _b = support::start(&server.url(), &["node"]);
    wait_for_nodes(&client, 2).await;

    let send = |client: async_nats::Client, subject: &'static str, body: Value| async move {
        let reply = client
            .request(subject, serde_json::to_vec(&body).unwrap().into())
            .await
            .expect("a reply");
        serde_json::from_slice::<Value>(&reply.payload).unwrap()
    };
    let orgs = 4;
    for o in 0..orgs {
        let r = send(
            client.clone(),
            "cmd.organization.Register",
            json!({"id": format!("org{o}"), "name": "Org"}),
        )
        .await;
        assert_eq!(r["status"], "accepted", "{r}");
    }
    // 16 clients open positions on the same 4 organizations at once: every node
    // sees the others' writes only through conflicts.
    let per_client = 25;
    let tasks: Vec<_> = (0..16)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut accepted = 0;
                for i in 0..per_client {
                    let body = json!({"id": format!("org{}", (c + i) % orgs), "position_id": format!("c{c}-{i}"), "title": "Role"});
                    let r = send(client.clone(), "cmd.organization.OpenPosition", body).await;
                    assert_eq!(r["status"], "accepted", "{r}");
                    accepted += 1;
                }
                accepted
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(accepted, 16 * per_client);

    let mut positions = 0;
    for o in 0..orgs {
        // History comes from the events themselves (the binary's `get` is a view).
        let r = send(
            client.clone(),
            "qry.organization.history",
            json!({"id": format!("org{o}")}),
        )
        .await;
        let events = r["events"].as_array().unwrap();
        let versions: Vec<u64> = events
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect();
        assert_eq!(
            versions,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "versions must be contiguous"
        );
        positions += events
            .iter()
            .filter(|e| e["type"] == "PositionOpened")
            .count();
    }
    assert_eq!(positions, accepted, "every accepted command left its event");

    // Both processes did some of the work.
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply("$SRV.STATS.jetsource", inbox, "".into())
        .await
        .unwrap();
    let mut per_node = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(
        Duration::from_millis(300),
        futures::StreamExt::next(&mut sub),
    )
    .await
    {
        let v: Value = serde_json::from_slice(&msg.payload).unwrap();
        let n: u64 = v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["num_requests"].as_u64().unwrap_or(0))
            .sum();
        per_node.push(n);
    }
    assert_eq!(per_node.len(), 2, "{per_node:?}");
    assert!(
        per_node.iter().all(|n| *n > 0),
        "the queue group must spread requests: {per_node:?}"
    );
}
