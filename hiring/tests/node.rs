//! The command service against a real nats-server: replies, statuses, bad input,
//! idempotency, metadata, queries, and many random bodies.

use async_nats::HeaderMap;
use futures::StreamExt;
use hiring::{Organization, Person};
use jetsource::node::{Node, NodeConfig, RunningNode};
use jetsource::testing::TestServer;
use jetsource::{EventStore, StoreConfig};
use serde_json::{json, Value};
use std::time::Duration;

struct Harness {
    _server: TestServer,
    client: async_nats::Client,
    store: EventStore,
    node: Option<RunningNode>,
}

async fn start() -> Harness {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client.clone(), StoreConfig::default())
        .await
        .unwrap();
    let node = Node::new(store.clone(), NodeConfig::default())
        .register::<Person>(Default::default())
        .register::<Organization>(Default::default())
        .start()
        .await
        .unwrap();
    Harness {
        _server: server,
        client,
        store,
        node: Some(node),
    }
}

/// The reply body and the service error code header, if any.
async fn request(
    client: &async_nats::Client,
    subject: &str,
    body: impl Into<bytes::Bytes>,
    headers: HeaderMap,
) -> (Value, Option<u16>) {
    let reply = client
        .send_request(
            subject.to_string(),
            async_nats::Request::new()
                .headers(headers)
                .payload(body.into())
                .timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR_CODE))
        .map(|v| v.as_str().parse().unwrap());
    let body: Value = serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|e| panic!("{subject}: reply is not JSON ({e}): {:?}", reply.payload));
    (body, code)
}

async fn send(client: &async_nats::Client, subject: &str, body: Value) -> (Value, Option<u16>) {
    request(
        client,
        subject,
        serde_json::to_vec(&body).unwrap(),
        HeaderMap::new(),
    )
    .await
}

fn with_command_id(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Jetsource-Command-Id", id);
    h
}

#[tokio::test]
async fn an_accepted_command_replies_with_the_ack_and_stores_its_events() {
    let h = start().await;
    let (ack, code) = send(
        &h.client,
        "cmd.person.Register",
        json!({"id": "p1", "name": "Ada", "email": "ada@example.org"}),
    )
    .await;
    assert_eq!(code, None);
    assert_eq!(
        ack,
        json!({"status": "accepted", "aggregate": "person", "id": "p1", "version": 1, "seq": 1, "events": ["PersonRegistered"]})
    );
    let (ack, _) = send(
        &h.client,
        "cmd.person.ChangeEmail",
        json!({"id": "p1", "email": "ada@lovelace.org"}),
    )
    .await;
    assert_eq!(
        (ack["version"].as_u64(), ack["events"][0].as_str()),
        (Some(2), Some("EmailChanged"))
    );
    let (state, code) = send(&h.client, "qry.person.get", json!({"id": "p1"})).await;
    assert_eq!(code, None);
    assert_eq!(state["state"]["email"], "ada@lovelace.org");
    assert_eq!(state["version"], 2);
    let (history, _) = send(&h.client, "qry.person.history", json!({"id": "p1"})).await;
    let types: Vec<_> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["PersonRegistered", "EmailChanged"]);
    let (page, _) = send(
        &h.client,
        "qry.person.history",
        json!({"id": "p1", "after": 1, "limit": 5}),
    )
    .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn every_kind_of_bad_input_gets_its_status_and_stores_nothing() {
    let h = start().await;
    let json_ct = || {
        let mut m = HeaderMap::new();
        m.insert("Content-Type", "application/json");
        m
    };
    let text_ct = {
        let mut m = HeaderMap::new();
        m.insert("Content-Type", "text/plain");
        m
    };
    let cases: Vec<(&str, bytes::Bytes, HeaderMap, u16, &str)> = vec![
        (
            "cmd.person.Register",
            "{not json".into(),
            json_ct(),
            400,
            "malformed",
        ),
        (
            "cmd.person.Register",
            "[1,2]".into(),
            HeaderMap::new(),
            400,
            "malformed",
        ),
        (
            "cmd.person.Register",
            r#"{"name":"x"}"#.into(),
            HeaderMap::new(),
            400,
            "malformed",
        ),
        (
            "cmd.person.Register",
            r#"{"id":7}"#.into(),
            HeaderMap::new(),
            400,
            "malformed",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"p1","name":5,"email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            400,
            "malformed",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"p1"}"#.into(),
            HeaderMap::new(),
            400,
            "malformed",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a.b","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a*","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a>","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a b","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a:b","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a+b","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a@b","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a\u00e9","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a\ud83d\ude00","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a\udbff\udfff","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"a/b","name":"A","email":"a@b.co"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_id",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"p1","name":"A","email":"nope"}"#.into(),
            HeaderMap::new(),
            422,
            "invalid_email",
        ),
        (
            "cmd.person.Register",
            format!(
                r#"{{"id":"p1","name":"{}","email":"a@b.co"}}"#,
                "x".repeat(100_000)
            )
            .into(),
            HeaderMap::new(),
            400,
            "too_large",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"p1","name":"A","email":"a@b.co"}"#.into(),
            text_ct,
            400,
            "unsupported_content_type",
        ),
        (
            "cmd.person.Register",
            r#"{"id":"p1","name":"A","email":"a@b.co"}"#.into(),
            with_command_id("has space"),
            422,
            "invalid_command_id",
        ),
        (
            "cmd.person.AcceptOffer",
            r#"{"id":"p1","offer_id":"o1"}"#.into(),
            HeaderMap::new(),
            409,
            "not_registered",
        ),
        (
            "qry.person.get",
            r#"{"id":"nobody"}"#.into(),
            HeaderMap::new(),
            404,
            "not_found",
        ),
    ];
    for (subject, body, headers, status, code) in cases {
        let (reply, header) = request(&h.client, subject, body, headers).await;
        assert_eq!(reply["status"], "rejected", "{subject}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{subject}: {reply}");
        assert!(reply["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert_eq!(header, Some(status), "{subject}: {reply}");
    }
    let mut expected = HeaderMap::new();
    expected.insert("Jetsource-Expected-Version", "x");
    let (reply, header) = request(
        &h.client,
        "cmd.person.Register",
        r#"{"id":"p1","name":"A","email":"a@b.co"}"#,
        expected,
    )
    .await;
    assert_eq!(
        (header, reply["error"]["code"].as_str()),
        (Some(422), Some("invalid_expected_version"))
    );
    let all: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(h.store.read_all(1))
        .await
        .unwrap();
    assert!(all.is_empty(), "a rejected command stored {all:?}");
    // Still serving.
    let (ack, code) = send(
        &h.client,
        "cmd.person.Register",
        json!({"id": "p1", "name": "Ada", "email": "ada@example.org"}),
    )
    .await;
    assert_eq!((code, ack["status"].as_str()), (None, Some("accepted")));
    let (reply, code) = send(
        &h.client,
        "cmd.person.Register",
        json!({"id": "p1", "name": "Ada", "email": "ada@example.org"}),
    )
    .await;
    assert_eq!(
        (code, reply["error"]["code"].as_str()),
        (Some(409), Some("already_registered"))
    );
}

#[tokio::test]
async fn cbor_bodies_are_accepted() {
    let h = start().await;
    let mut body = Vec::new();
    ciborium::into_writer(
        &json!({"id": "c1", "name": "Cbor Person", "email": "c@b.or"}),
        &mut body,
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/cbor");
    let (ack, code) = request(&h.client, "cmd.person.Register", body, headers).await;
    assert_eq!((code, ack["version"].as_u64()), (None, Some(1)));
}

#[tokio::test]
async fn a_retried_command_id_returns_the_identical_ack_and_appends_nothing() {
    let h = start().await;
    let body = || serde_json::to_vec(&json!({"id": "o1", "name": "Acme"})).unwrap();
    let first = h
        .client
        .send_request(
            "cmd.organization.Register",
            async_nats::Request::new()
                .headers(with_command_id("cmd-1"))
                .payload(body().into()),
        )
        .await
        .unwrap();
    let again = h
        .client
        .send_request(
            "cmd.organization.Register",
            async_nats::Request::new()
                .headers(with_command_id("cmd-1"))
                .payload(body().into()),
        )
        .await
        .unwrap();
    assert_eq!(
        first.payload, again.payload,
        "the retry must get the identical ack"
    );
    // Concurrent duplicates of a new command id execute once.
    let opens: Vec<_> = (0..20)
        .map(|_| {
            let client = h.client.clone();
            tokio::spawn(async move {
                let body = serde_json::to_vec(
                    &json!({"id": "o1", "position_id": "eng", "title": "Engineer"}),
                )
                .unwrap();
                client
                    .send_request(
                        "cmd.organization.OpenPosition",
                        async_nats::Request::new()
                            .headers(with_command_id("open-eng"))
                            .payload(body.into()),
                    )
                    .await
                    .unwrap()
                    .payload
            })
        })
        .collect();
    let mut replies = Vec::new();
    for o in opens {
        replies.push(o.await.unwrap());
    }
    assert!(
        replies.iter().all(|r| r == &replies[0]),
        "all duplicates must get the same ack: {replies:?}"
    );
    let ack: Value = serde_json::from_slice(&replies[0]).unwrap();
    assert_eq!(ack["status"], "accepted", "{ack}");
    let events = h
        .store
        .read_aggregate("organization", "o1", 0)
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["OrganizationRegistered", "PositionOpened"]
    );
}

#[tokio::test]
async fn metadata_defaults_and_is_copied_onto_every_event() {
    let h = start().await;
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
            "cmd.organization.ExtendOffer",
            json!({"id": "acme", "position_id": "eng", "person_id": "p1", "offer_id": "of1", "expires_at": "2099-01-01T00:00:00Z"}),
        ),
    ] {
        let (_, code) = send(&h.client, subject, body).await;
        assert_eq!(code, None, "{subject}");
    }
    let mut headers = with_command_id("hire-1");
    headers.insert("Jetsource-Actor", "hr-bot");
    headers.insert("Jetsource-On-Behalf-Of", "t-9");
    let (ack, code) = request(
        &h.client,
        "cmd.organization.Hire",
        serde_json::to_vec(&json!({"id": "acme", "offer_id": "of1"})).unwrap(),
        headers,
    )
    .await;
    assert_eq!(code, None, "{ack}");
    assert_eq!(ack["events"], json!(["PositionFilled", "MemberJoined"]));
    let events = h
        .store
        .read_aggregate("organization", "acme", 0)
        .await
        .unwrap();
    let hired: Vec<_> = events
        .iter()
        .filter(|e| e.metadata.command_id.as_deref() == Some("hire-1"))
        .collect();
    assert_eq!(hired.len(), 2, "one command, two events, one atomic append");
    for e in hired {
        assert_eq!(
            e.metadata.correlation_id.as_deref(),
            Some("hire-1"),
            "correlation defaults to the command id"
        );
        assert_eq!(e.metadata.causation_id.as_deref(), Some("hire-1"));
        assert_eq!(e.metadata.actor.as_deref(), Some("hr-bot"));
        assert_eq!(e.metadata.on_behalf_of.as_deref(), Some("t-9"));
    }
    let mut headers = with_command_id("rename-1");
    headers.insert("Jetsource-Correlation-Id", "flow-7");
    request(
        &h.client,
        "cmd.person.Register",
        serde_json::to_vec(&json!({"id": "p9", "name": "N", "email": "n@n.io"})).unwrap(),
        headers,
    )
    .await;
    let e = &h.store.read_aggregate("person", "p9", 0).await.unwrap()[0];
    assert_eq!(
        (
            e.metadata.correlation_id.as_deref(),
            e.metadata.causation_id.as_deref()
        ),
        (Some("flow-7"), Some("rename-1"))
    );
}

#[tokio::test]
async fn the_expected_version_header_is_enforced() {
    let h = start().await;
    send(
        &h.client,
        "cmd.person.Register",
        json!({"id": "p1", "name": "Ada", "email": "ada@example.org"}),
    )
    .await;
    let mut headers = HeaderMap::new();
    headers.insert("Jetsource-Expected-Version", "5");
    let (reply, code) = request(
        &h.client,
        "cmd.person.ChangeName",
        serde_json::to_vec(&json!({"id": "p1", "name": "X"})).unwrap(),
        headers,
    )
    .await;
    assert_eq!(
        (code, reply["error"]["code"].as_str()),
        (Some(409), Some("wrong_expected_version"))
    );
    let mut headers = HeaderMap::new();
    headers.insert("Jetsource-Expected-Version", "1");
    let (reply, code) = request(
        &h.client,
        "cmd.person.ChangeName",
        serde_json::to_vec(&json!({"id": "p1", "name": "X"})).unwrap(),
        headers,
    )
    .await;
    assert_eq!((code, reply["version"].as_u64()), (None, Some(2)));
}

#[tokio::test]
async fn the_service_answers_ping_info_and_stats() {
    let h = start().await;
    send(
        &h.client,
        "cmd.person.Register",
        json!({"id": "p1", "name": "Ada", "email": "ada@example.org"}),
    )
    .await;
    for verb in ["PING", "INFO", "STATS"] {
        let reply = h
            .client
            .request(format!("$SRV.{verb}.jetsource"), "".into())
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(v["name"], "jetsource", "{verb}: {v}");
    }
    let info: Value = serde_json::from_slice(
        &h.client
            .request("$SRV.INFO.jetsource", "".into())
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    let subjects: Vec<_> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap().to_string())
        .collect();
    for s in [
        "cmd.person.Register",
        "cmd.organization.ExtendOffer",
        "qry.person.get",
        "qry.organization.history",
    ] {
        assert!(
            subjects.iter().any(|x| x == s),
            "{s} missing from {subjects:?}"
        );
    }
    let stats = h.node.as_ref().unwrap().stats().await;
    assert!(stats.values().any(|s| s.requests >= 1));
}

#[tokio::test]
async fn shutdown_finishes_in_flight_commands_and_stops_answering() {
    let mut h = start().await;
    let client = h.client.clone();
    let inflight: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let body = serde_json::to_vec(
                    &json!({"id": format!("s{i}"), "name": "S", "email": "s@s.io"}),
                )
                .unwrap();
                client.request("cmd.person.Register", body.into()).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.node
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(10))
        .await;
    let mut answered = 0;
    for t in inflight {
        if let Ok(reply) = t.await.unwrap() {
            let v: Value = serde_json::from_slice(&reply.payload).unwrap();
            if v["status"] == "accepted" {
                answered += 1;
            }
        }
    }
    let stored = futures::TryStreamExt::try_collect::<Vec<_>>(h.store.read_all(1))
        .await
        .unwrap()
        .len();
    assert_eq!(
        stored, answered,
        "every command that was stored was also answered"
    );
    let after = h.client.request("cmd.person.Register", "{}".into()).await;
    assert!(after.is_err(), "a stopped node must not answer");
}

/// Bodies that are never a valid command: each must get a well-formed rejection.
fn garbage(rng: &mut fastrand::Rng) -> Vec<u8> {
    let junk_string = |rng: &mut fastrand::Rng| -> String {
        let len = rng.usize(0..40);
        (0..len)
            .map(|_| char::from_u32(rng.u32(1..0x2FF)).unwrap_or('?'))
            .collect()
    };
    match rng.u8(0..8) {
        0 => (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect(),
        1 => junk_string(rng).into_bytes(),
        2 => serde_json::to_vec(&json!([junk_string(rng), rng.i64(..)])).unwrap(),
        3 => serde_json::to_vec(&json!({"id": rng.i64(..)})).unwrap(),
        4 => serde_json::to_vec(&json!({"id": format!("{}.{}", junk_string(rng), rng.u32(..)), "name": "x", "email": "x@y.zz"})).unwrap(),
        5 => serde_json::to_vec(&json!({"name": junk_string(rng), "email": junk_string(rng)})).unwrap(),
        6 => serde_json::to_vec(&json!({"id": format!("g{}", rng.u32(..)), "name": rng.bool(), "email": [1, 2], "offer_id": {}})).unwrap(),
        _ => {
            let mut v = serde_json::to_vec(&json!({"id": "g", "email": junk_string(rng)})).unwrap();
            v.truncate(rng.usize(0..v.len()));
            v
        }
    }
}

#[tokio::test]
async fn ten_thousand_random_bodies_get_well_formed_rejections_and_the_node_lives() {
    let h = start().await;
    let subjects = [
        "cmd.person.Register",
        "cmd.person.ChangeEmail",
        "cmd.person.AcceptOffer",
        "cmd.person.Deactivate",
        "cmd.organization.ExtendOffer",
        "cmd.organization.Hire",
        "qry.person.get",
    ];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let bodies: Vec<(usize, Vec<u8>)> = (0..10_000)
        .map(|_| (rng.usize(0..subjects.len()), garbage(&mut rng)))
        .collect();
    let results = futures::stream::iter(bodies.into_iter().map(|(s, body)| {
        let client = h.client.clone();
        async move {
            let reply = client
                .request(subjects[s], body.clone().into())
                .await
                .expect("every request gets a reply");
            (subjects[s], body, reply)
        }
    }))
    .buffer_unordered(128)
    .collect::<Vec<_>>()
    .await;
    for (subject, body, reply) in results {
        let v: Value = serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
            panic!(
                "{subject} {:?}: reply not JSON: {e}",
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(
            v["status"],
            "rejected",
            "{subject} {:?}: {v}",
            String::from_utf8_lossy(&body)
        );
        let code: u16 = reply
            .headers
            .as_ref()
            .unwrap()
            .get(async_nats::service::NATS_SERVICE_ERROR_CODE)
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        assert!(
            [400, 404, 409, 422].contains(&code),
            "{subject}: status {code}"
        );
        assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string());
    }
    let all: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(h.store.read_all(1))
        .await
        .unwrap();
    assert!(all.is_empty(), "garbage stored {} events", all.len());
    let (ack, code) = send(
        &h.client,
        "cmd.person.Register",
        json!({"id": "alive", "name": "Still", "email": "still@alive.io"}),
    )
    .await;
    assert_eq!((code, ack["status"].as_str()), (None, Some("accepted")));
}

#[tokio::test]
async fn time_travel_returns_the_state_at_a_version_or_an_instant() {
    let h = start().await;
    send(
        &h.client,
        "cmd.person.Register",
        json!({"id": "t1", "name": "First", "email": "t@example.org"}),
    )
    .await;
    let (v2, _) = send(
        &h.client,
        "cmd.person.ChangeName",
        json!({"id": "t1", "name": "Second"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(
        &h.client,
        "cmd.person.ChangeName",
        json!({"id": "t1", "name": "Third"}),
    )
    .await;
    let (at1, code) = send(
        &h.client,
        "qry.person.at",
        json!({"id": "t1", "version": 1}),
    )
    .await;
    assert_eq!(
        (code, at1["state"]["name"].as_str(), at1["version"].as_u64()),
        (None, Some("First"), Some(1))
    );
    let (then, _) = send(
        &h.client,
        "qry.person.at",
        json!({"id": "t1", "at": between.to_rfc3339()}),
    )
    .await;
    assert_eq!(
        (then["state"]["name"].as_str(), then["seq"].as_u64()),
        (Some("Second"), v2["seq"].as_u64())
    );
    let (now, _) = send(&h.client, "qry.person.get", json!({"id": "t1"})).await;
    assert_eq!(now["state"]["name"], "Third");
    let (bad, code) = send(&h.client, "qry.person.at", json!({"id": "t1"})).await;
    assert_eq!(
        (code, bad["error"]["code"].as_str()),
        (Some(400), Some("malformed"))
    );
    let (before, code) = send(
        &h.client,
        "qry.person.at",
        json!({"id": "t1", "at": "2000-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(
        (code, before["error"]["code"].as_str()),
        (Some(404), Some("not_found"))
    );
}

#[tokio::test]
async fn the_node_survives_a_server_restart_and_serves_again() {
    let mut server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(
        client.clone(),
        StoreConfig {
            request_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let _node = Node::new(store.clone(), NodeConfig::default())
        .register::<Person>(Default::default())
        .start()
        .await
        .unwrap();
    let (ack, code) = send(
        &client,
        "cmd.person.Register",
        json!({"id": "r1", "name": "Before", "email": "b@example.org"}),
    )
    .await;
    assert_eq!((code, ack["seq"].as_u64()), (None, Some(1)));

    server.restart(); // SIGKILL, then the same port and store
                      // Clients reconnect on their own; until the node has too, requests fail or time out.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ack = loop {
        let body =
            serde_json::to_vec(&json!({"id": "r2", "name": "After", "email": "a@example.org"}))
                .unwrap();
        let request = async_nats::Request::new()
            .headers(with_command_id("after-restart"))
            .payload(body.into())
            .timeout(Some(Duration::from_secs(2)));
        if let Ok(reply) = client.send_request("cmd.person.Register", request).await {
            let v: Value = serde_json::from_slice(&reply.payload).unwrap();
            if v["status"] == "accepted" {
                break v;
            }
            assert_eq!(
                v["error"]["code"], "store_unavailable",
                "only 503s while reconnecting: {v}"
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node never served again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ack["version"], 1);
    let (history, code) = send(&client, "qry.person.history", json!({"id": "r1"})).await;
    assert_eq!(
        (code, history["events"].as_array().map(Vec::len)),
        (None, Some(1)),
        "nothing stored before was lost"
    );
    let (r2, _) = send(&client, "qry.person.history", json!({"id": "r2"})).await;
    assert_eq!(
        r2["events"].as_array().map(Vec::len),
        Some(1),
        "retries with one command id stored it once"
    );
}

async fn reply_bytes(
    client: &async_nats::Client,
    subject: &str,
    id: &str,
    body: Value,
) -> bytes::Bytes {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let request = async_nats::Request::new()
            .headers(with_command_id(id))
            .payload(serde_json::to_vec(&body).unwrap().into())
            .timeout(Some(Duration::from_secs(3)));
        match client.send_request(subject.to_string(), request).await {
            Ok(reply) if reply.headers.is_none() => return reply.payload,
            Ok(reply) => {
                let v: Value = serde_json::from_slice(&reply.payload).unwrap();
                assert_eq!(
                    v["error"]["code"], "store_unavailable",
                    "{subject} {id}: {v}"
                );
            }
            Err(_) => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{subject} {id} never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finding: a retry after 64 other commands on the aggregate and a server restart
/// was executed a second time (or refused 409). Retries now get the original ack
/// for the whole window, on another node, whether they would now run or be refused.
#[tokio::test]
async fn idempotency_ends_after_64_commands() {
    let mut server = TestServer::start();
    let node = |client: async_nats::Client| async move {
        let store = EventStore::open(
            client,
            StoreConfig {
                request_timeout: Duration::from_secs(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let node = Node::new(store.clone(), NodeConfig::default())
            .register::<Person>(Default::default())
            .start()
            .await
            .unwrap();
        (store, node)
    };
    let client = jetsource::connect(&server.url()).await.unwrap();
    let (store, first_node) = node(client.clone()).await;
    let register = json!({"id": "p1", "name": "Ada", "email": "ada@example.org"});
    let registered = reply_bytes(&client, "cmd.person.Register", "reg-1", register.clone()).await;
    let rename = json!({"id": "p1", "name": "X"});
    let renamed = reply_bytes(&client, "cmd.person.ChangeName", "name-x", rename.clone()).await;
    for i in 0..70 {
        let body = json!({"id": "p1", "name": format!("name {i}")});
        reply_bytes(
            &client,
            "cmd.person.ChangeName",
            &format!("other-{i}"),
            body,
        )
        .await;
    }
    first_node.shutdown(Duration::from_secs(5)).await;
    drop(store);
    server.restart(); // SIGKILL, then the same store

    // The retries reach a node that never saw the originals.
    let client = jetsource::connect(&server.url()).await.unwrap();
    let (store, _second_node) = node(client.clone()).await;
    let again = reply_bytes(&client, "cmd.person.ChangeName", "name-x", rename).await;
    assert_eq!(
        again, renamed,
        "a retry that would run again gets the original ack"
    );
    let again = reply_bytes(&client, "cmd.person.Register", "reg-1", register).await;
    assert_eq!(
        again, registered,
        "a retry that would now be refused gets the original ack"
    );
    let events = store.read_aggregate("person", "p1", 0).await.unwrap();
    assert_eq!(events.len(), 72, "nothing was stored twice");
    assert!(events.windows(2).all(|w| w[1].version == w[0].version + 1));
    let (person, _) = send(&client, "qry.person.get", json!({"id": "p1"})).await;
    assert_eq!(person["state"]["name"], "name 69", "{person}");
}

/// Finding: every node's catch-all answered 404 for subjects only another node
/// serves. A node now answers only its own subjects; nobody's get "no responders".
#[tokio::test]
async fn nodes_of_different_domains_answer_each_other() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client.clone(), StoreConfig::default())
        .await
        .unwrap();
    let _people = Node::new(store.clone(), NodeConfig::default())
        .register::<Person>(Default::default())
        .start()
        .await
        .unwrap();
    let _organizations = Node::new(store.clone(), NodeConfig::default())
        .register::<Organization>(Default::default())
        .start()
        .await
        .unwrap();
    for i in 0..40 {
        let (ack, code) = send(
            &client,
            "cmd.person.Register",
            json!({"id": format!("p{i}"), "name": "P", "email": format!("p{i}@example.org")}),
        )
        .await;
        assert_eq!((code, &ack["status"]), (None, &json!("accepted")), "{ack}");
        let (ack, code) = send(
            &client,
            "cmd.organization.Register",
            json!({"id": format!("o{i}"), "name": "O"}),
        )
        .await;
        assert_eq!((code, &ack["status"]), (None, &json!("accepted")), "{ack}");
        let (person, code) = send(&client, "qry.person.get", json!({"id": format!("p{i}")})).await;
        assert_eq!(code, None, "{person}");
    }
    for subject in [
        "cmd.person.Fly",
        "cmd.robot.Register",
        "qry.person.everything",
    ] {
        let err = client
            .request(subject, bytes::Bytes::from_static(br#"{"id":"p1"}"#))
            .await
            .expect_err(subject);
        assert_eq!(
            err.kind(),
            async_nats::RequestErrorKind::NoResponders,
            "{subject}"
        );
    }
}

#[tokio::test]
async fn a_client_cannot_set_the_clock_field_and_typed_senders_leave_it_out() {
    let h = start().await;
    let (reply, code) = send(
        &h.client,
        "cmd.organization.Register",
        json!({"id": "acme", "name": "Acme"}),
    )
    .await;
    assert_eq!(code, None, "{reply}");
    let open = json!({"id": "acme", "position_id": "eng", "title": "Engineer"});
    send(&h.client, "cmd.organization.OpenPosition", open).await;
    // The node's clock, not the client's: a backdated `at` is refused, not replaced.
    let extend = json!({"id": "acme", "position_id": "eng", "person_id": "ada",
        "offer_id": "o-1", "expires_at": "2031-01-01T00:00:00Z", "at": "2000-01-01T00:00:00Z"});
    let (reply, code) = send(&h.client, "cmd.organization.ExtendOffer", extend).await;
    assert_eq!(code, Some(400), "{reply}");
    assert_eq!(reply["error"]["code"], "reserved_field", "{reply}");
    // The typed client drops the field the node sets: an expiry in 2001 is after
    // the client's `at` (2000) but before the node's clock, so it is refused.
    let client = jetsource::client::Client::new(h.client.clone(), Default::default());
    let command = |expires_at: &str| hiring::OrganizationCommand::ExtendOffer {
        position_id: "eng".into(),
        person_id: "ada".into(),
        offer_id: "o-1".into(),
        expires_at: expires_at.parse().unwrap(),
        at: "2000-01-01T00:00:00Z".parse().unwrap(),
    };
    let refused = client
        .execute::<Organization>(
            "acme",
            &command("2001-01-01T00:00:00Z"),
            &Default::default(),
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("expir"), "{refused}");
    let ack = client
        .execute::<Organization>(
            "acme",
            &command("2031-01-01T00:00:00Z"),
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(ack.events, ["OfferExtended"]);
}
