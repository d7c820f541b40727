//! Snapshots against a real server: loads start from them, bad ones are ignored.

mod support;

use async_nats::jetstream::kv;
use jetsource::repository::PointInTime;
use jetsource::snapshot::Snapshot;
use jetsource::store::ReadErrorKind;
use jetsource::testing::TestServer;
use jetsource::{Metadata, Repository, RepositoryConfig};
use std::time::{Duration, Instant};
use support::{open_store, Ledger, LedgerCommand};

impl Snapshot for Ledger {}

async fn snapshot_bucket(store: &jetsource::EventStore) -> kv::Store {
    store
        .jetstream()
        .get_key_value(jetsource::snapshot::BUCKET)
        .await
        .unwrap()
}

async fn wait_for_snapshot(bucket: &kv::Store, key: &str, version: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(bytes) = bucket.get(key).await.unwrap() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if v["version"].as_u64() == Some(version) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot of {key} at version {version}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn snapshots_are_written_every_n_events_and_loads_start_from_them() {
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = open_store(&server).await;
    let repo = Repository::<Ledger>::with_snapshots(store.clone(), RepositoryConfig::default(), 10)
        .await
        .unwrap();
    let meta = Metadata::default();
    repo.execute("s", &LedgerCommand::Open { owner: "o".into() }, &meta)
        .await
        .unwrap();
    for _ in 0..24 {
        repo.execute("s", &LedgerCommand::Credit(2), &meta)
            .await
            .unwrap();
    }
    let bucket = snapshot_bucket(&store).await;
    let snap = wait_for_snapshot(&bucket, "ledger.s", 20).await;
    assert_eq!(snap["state"]["balance"], 38);

    // A fresh repository (a new node) loads the snapshot plus the 5 events after it.
    let fresh =
        Repository::<Ledger>::with_snapshots(store.clone(), RepositoryConfig::default(), 10)
            .await
            .unwrap();
    let reads = store.stats().reads;
    let loaded = fresh.load("s").await.unwrap();
    assert_eq!(
        (
            loaded.position.version,
            loaded.state.balance,
            loaded.state.entries
        ),
        (25, 48, 25)
    );
    assert_eq!(
        store.stats().reads - reads,
        1,
        "one page after the snapshot, not a full replay"
    );
    let full = Repository::<Ledger>::new(store.clone(), RepositoryConfig::default())
        .load("s")
        .await
        .unwrap();
    assert_eq!(
        (full.state.balance, full.position),
        (loaded.state.balance, loaded.position)
    );
}

#[tokio::test]
async fn an_undecodable_or_outdated_snapshot_is_ignored_and_the_aggregate_replayed() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    let repo =
        Repository::<Ledger>::with_snapshots(store.clone(), RepositoryConfig::default(), 1000)
            .await
            .unwrap();
    let meta = Metadata::default();
    repo.execute("b", &LedgerCommand::Open { owner: "o".into() }, &meta)
        .await
        .unwrap();
    repo.execute("b", &LedgerCommand::Credit(5), &meta)
        .await
        .unwrap();
    let bucket = snapshot_bucket(&store).await;
    for junk in [
        b"\xff\x00 not json".to_vec(),
        serde_json::to_vec(&serde_json::json!({"schema": 99, "version": 2, "seq": 2, "state": {"open": true, "balance": 1000, "entries": 2}})).unwrap(),
        serde_json::to_vec(&serde_json::json!({"schema": 1, "version": 2, "seq": 2, "state": {"nonsense": true}})).unwrap(),
    ] {
        bucket.put("ledger.b", junk.into()).await.unwrap();
        let fresh = Repository::<Ledger>::with_snapshots(store.clone(), RepositoryConfig::default(), 1000).await.unwrap();
        let loaded = fresh.load("b").await.unwrap();
        assert_eq!((loaded.state.balance, loaded.position.version), (5, 2));
    }
}

#[tokio::test]
async fn a_retry_of_a_command_before_the_snapshot_is_still_recognised() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    let repo = Repository::<Ledger>::with_snapshots(store.clone(), RepositoryConfig::default(), 2)
        .await
        .unwrap();
    repo.execute(
        "r",
        &LedgerCommand::Open { owner: "o".into() },
        &Metadata::default().with_command_id("open"),
    )
    .await
    .unwrap();
    let first = repo
        .execute(
            "r",
            &LedgerCommand::Credit(3),
            &Metadata::default().with_command_id("credit"),
        )
        .await
        .unwrap();
    wait_for_snapshot(&snapshot_bucket(&store).await, "ledger.r", 2).await;
    let fresh = Repository::<Ledger>::with_snapshots(store.clone(), RepositoryConfig::default(), 2)
        .await
        .unwrap();
    let again = fresh
        .execute(
            "r",
            &LedgerCommand::Credit(3),
            &Metadata::default().with_command_id("credit"),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!((again.version, again.seq), (first.version, first.seq));
    assert_eq!(fresh.load("r").await.unwrap().state.balance, 3);
}

#[tokio::test]
async fn time_travel_starts_from_the_snapshot_before_the_point_and_is_capped() {
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = open_store(&server).await;
    let capped = RepositoryConfig {
        max_time_travel_events: 5,
        ..RepositoryConfig::default()
    };
    let repo = Repository::<Ledger>::with_snapshots(store.clone(), capped, 10)
        .await
        .unwrap();
    let meta = Metadata::default();
    repo.execute("t", &LedgerCommand::Open { owner: "o".into() }, &meta)
        .await
        .unwrap();
    for _ in 0..24 {
        repo.execute("t", &LedgerCommand::Credit(2), &meta)
            .await
            .unwrap();
    }
    wait_for_snapshot(&snapshot_bucket(&store).await, "ledger.t", 20).await;

    // Version 23 is 3 events past the snapshot at 20: within the cap of 5.
    let then = repo.load_at("t", PointInTime::Version(23)).await.unwrap();
    assert_eq!((then.position.version, then.state.balance), (23, 44));
    // Version 12 has no snapshot at or before it: 12 events from the start, over the cap.
    let err = repo
        .load_at("t", PointInTime::Version(12))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ReadErrorKind::TooLong { limit: 5 }),
        "{err}"
    );
    // Within the cap from the start is fine.
    let early = repo.load_at("t", PointInTime::Version(4)).await.unwrap();
    assert_eq!((early.position.version, early.state.balance), (4, 6));
}
