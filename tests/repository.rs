//! The repository and group commit against a real nats-server.

mod support;

use jetsource::store::{Append, AppendErrorKind, ExpectedVersion, GroupCommitConfig, Position};
use jetsource::testing::{TestCluster, TestServer};
use jetsource::{ExecuteError, Metadata, Repository, RepositoryConfig, StoreConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{event, open_store, open_store_with, Ledger, LedgerCommand, LedgerError};

#[tokio::test]
async fn concurrent_writers_on_one_aggregate_lose_no_update() {
    let server = TestServer::start();
    // Two repositories on two connections: two nodes that only the server keeps in order.
    let node_b = Arc::new(Repository::<Ledger>::new(
        open_store(&server).await,
        RepositoryConfig {
            conflict_retries: 100,
            ..Default::default()
        },
    ));
    let node_a = Arc::new(Repository::<Ledger>::new(
        open_store(&server).await,
        RepositoryConfig {
            conflict_retries: 100,
            ..Default::default()
        },
    ));
    node_a
        .execute(
            "hot",
            &LedgerCommand::Open { owner: "o".into() },
            &Metadata::default(),
        )
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let repo = if t % 2 == 0 {
                node_a.clone()
            } else {
                node_b.clone()
            };
            tokio::spawn(async move {
                let mut accepted = 0u64;
                for _ in 0..50 {
                    match repo
                        .execute("hot", &LedgerCommand::Credit(1), &Metadata::default())
                        .await
                    {
                        Ok(_) => accepted += 1,
                        Err(ExecuteError::Conflict { .. }) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(
        accepted, 400,
        "every command should get through within its retries"
    );
    let loaded = node_b.load("hot").await.unwrap();
    assert_eq!(loaded.position.version, accepted + 1);
    assert_eq!(loaded.state.balance, accepted);
    let stored = node_a
        .store()
        .read_aggregate("ledger", "hot", 0)
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, accepted + 1);
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, e)| e.version == i as u64 + 1),
        "versions must be 1..n"
    );
}

#[tokio::test]
async fn a_warm_aggregate_is_decided_without_reading_and_a_conflict_reloads() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    let repo = Repository::<Ledger>::new(store.clone(), RepositoryConfig::default());
    let meta = Metadata::default();
    repo.execute("w", &LedgerCommand::Open { owner: "o".into() }, &meta)
        .await
        .unwrap();
    let reads = store.stats().reads;
    let done = repo
        .execute("w", &LedgerCommand::Credit(10), &meta)
        .await
        .unwrap();
    assert_eq!(store.stats().reads, reads, "a warm command must not read");
    assert_eq!(
        (done.version, done.event_types.as_slice()),
        (2, ["Credited".to_string()].as_slice())
    );

    // Another writer moves the aggregate on behind the cache's back.
    let other = open_store(&server).await;
    other
        .append(Append::new(
            "ledger",
            "w",
            ExpectedVersion::Exact(Position {
                seq: done.seq,
                version: 2,
            }),
            vec![event(5)],
        ))
        .await
        .unwrap();
    let done = repo
        .execute("w", &LedgerCommand::Debit(15), &meta)
        .await
        .unwrap();
    assert_eq!(
        done.version, 4,
        "the conflict must reload the other writer's event and re-decide"
    );
    assert_eq!(repo.load("w").await.unwrap().state.balance, 0);
}

#[tokio::test]
async fn domain_refusals_and_expected_versions_store_nothing() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    let repo = Repository::<Ledger>::new(store.clone(), RepositoryConfig::default());
    let meta = Metadata::default();
    let err = repo
        .execute("r", &LedgerCommand::Credit(1), &meta)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecuteError::Rejected(LedgerError::NotOpen)),
        "{err}"
    );
    repo.execute("r", &LedgerCommand::Open { owner: "o".into() }, &meta)
        .await
        .unwrap();
    let err = repo
        .execute("r", &LedgerCommand::Debit(1), &meta)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ExecuteError::Rejected(LedgerError::InsufficientFunds)
    ));
    let err = repo
        .execute_expecting("r", &LedgerCommand::Credit(1), &meta, 7)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecuteError::WrongVersion {
                expected: 7,
                actual: 1
            }
        ),
        "{err}"
    );
    let ok = repo
        .execute_expecting("r", &LedgerCommand::Credit(1), &meta, 1)
        .await
        .unwrap();
    assert_eq!(ok.version, 2);
    let err = repo
        .execute("bad.id", &LedgerCommand::Credit(1), &meta)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecuteError::InvalidId(_)));
    assert_eq!(
        store.read_aggregate("ledger", "r", 0).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn a_two_event_command_is_stored_whole_with_metadata_on_every_event() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    let repo = Repository::<Ledger>::new(store.clone(), RepositoryConfig::default());
    let meta = Metadata::default()
        .with_actor("bob")
        .with_on_behalf_of("t1")
        .with_command_id("c-9");
    let open = meta.clone().with_command_id("c-8");
    repo.execute("t", &LedgerCommand::Open { owner: "o".into() }, &open)
        .await
        .unwrap();
    let done = repo
        .execute(
            "t",
            &LedgerCommand::Transfer {
                credit: 5,
                debit: 3,
            },
            &meta,
        )
        .await
        .unwrap();
    assert_eq!(done.version, 3);
    let stored = store.read_aggregate("ledger", "t", 0).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored[1..].iter().all(|e| e.metadata == meta));
    assert_eq!(stored[2].seq, done.seq);
}

#[tokio::test]
async fn a_command_id_seen_in_the_stream_is_not_executed_again_by_any_node() {
    let server = TestServer::start();
    let node_a = Repository::<Ledger>::new(open_store(&server).await, RepositoryConfig::default());
    let node_b = Repository::<Ledger>::new(open_store(&server).await, RepositoryConfig::default());
    let meta = |id: &str| Metadata::default().with_command_id(id);
    node_a
        .execute(
            "d",
            &LedgerCommand::Open { owner: "o".into() },
            &meta("open"),
        )
        .await
        .unwrap();
    // Node B's cache is warm before A's credit: it must still see the command in the stream.
    node_b
        .execute("d", &LedgerCommand::Credit(1), &meta("credit-1"))
        .await
        .unwrap();
    let first = node_a
        .execute(
            "d",
            &LedgerCommand::Transfer {
                credit: 7,
                debit: 2,
            },
            &meta("xfer"),
        )
        .await
        .unwrap();
    let again = node_b
        .execute(
            "d",
            &LedgerCommand::Transfer {
                credit: 7,
                debit: 2,
            },
            &meta("xfer"),
        )
        .await
        .unwrap();
    assert!(again.duplicate && !first.duplicate);
    assert_eq!(
        (again.version, again.seq, &again.event_types),
        (first.version, first.seq, &first.event_types)
    );
    let same_node = node_a
        .execute(
            "d",
            &LedgerCommand::Transfer {
                credit: 7,
                debit: 2,
            },
            &meta("xfer"),
        )
        .await
        .unwrap();
    assert!(same_node.duplicate);
    assert_eq!(
        node_a
            .store()
            .read_aggregate("ledger", "d", 0)
            .await
            .unwrap()
            .len(),
        4
    );
    assert_eq!(node_b.load("d").await.unwrap().state.balance, 6);
}

#[tokio::test]
async fn group_commit_packs_concurrent_appends_and_a_stale_one_fails_alone() {
    let server = TestServer::start();
    let store = open_store_with(
        &server,
        StoreConfig {
            group_commit: GroupCommitConfig {
                max_in_flight: 1,
                linger: Duration::from_micros(500),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    store
        .append(Append::new(
            "ledger",
            "stale",
            ExpectedVersion::NoStream,
            vec![event(0)],
        ))
        .await
        .unwrap();
    let before = store.stats();
    let n = 200;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let (id, expected) = if i == 100 {
                    ("stale".to_string(), ExpectedVersion::NoStream)
                } else {
                    (format!("g{i}"), ExpectedVersion::NoStream)
                };
                store
                    .append_grouped(Append::new(
                        "ledger",
                        &id,
                        expected,
                        vec![event(i), event(i + 1)],
                    ))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(a) => {
                assert_ne!(i, 100);
                assert_eq!(a.version, 2);
                assert_eq!(a.last_seq, a.first_seq + 1);
                ok += 1;
            }
            Err(e) => {
                assert_eq!(i, 100, "only the stale append may fail, not #{i}: {e}");
                assert_eq!(
                    e.kind(),
                    &AppendErrorKind::Conflict {
                        expected: 0,
                        actual: Some(1)
                    }
                );
            }
        }
    }
    assert_eq!(ok, n - 1);
    let after = store.stats();
    let batches = after.batches - before.batches;
    assert!(
        batches < n,
        "{batches} batches for {n} appends: nothing was grouped"
    );
    for i in (0..n).filter(|i| *i != 100) {
        let events = store
            .read_aggregate("ledger", &format!("g{i}"), 0)
            .await
            .unwrap();
        assert_eq!(events.len(), 2, "g{i}");
    }
    assert_eq!(
        store
            .read_aggregate("ledger", "stale", 0)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn group_commit_never_puts_one_aggregate_twice_in_a_batch() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_grouped(Append::new(
                        "ledger",
                        "same",
                        ExpectedVersion::Any,
                        vec![event(i)],
                    ))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let events = store.read_aggregate("ledger", "same", 0).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_r3_cluster_keeps_every_acknowledged_event_when_a_server_dies() {
    let mut cluster = TestCluster::start(3);
    let client = jetsource::connect(&cluster.urls()).await.unwrap();
    let store = jetsource::EventStore::open(
        client,
        StoreConfig {
            replicas: 3,
            request_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut i = 0u64;
            while Instant::now() < deadline {
                let append = Append::new(
                    "ledger",
                    format!("c{}", i % 50),
                    ExpectedVersion::Any,
                    vec![event(i)],
                );
                let event_id = append.events[0].event_id;
                if store.append_grouped(append).await.is_ok() {
                    acked.push(event_id);
                }
                i += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.nodes[0].stop();
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 50,
        "too few appends acknowledged to mean anything: {}",
        acked.len()
    );
    // Direct gets may be answered by a follower: give replication a moment.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stored = futures::TryStreamExt::try_collect::<Vec<_>>(store.read_all(1)).await;
        let ids: std::collections::HashSet<_> = match stored {
            Ok(events) => events.into_iter().map(|e| e.event_id).collect(),
            Err(_) => Default::default(),
        };
        let missing = acked.iter().filter(|id| !ids.contains(id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged events are missing",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 9, exactly once for the window: in an R3 cluster, a retry sent after 70
/// other commands and the death of the stream's leader, to a fresh repository (another
/// node), gets the first execution's outcome, whether it would now run again or be
/// refused, and stores nothing.
#[tokio::test]
async fn a_retry_after_the_stream_leader_dies_gets_the_first_outcome() {
    let mut cluster = TestCluster::start(3);
    let config = StoreConfig {
        replicas: 3,
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let urls = cluster.urls();
    let connect = || async {
        let client = jetsource::connect(&urls).await.unwrap();
        jetsource::EventStore::open(client, config.clone())
            .await
            .unwrap()
    };
    let store = connect().await;
    let first = Repository::<Ledger>::new(store.clone(), RepositoryConfig::default());
    let with_id = |id: &str| Metadata::default().with_command_id(id);
    let open = LedgerCommand::Open { owner: "o".into() };
    let opened = first
        .execute("acct", &open, &with_id("open-1"))
        .await
        .unwrap();
    let credited = first
        .execute("acct", &LedgerCommand::Credit(5), &with_id("credit-1"))
        .await
        .unwrap();
    for i in 0..70 {
        first
            .execute(
                "acct",
                &LedgerCommand::Credit(1),
                &with_id(&format!("other-{i}")),
            )
            .await
            .unwrap();
    }
    let leader = store
        .jetstream()
        .get_stream("EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("a stream leader");
    // The servers are named n1, n2, n3 in start order.
    let index = leader.trim_start_matches('n').parse::<usize>().unwrap() - 1;
    cluster.nodes[index].stop();

    let other = Repository::<Ledger>::new(connect().await, RepositoryConfig::default());
    let retry = |command: LedgerCommand, id: &'static str| {
        let other = &other;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match other.execute("acct", &command, &with_id(id)).await {
                    Ok(done) => return done,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("{id} while the leader moves: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("{id}: {e}"),
                }
            }
        }
    };
    let again = retry(LedgerCommand::Credit(5), "credit-1").await;
    assert!(again.duplicate);
    assert_eq!((again.seq, again.version), (credited.seq, credited.version));
    let again = retry(open, "open-1").await;
    assert!(again.duplicate, "a retry that would be refused now");
    assert_eq!((again.seq, again.version), (opened.seq, opened.version));
    assert_eq!(again.event_types, ["Opened"]);
    let events = other
        .store()
        .read_aggregate("ledger", "acct", 0)
        .await
        .unwrap();
    assert_eq!(events.len(), 72, "nothing stored twice");
}
