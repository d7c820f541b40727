//! Trimming technical data: retired view versions, finished saga instances and
//! parked events go when an operator says so, and nothing else goes with them.

mod support;

use async_nats::jetstream;
use jetsource::testing::TestServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn retired_view_versions_are_dropped_and_the_active_one_stays() {
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = support::open_store(&server).await;
    support::register_people(&store, 20).await;
    // Version 1 runs and catches up; then a rebuild switches to version 2.
    let projection = support::start(&server.url(), &["project", "person_directory"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v1 = store
            .jetstream()
            .get_key_value("view_person_directory")
            .await;
        if let Ok(kv) = v1 {
            if kv.get("person.p19").await.unwrap().is_some() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "version 1 never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rebuilt = support::run_ok(&server.url(), &["project", "person_directory", "--rebuild"]);
    assert!(rebuilt.contains("version 2 built and active"), "{rebuilt}");
    drop(projection);

    let dropped = support::run_ok(
        &server.url(),
        &["project", "person_directory", "--drop-retired"],
    );
    assert!(dropped.contains("dropped versions [1]"), "{dropped}");
    let js = store.jetstream();
    assert!(js.get_key_value("view_person_directory").await.is_err());
    let events = js.get_stream("EVENTS").await.unwrap();
    assert!(events
        .get_consumer::<jetstream::consumer::pull::Config>("proj_person_directory")
        .await
        .is_err());
    let v2 = js.get_key_value("view_person_directory_v2").await.unwrap();
    assert!(v2.get("person.p19").await.unwrap().is_some());
    let again = support::run_ok(
        &server.url(),
        &["project", "person_directory", "--drop-retired"],
    );
    assert!(again.contains("no retired versions"), "{again}");
}

fn instance(id: &str, outcome: Option<&str>, updated_at: chrono::DateTime<chrono::Utc>) -> Value {
    json!({
        "saga": "hiring", "id": id, "state": {}, "stage": "x", "outcome": outcome,
        "correlation_id": null, "seq": 1, "timer_seq": 0, "deadlines": {},
        "started_at": updated_at, "updated_at": updated_at, "log": []
    })
}

#[tokio::test]
async fn finished_saga_instances_older_than_asked_are_pruned_and_running_ones_kept() {
    let server = TestServer::start();
    let store = support::open_store(&server).await;
    let sagas = store
        .jetstream()
        .create_key_value(jetstream::kv::Config {
            bucket: "sagas".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let day = chrono::Duration::days(1);
    let records = [
        (
            "old-done",
            instance("old-done", Some("hired"), now - day * 40),
        ),
        (
            "new-done",
            instance("new-done", Some("declined"), now - day),
        ),
        ("old-running", instance("old-running", None, now - day * 40)),
    ];
    for (id, record) in &records {
        let bytes = serde_json::to_vec(record).unwrap();
        sagas
            .put(format!("hiring.{id}"), bytes.into())
            .await
            .unwrap();
    }
    let mut waiting = instance("old-waiting", Some("hired"), now - day * 40);
    waiting["deadlines"] = json!({"expiry": now + day});
    let bytes = serde_json::to_vec(&waiting).unwrap();
    sagas.put("hiring.old-waiting", bytes.into()).await.unwrap();
    let other = instance("old-done", Some("done"), now - day * 40);
    let bytes = serde_json::to_vec(&other).unwrap();
    sagas.put("welcome.old-done", bytes.into()).await.unwrap();

    let out = support::run_ok(
        &server.url(),
        &[
            "sagas",
            "prune",
            "hiring",
            "--finished-before",
            "30d",
            "--json",
        ],
    );
    let pruned: Vec<String> = serde_json::from_str(&out).unwrap();
    assert_eq!(pruned, ["old-done"]);
    assert!(sagas.get("hiring.old-done").await.unwrap().is_none());
    // Younger, running, a deadline still to fire, another saga's: all kept.
    for kept in [
        "hiring.new-done",
        "hiring.old-running",
        "hiring.old-waiting",
        "welcome.old-done",
    ] {
        assert!(sagas.get(kept).await.unwrap().is_some(), "{kept}");
    }
    let bad = support::run(
        &server.url(),
        &["sagas", "prune", "hiring", "--finished-before", "soon"],
    );
    assert!(!bad.status.success());
}

#[tokio::test]
async fn parked_events_are_purged_per_consumer_or_all_and_retries_stay() {
    let server = TestServer::start();
    let store = support::open_store(&server).await;
    let js = store.jetstream();
    let dlq = js
        .create_stream(jetstream::stream::Config {
            name: "DLQ".into(),
            subjects: vec!["dlq.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    for subject in ["dlq.proj_a", "dlq.proj_a", "dlq.saga_b", "dlq.retry.proj_a"] {
        js.publish(subject, "parked".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let count = || {
        let mut dlq = dlq.clone();
        async move { dlq.info().await.unwrap().state.messages }
    };
    // A wildcard is no consumer name: refused, nothing purged.
    let wildcard = support::run(&server.url(), &["dlq", "purge", "proj_*"]);
    assert!(!wildcard.status.success());
    assert_eq!(count().await, 4);

    let one = support::run_ok(&server.url(), &["dlq", "purge", "proj_a"]);
    assert!(one.contains("purged 2"), "{one}");
    let all = support::run_ok(&server.url(), &["dlq", "purge", "--all"]);
    assert!(all.contains("purged 1"), "{all}");
    let left = dlq
        .get_last_raw_message_by_subject("dlq.retry.proj_a")
        .await;
    assert!(left.is_ok(), "a retry waiting for its projection stays");
    assert_eq!(count().await, 1);
}
