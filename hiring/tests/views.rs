//! View-backed queries with read-your-writes, and `jetsource project` surviving kill -9.

mod support;

use async_nats::HeaderMap;
use hiring::directory::PersonDirectory;
use hiring::{Organization, Person};
use jetsource::node::{Node, NodeConfig};
use jetsource::projection::{ProjectionRunner, RunnerConfig};
use jetsource::testing::TestServer;
use jetsource::{EventStore, StoreConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn node(
    server: &TestServer,
    min_seq_wait: Duration,
) -> (async_nats::Client, EventStore, jetsource::node::RunningNode) {
    let config = NodeConfig {
        min_seq_wait,
        ..Default::default()
    };
    support::reference_node(server, config).await
}

/// Runs `projection` in this process, looking for new events every 50 ms, until
/// the returned sender is dropped.
async fn run_projection<P: jetsource::projection::Projection>(
    store: &EventStore,
    projection: P,
) -> tokio::sync::watch::Sender<bool> {
    let quick = RunnerConfig {
        idle_wait: Duration::from_millis(50),
        ..Default::default()
    };
    let runner = ProjectionRunner::new(store.clone(), projection, quick)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(runner.run(stopped));
    stop
}

/// Runs `person_directory` in this process until the returned sender is dropped.
async fn run_directory(store: &EventStore) -> tokio::sync::watch::Sender<bool> {
    run_projection(store, PersonDirectory).await
}

/// A node serving the reference aggregates and the `organizations` view's
/// queries, with that projection running in this process.
async fn organizations_node(
    server: &TestServer,
    min_seq_wait: Duration,
) -> (
    async_nats::Client,
    jetsource::node::RunningNode,
    tokio::sync::watch::Sender<bool>,
) {
    use hiring::views::OrganizationsView;
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client.clone(), StoreConfig::default())
        .await
        .unwrap();
    let config = NodeConfig {
        min_seq_wait,
        ..Default::default()
    };
    let node = Node::new(store.clone(), config)
        .register::<Person>(Default::default())
        .register::<Organization>(Default::default())
        .view(&OrganizationsView)
        .start()
        .await
        .unwrap();
    let projection = run_projection(&store, OrganizationsView).await;
    (client, node, projection)
}

async fn ask(
    client: &async_nats::Client,
    subject: &str,
    body: Value,
    min_seq: Option<u64>,
) -> (Value, Option<u16>) {
    let mut headers = HeaderMap::new();
    if let Some(seq) = min_seq {
        headers.insert("Jetsource-Min-Seq", seq.to_string().as_str());
    }
    let reply = client
        .send_request(
            subject.to_string(),
            async_nats::Request::new()
                .headers(headers)
                .payload(serde_json::to_vec(&body).unwrap().into()),
        )
        .await
        .unwrap();
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().parse().unwrap());
    (serde_json::from_slice(&reply.payload).unwrap(), code)
}

#[tokio::test]
async fn a_query_with_min_seq_reads_the_write_it_follows() {
    let server = TestServer::start();
    let (client, store, _node) = node(&server, Duration::from_secs(5)).await;
    let _stop = run_directory(&store).await;

    let (ack, _) = ask(
        &client,
        "cmd.person.Register",
        json!({"id": "p1", "name": "Ada Lovelace", "email": "ada@example.org"}),
        None,
    )
    .await;
    let (person, code) = ask(
        &client,
        "qry.person.by_email",
        json!({"email": "ADA@example.org"}),
        ack["seq"].as_u64(),
    )
    .await;
    assert_eq!(code, None, "{person}");
    assert_eq!(
        (person["id"].as_str(), person["name"].as_str()),
        (Some("p1"), Some("Ada Lovelace"))
    );

    let (ack, _) = ask(
        &client,
        "cmd.person.ChangeEmail",
        json!({"id": "p1", "email": "ada@lovelace.org"}),
        None,
    )
    .await;
    let (person, code) = ask(
        &client,
        "qry.person.by_email",
        json!({"email": "ada@lovelace.org"}),
        ack["seq"].as_u64(),
    )
    .await;
    assert_eq!((code, person["id"].as_str()), (None, Some("p1")));
    let (gone, code) = ask(
        &client,
        "qry.person.by_email",
        json!({"email": "ada@example.org"}),
        None,
    )
    .await;
    assert_eq!(
        (code, gone["error"]["code"].as_str()),
        (Some(404), Some("not_found"))
    );
}

#[tokio::test]
async fn a_view_that_cannot_catch_up_in_time_answers_503() {
    let server = TestServer::start();
    let (client, _store, _node) = node(&server, Duration::from_millis(200)).await;
    let (ack, _) = ask(
        &client,
        "cmd.person.Register",
        json!({"id": "p1", "name": "A", "email": "a@example.org"}),
        None,
    )
    .await;
    let started = Instant::now();
    let (reply, code) = ask(
        &client,
        "qry.person.by_email",
        json!({"email": "a@example.org"}),
        ack["seq"].as_u64(),
    )
    .await;
    assert_eq!(
        (code, reply["error"]["code"].as_str()),
        (Some(503), Some("view_behind"))
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    let (reply, code) = ask(&client, "qry.person.by_email", json!({}), None).await;
    assert_eq!(
        (code, reply["error"]["code"].as_str()),
        (Some(400), Some("malformed"))
    );
}

#[tokio::test]
async fn the_person_list_pages_through_everyone_in_write_order() {
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let (client, store, _node) = node(&server, Duration::from_secs(5)).await;
    let mut last = 0;
    let ids: Vec<String> = (0..23).map(|i| format!("p{i:02}")).collect();
    for id in &ids {
        let (ack, _) = ask(
            &client,
            "cmd.person.Register",
            json!({"id": id, "name": format!("N {id}"), "email": format!("{id}@example.org")}),
            None,
        )
        .await;
        last = ack["seq"].as_u64().unwrap();
    }
    // A rename rewrites p00's row (it moves later in the write order).
    let (ack, _) = ask(
        &client,
        "cmd.person.ChangeName",
        json!({"id": "p00", "name": "Renamed"}),
        None,
    )
    .await;
    last = last.max(ack["seq"].as_u64().unwrap());
    let mut runner = ProjectionRunner::new(store.clone(), PersonDirectory, RunnerConfig::default())
        .await
        .unwrap();
    while runner.checkpoint() < last {
        runner.step().await.unwrap();
    }
    let mut listed = Vec::new();
    let mut after = json!(null);
    let mut pages = 0;
    loop {
        let body = json!({"limit": 10, "after": after});
        let (page, code) = ask(&client, "qry.person.list", body, Some(last)).await;
        assert_eq!(code, None, "{page}");
        let people = page["people"].as_array().unwrap();
        assert!(people.len() <= 10, "{page}");
        listed.extend(people.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        pages += 1;
        if page["next"].is_null() {
            break;
        }
        after = page["next"].clone();
    }
    assert_eq!(pages, 3);
    // The order is the order rows were written (within one commit, any).
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "every person exactly once");
    let (reply, code) = ask(&client, "qry.person.list", json!({"after": "p03"}), None).await;
    assert_eq!(code, Some(400), "a cursor is a number: {reply}");
}

/// Runs `jetsource project <projection>` (batches of 50) and kill -9s it mid-work
/// eight times, then lets a last one catch up to `last`.
async fn crash_then_catch_up(server: &TestServer, store: &EventStore, projection: &str, last: u64) {
    let bucket = format!("view_{projection}");
    let checkpoint = || async {
        jetsource::projection::storage::applied(store, &bucket)
            .await
            .unwrap_or(0)
    };
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_jetsource"))
            .args([
                "project",
                projection,
                "--nats-url",
                &server.url(),
                "--batch",
                "50",
                "--lease-ttl",
                "1",
                "--log-level",
                "warn",
            ])
            .spawn()
            .unwrap()
    };
    for _ in 0..8 {
        let mut child = spawn();
        let deadline = Instant::now() + Duration::from_secs(10);
        let before = checkpoint().await;
        while checkpoint().await <= before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL, mid-batch as likely as not
        child.wait().unwrap();
    }
    let mut child = spawn();
    support::wait_applied(store, &bucket, last, Duration::from_secs(30)).await;
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Finding: 1,500 people changing email while `person_directory` was kill -9'd 8
/// times left 203 old emails resolving to people who have another one now (a
/// crash between row writes, then a replay reading rows from its future). Rows
/// and checkpoint now commit as one atomic batch.
#[tokio::test]
async fn a_view_differs_from_its_events_after_projection_crashes() {
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client, StoreConfig::default())
        .await
        .unwrap();
    let people = jetsource::Repository::<Person>::new(store.clone(), Default::default());
    let meta = jetsource::Metadata::default();
    for i in 0..400 {
        let id = format!("p{i}");
        people
            .execute(
                &id,
                &hiring::PersonCommand::Register {
                    name: format!("P {i}"),
                    email: format!("{id}@x.org"),
                },
                &meta,
            )
            .await
            .unwrap();
        for k in 0..4 {
            people
                .execute(
                    &id,
                    &hiring::PersonCommand::ChangeName {
                        name: format!("P {i}.{k}"),
                    },
                    &meta,
                )
                .await
                .unwrap();
        }
        if i % 3 == 0 {
            people
                .execute(
                    &id,
                    &hiring::PersonCommand::ChangeEmail {
                        email: format!("{id}@y.org"),
                    },
                    &meta,
                )
                .await
                .unwrap();
        }
    }
    let last = store
        .last_position("person", "p399")
        .await
        .unwrap()
        .unwrap()
        .seq;
    crash_then_catch_up(&server, &store, "person_directory", last).await;
    support::assert_directory_equals_a_rebuild(&store, last).await;
}

#[tokio::test]
async fn the_organization_and_offer_views_follow_a_hire() {
    use hiring::views::{OffersView, OrganizationsView};
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client.clone(), StoreConfig::default())
        .await
        .unwrap();
    let _node = Node::new(store.clone(), NodeConfig::default())
        .register::<Person>(Default::default())
        .register::<Organization>(Default::default())
        .view(&OrganizationsView)
        .view(&OffersView)
        .start()
        .await
        .unwrap();
    let _organizations = run_projection(&store, OrganizationsView).await;
    let _offers = run_projection(&store, OffersView).await;

    let expires = "2099-01-01T00:00:00Z";
    let mut seq = 0;
    for (subject, body) in [
        (
            "cmd.organization.Register",
            json!({"id": "acme", "name": "Acme"}),
        ),
        (
            "cmd.organization.OpenPosition",
            json!({"id": "acme", "position_id": "eng", "title": "Engineer"}),
        ),
        (
            "cmd.organization.OpenPosition",
            json!({"id": "acme", "position_id": "ops", "title": "Operator"}),
        ),
        (
            "cmd.organization.ExtendOffer",
            json!({"id": "acme", "position_id": "eng", "person_id": "p1", "offer_id": "o1", "expires_at": expires}),
        ),
        (
            "cmd.organization.ExtendOffer",
            json!({"id": "acme", "position_id": "eng", "person_id": "p2", "offer_id": "o2", "expires_at": expires}),
        ),
        (
            "cmd.person.Register",
            json!({"id": "p1", "name": "Ada", "email": "ada@example.org"}),
        ),
        (
            "cmd.person.RecordOffer",
            json!({"id": "p1", "offer_id": "o1", "organization_id": "acme", "position_id": "eng", "expires_at": expires}),
        ),
        (
            "cmd.person.AcceptOffer",
            json!({"id": "p1", "offer_id": "o1"}),
        ),
        (
            "cmd.organization.Hire",
            json!({"id": "acme", "offer_id": "o1"}),
        ),
    ] {
        let (ack, code) = ask(&client, subject, body, None).await;
        assert_eq!(code, None, "{subject}: {ack}");
        seq = seq.max(ack["seq"].as_u64().unwrap());
    }
    let (org, code) = ask(
        &client,
        "qry.organization.get",
        json!({"id": "acme"}),
        Some(seq),
    )
    .await;
    assert_eq!(code, None, "{org}");
    assert_eq!(org["open_positions"], json!(["ops"]), "{org}");
    assert_eq!(org["positions"]["eng"]["status"], "filled");
    let (members, _) = ask(
        &client,
        "qry.organization.members",
        json!({"id": "acme"}),
        Some(seq),
    )
    .await;
    assert_eq!(
        members["members"],
        json!([{"person_id": "p1", "position_id": "eng"}])
    );
    let (p1, _) = ask(
        &client,
        "qry.offers.by_person",
        json!({"id": "p1"}),
        Some(seq),
    )
    .await;
    assert_eq!(p1["offers"]["o1"]["status"], "hired");
    assert_eq!(p1["offers"]["o1"]["organization_id"], "acme");
    let (p2, _) = ask(
        &client,
        "qry.offers.by_person",
        json!({"id": "p2"}),
        Some(seq),
    )
    .await;
    assert_eq!(
        p2["offers"]["o2"]["status"], "withdrawn",
        "the other offer for the filled position"
    );
    let (none, code) = ask(
        &client,
        "qry.organization.get",
        json!({"id": "nobody"}),
        None,
    )
    .await;
    assert_eq!(
        (code, none["error"]["code"].as_str()),
        (Some(404), Some("not_found"))
    );
}

#[tokio::test]
async fn min_seq_of_an_event_the_view_does_not_read_is_reached_once_caught_up() {
    let server = TestServer::start();
    let (client, _node, _organizations) =
        organizations_node(&server, NodeConfig::default().min_seq_wait).await;
    ask(
        &client,
        "cmd.organization.Register",
        json!({"id": "acme", "name": "Acme"}),
        None,
    )
    .await;
    let (person, _) = ask(
        &client,
        "cmd.person.Register",
        json!({"id": "p1", "name": "A", "email": "a@example.org"}),
        None,
    )
    .await;
    let (org, code) = ask(
        &client,
        "qry.organization.get",
        json!({"id": "acme"}),
        person["seq"].as_u64(),
    )
    .await;
    assert_eq!((code, org["name"].as_str()), (None, Some("Acme")), "{org}");
}

#[tokio::test]
async fn a_rebuild_fills_the_next_version_while_the_old_answers_then_switches() {
    use jetsource::projection::rebuild::Rebuild;
    use jetsource::projection::versions;
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let (client, store, _node) = node(&server, Duration::from_secs(5)).await;
    support::register_people(&store, 300).await;
    let last = store
        .last_position("person", "p299")
        .await
        .unwrap()
        .unwrap()
        .seq;
    let mut v1 = ProjectionRunner::new(store.clone(), PersonDirectory, RunnerConfig::default())
        .await
        .unwrap();
    while v1.checkpoint() < last {
        v1.step().await.unwrap();
    }
    let mut rebuild = Rebuild::start(
        store.clone(),
        PersonDirectory,
        RunnerConfig {
            batch: 50,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(rebuild.version(), 2);
    let first = rebuild.step().await.unwrap();
    assert!(!first.caught_up && first.applied < last);
    // Mid-rebuild, queries still read version 1, which is complete.
    let (p, code) = ask(
        &client,
        "qry.person.by_email",
        json!({"email": "p299@x.org"}),
        Some(last),
    )
    .await;
    assert_eq!((code, p["id"].as_str()), (None, Some("p299")));
    assert_eq!(
        versions::active(&store, "person_directory").await.unwrap(),
        1
    );
    let early = Rebuild::start(store.clone(), PersonDirectory, RunnerConfig::default())
        .await
        .unwrap();
    assert!(
        early.switch().await.is_err(),
        "a version that has not caught up cannot be switched to"
    );
    let mut rebuild = Rebuild::start(
        store.clone(),
        PersonDirectory,
        RunnerConfig {
            batch: 50,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    while !rebuild.step().await.unwrap().caught_up {}
    assert_eq!(rebuild.switch().await.unwrap(), 2);
    // With version 1 gone, the answers can only come from version 2.
    store
        .jetstream()
        .delete_key_value("view_person_directory")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (p, code) = ask(
            &client,
            "qry.person.by_email",
            json!({"email": "p7@x.org"}),
            None,
        )
        .await;
        if code.is_none() {
            assert_eq!(p["id"], "p7");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queries never switched to version 2: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (p, code) = ask(
        &client,
        "qry.person.by_email",
        json!({"email": "p250@x.org"}),
        Some(last),
    )
    .await;
    assert_eq!(
        (code, p["name"].as_str()),
        (None, Some("P 250")),
        "min-seq waits on version 2's checkpoint"
    );
}

#[tokio::test]
async fn jetsource_project_rebuild_runs_to_the_switch_and_exits() {
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client, StoreConfig::default())
        .await
        .unwrap();
    support::register_people(&store, 50).await;
    let out = support::run_ok(&server.url(), &["project", "person_directory", "--rebuild"]);
    assert!(out.contains("version 2 built and active"), "{out}");
    assert_eq!(
        jetsource::projection::versions::active(&store, "person_directory")
            .await
            .unwrap(),
        2
    );
    let kv = store
        .jetstream()
        .get_key_value("view_person_directory_v2")
        .await
        .unwrap();
    assert!(kv.get("person.p49").await.unwrap().is_some());
}

/// Finding (issue 10): `qry.person.get` with a 5,000-character id (or `by_email`
/// with a 2.5 KB email) made the node ask the server for a key longer than its
/// control line, and the server closed the node's connection; an id with a space
/// or `:` got a 503. Such queries are now 422s that never reach the server, and the
/// node keeps answering everyone else.
#[tokio::test]
async fn one_message_disconnects_the_node() {
    let server = TestServer::start();
    let (client, _store, _node) = node(&server, Duration::from_secs(1)).await;
    let long = "A".repeat(5000);
    let cases = [
        ("qry.person.get", json!({"id": long}), "invalid_id"),
        ("qry.person.get", json!({"id": "a b"}), "invalid_id"),
        ("qry.person.get", json!({"id": "a:b"}), "invalid_id"),
        ("qry.person.get", json!({"id": "a\u{0}b"}), "invalid_id"),
        ("qry.organization.get", json!({"id": long}), "invalid_id"),
        (
            "qry.person.by_email",
            json!({"email": format!("{}@x.org", "e".repeat(2500))}),
            "invalid_email",
        ),
    ];
    for (subject, body, code) in cases {
        let (reply, status) = ask(&client, subject, body, None).await;
        assert_eq!(status, Some(422), "{subject}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{subject}: {reply}");
    }
    // Meanwhile and after, everyone else's queries are answered.
    let answered = futures::future::join_all((0..100).map(|i| {
        let client = client.clone();
        async move {
            let (_, status) = ask(
                &client,
                "qry.person.get",
                json!({"id": format!("p{i}")}),
                None,
            )
            .await;
            status
        }
    }))
    .await;
    assert!(answered.iter().all(|s| *s == Some(404)), "{answered:?}");
}

/// Regression: the directory skipped offer events, so a person's row said
/// `version: 1` while the person was at 3, and a client that sent the row's version
/// as `Jetsource-Expected-Version` got a conflict.
#[tokio::test]
async fn a_person_row_says_which_version_of_the_person_it_reflects() {
    let server = TestServer::start();
    let (client, store, _node) = node(&server, Duration::from_secs(5)).await;
    let _stop = run_directory(&store).await;
    ask(
        &client,
        "cmd.person.Register",
        json!({"id": "ada", "name": "Ada", "email": "ada@example.org"}),
        None,
    )
    .await;
    let offer = json!({"id": "ada", "offer_id": "o1", "organization_id": "acme", "position_id": "eng", "expires_at": "2099-01-01T00:00:00Z"});
    let (ack, _) = ask(&client, "cmd.person.RecordOffer", offer, None).await;
    assert_eq!(ack["version"], 2, "{ack}");
    let (row, code) = ask(
        &client,
        "qry.person.get",
        json!({"id": "ada"}),
        ack["seq"].as_u64(),
    )
    .await;
    assert_eq!(code, None, "{row}");
    assert_eq!(row["version"], 2, "{row}");

    // The row's version is the one to expect.
    let mut headers = HeaderMap::new();
    headers.insert(
        "Jetsource-Expected-Version",
        row["version"].to_string().as_str(),
    );
    let reply = client
        .request_with_headers(
            "cmd.person.ChangeName",
            headers,
            r#"{"id":"ada","name":"Ada L."}"#.into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["status"], "accepted", "{reply}");
}

/// Once a row per organization, rewritten whole by every event: with ~9,000
/// positions the view applied 175-250 events/s. Now every position is a row of
/// its own; the organization's row stays the same size, and positions page.
#[tokio::test]
async fn a_hot_organization_rewrites_its_whole_row_for_every_event() {
    use futures::StreamExt;
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let (client, _node, _organizations) =
        organizations_node(&server, Duration::from_secs(10)).await;
    let store = EventStore::open(client.clone(), StoreConfig::default())
        .await
        .unwrap();
    ask(
        &client,
        "cmd.organization.Register",
        json!({"id": "big", "name": "Big"}),
        None,
    )
    .await;
    let positions = 1200;
    let seqs: Vec<u64> = futures::stream::iter(0..positions)
        .map(|i| {
            let client = client.clone();
            async move {
                let body =
                    json!({"id": "big", "position_id": format!("p{i}"), "title": "Engineer"});
                let (ack, code) = ask(&client, "cmd.organization.OpenPosition", body, None).await;
                assert_eq!(code, None, "{ack}");
                ack["seq"].as_u64().unwrap()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let last = seqs.into_iter().max().unwrap();

    let (org, code) = ask(
        &client,
        "qry.organization.get",
        json!({"id": "big"}),
        Some(last),
    )
    .await;
    assert_eq!(code, None, "{org}");
    assert_eq!(org["version"], positions + 1);
    assert_eq!(org["positions"].as_object().unwrap().len(), 500);
    assert_eq!(org["open_positions"].as_array().unwrap().len(), 500);
    assert!(org["positions_next"].is_u64(), "more positions follow");
    assert!(org["members_next"].is_null());

    let mut seen = std::collections::BTreeSet::new();
    let mut after = json!(0);
    loop {
        let body = json!({"id": "big", "limit": 500, "after": after});
        let (page, code) = ask(&client, "qry.organization.positions", body, None).await;
        assert_eq!(code, None, "{page}");
        for p in page["positions"].as_array().unwrap() {
            assert_eq!(p["status"], "open");
            assert!(seen.insert(p["position_id"].as_str().unwrap().to_string()));
        }
        if page["next"].is_null() {
            break;
        }
        after = page["next"].clone();
    }
    assert_eq!(seen.len(), positions as usize, "every position once");
    // A page is bounded whatever the client asks, and a bad body is the client's error.
    let body = json!({"id": "big", "limit": 1_000_000});
    let (page, code) = ask(&client, "qry.organization.positions", body, None).await;
    assert_eq!(
        (code, page["positions"].as_array().map(Vec::len)),
        (None, Some(500))
    );
    for (body, status) in [
        (json!({"id": "A".repeat(5000)}), 422),
        (json!({"id": "big", "after": "x"}), 400),
        (json!({"id": "big", "limit": -1}), 400),
    ] {
        let (reply, code) = ask(&client, "qry.organization.members", body, None).await;
        assert_eq!(code, Some(status), "{reply}");
    }

    let rows = store
        .jetstream()
        .get_key_value("view_organizations")
        .await
        .unwrap();
    let header = rows.get("organization.big").await.unwrap().unwrap();
    assert!(
        header.len() < 200,
        "the organization's row stays small: {} bytes",
        header.len()
    );
}

/// The organizations view's rows per position and per member equal a rebuild after
/// its projection was kill -9'd eight times while catching up.
#[tokio::test]
async fn the_organizations_view_equals_a_rebuild_after_projection_crashes() {
    use hiring::OrganizationCommand as O;
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client, StoreConfig::default())
        .await
        .unwrap();
    let orgs = jetsource::Repository::<Organization>::new(store.clone(), Default::default());
    let meta = jetsource::Metadata::default();
    for o in 0..10 {
        let id = format!("o{o}");
        let register = O::Register {
            name: format!("Org {o}"),
        };
        orgs.execute(&id, &register, &meta).await.unwrap();
        for p in 0..100 {
            let open = O::OpenPosition {
                position_id: format!("p{p}"),
                title: "Engineer".into(),
            };
            orgs.execute(&id, &open, &meta).await.unwrap();
            if p % 4 == 0 {
                let close = O::ClosePosition {
                    position_id: format!("p{p}"),
                };
                orgs.execute(&id, &close, &meta).await.unwrap();
            }
        }
    }
    let last = store.last_seq().await.unwrap();
    crash_then_catch_up(&server, &store, "organizations", last).await;
    jetsource::testing::assert_view_equals_a_rebuild(
        &store,
        hiring::views::OrganizationsView,
        last,
    )
    .await;
}
