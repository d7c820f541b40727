//! The event store against a real nats-server: appends, concurrency, batches, reads.

mod support;

use futures::{StreamExt, TryStreamExt};
use jetsource::store::{
    Append, AppendErrorKind, Codec, ExpectedVersion, Position, ReadErrorKind, StreamErrorKind,
    TypeQuery,
};
use jetsource::testing::TestServer;
use jetsource::{decode_event, encode_event, EventStore, Metadata, NewEvent, StoreConfig};
use std::time::Duration;
use support::{append_new, event, open_store, LedgerEvent};

#[tokio::test]
async fn first_append_then_exact_append_stamps_contiguous_versions() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    let a = append_new(&store, "a", vec![event(1), event(2)]).await;
    assert_eq!(
        (a.first_seq, a.last_seq, a.version, a.duplicate),
        (1, 2, 2, false)
    );
    let b = store
        .append(Append::new(
            "ledger",
            "a",
            ExpectedVersion::Exact(a.position()),
            vec![event(3)],
        ))
        .await
        .unwrap();
    assert_eq!((b.last_seq, b.version), (3, 3));
    let versions: Vec<u64> = store
        .read_aggregate("ledger", "a", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(
        store.last_position("ledger", "a").await.unwrap(),
        Some(Position { seq: 3, version: 3 })
    );
    assert_eq!(store.last_position("ledger", "nobody").await.unwrap(), None);
}

#[tokio::test]
async fn a_stale_expectation_is_a_typed_conflict_with_expected_and_actual() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    append_new(&store, "a", vec![event(1), event(2)]).await;
    let err = store
        .append(Append::new(
            "ledger",
            "a",
            ExpectedVersion::NoStream,
            vec![event(3)],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &AppendErrorKind::Conflict {
            expected: 0,
            actual: Some(2)
        }
    );
    let stale = Position { seq: 1, version: 1 };
    let err = store
        .append(Append::new(
            "ledger",
            "a",
            ExpectedVersion::Exact(stale),
            vec![event(3)],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &AppendErrorKind::Conflict {
            expected: 1,
            actual: Some(2)
        }
    );
}

#[tokio::test]
async fn a_conflicting_multi_event_append_stores_nothing() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    append_new(&store, "a", vec![event(1)]).await;
    let many: Vec<NewEvent> = (0..50).map(event).collect();
    let err = store
        .append(Append::new("ledger", "a", ExpectedVersion::NoStream, many))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(
        store.read_aggregate("ledger", "a", 0).await.unwrap().len(),
        1
    );
    let all: Vec<_> = store.read_all(1).try_collect().await.unwrap();
    assert_eq!(all.len(), 1, "nothing of the failed batch may be stored");
}

#[tokio::test]
async fn any_appends_after_whatever_is_there_with_contiguous_versions() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(Append::new(
                        "ledger",
                        "any",
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
    let versions: Vec<u64> = store
        .read_aggregate("ledger", "any", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn retrying_the_same_events_stores_nothing_twice() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    for events in [vec![event(1)], vec![event(2), event(3)]] {
        let id = format!("retry-{}", events.len());
        let append = Append::new("ledger", &id, ExpectedVersion::NoStream, events);
        let first = store.append(append.clone()).await.unwrap();
        let again = store.append(append.clone()).await.unwrap();
        assert!(
            again.duplicate,
            "the retry must be recognised as a duplicate"
        );
        assert_eq!(
            (again.first_seq, again.last_seq, again.version),
            (first.first_seq, first.last_seq, first.version)
        );
        let grouped = store.append_grouped(append).await.unwrap();
        assert!(grouped.duplicate);
        assert_eq!(
            store.read_aggregate("ledger", &id, 0).await.unwrap().len(),
            first.version as usize
        );
    }
    // An append is known by its first event's id (without a command id): reusing
    // it in a different append is refused, not silently dropped.
    let reused = event(9);
    append_new(&store, "x", vec![reused.clone(), event(10)]).await;
    let err = store
        .append(Append::new(
            "ledger",
            "y",
            ExpectedVersion::NoStream,
            vec![reused, event(11)],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &AppendErrorKind::DuplicateEventId);
    assert!(store
        .read_aggregate("ledger", "y", 0)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn json_and_cbor_events_share_a_stream_and_round_trip_with_metadata() {
    let server = TestServer::start();
    let json_store = open_store(&server).await;
    let cbor_store = support::open_store_with(
        &server,
        StoreConfig {
            codec: Codec::Cbor,
            ..Default::default()
        },
    )
    .await;
    let meta = Metadata::default()
        .with_correlation_id("corr-1")
        .with_causation_id("cmd-1")
        .with_actor("alice")
        .with_on_behalf_of("acme")
        .with_command_id("cmd-1")
        .with_custom("Source", "web");
    let opened = LedgerEvent::Opened {
        owner: "Ada Lovelace — ünïcode".into(),
    };
    let credited = LedgerEvent::Credited { amount: u64::MAX };
    // A command id names one command on its aggregate: the second append is
    // another command.
    let meta2 = meta.clone().with_command_id("cmd-2");
    let e1 = encode_event(&opened, json_store.config().codec, &meta).unwrap();
    let e2 = encode_event(&credited, cbor_store.config().codec, &meta2).unwrap();
    let a = append_new(&json_store, "mixed", vec![e1.clone()]).await;
    cbor_store
        .append(Append::new(
            "ledger",
            "mixed",
            ExpectedVersion::Exact(a.position()),
            vec![e2.clone()],
        ))
        .await
        .unwrap();
    let stored = json_store
        .read_aggregate("ledger", "mixed", 0)
        .await
        .unwrap();
    assert_eq!(stored[0].codec, Codec::Json);
    assert_eq!(stored[1].codec, Codec::Cbor);
    assert_eq!(decode_event::<LedgerEvent>(&stored[0]).unwrap(), opened);
    assert_eq!(decode_event::<LedgerEvent>(&stored[1]).unwrap(), credited);
    for (recorded, sent) in stored.iter().zip([&e1, &e2]) {
        assert_eq!(recorded.metadata, sent.metadata);
        assert_eq!(recorded.event_id, sent.event_id);
        assert_eq!(recorded.event_type, sent.event_type);
        assert_eq!(recorded.schema, 1);
        assert_eq!(
            recorded.occurred_at.timestamp_micros(),
            sent.occurred_at.timestamp_micros()
        );
        assert_eq!(
            (recorded.aggregate.as_str(), recorded.aggregate_id.as_str()),
            ("ledger", "mixed")
        );
        assert!(recorded.stored_at.is_some());
    }
}

#[tokio::test]
async fn limits_are_refused_before_anything_is_sent() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    let too_many: Vec<_> = (0..1001).map(event).collect();
    let err = store
        .append(Append::new(
            "ledger",
            "big",
            ExpectedVersion::NoStream,
            too_many,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &AppendErrorKind::TooManyEvents {
            count: 1001,
            max: 1000
        }
    );
    let huge = NewEvent::encode(
        "Huge",
        1,
        &"x".repeat(2 * 1024 * 1024),
        Codec::Json,
        Metadata::default(),
    )
    .unwrap();
    let err = store
        .append(Append::new(
            "ledger",
            "big",
            ExpectedVersion::NoStream,
            vec![huge],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            AppendErrorKind::PayloadTooLarge { max: 1048576, .. }
        ),
        "{err}"
    );
    for bad_id in ["a.b", "a*", "a>", "a b", ""] {
        let err = store
            .append(Append::new(
                "ledger",
                bad_id,
                ExpectedVersion::NoStream,
                vec![event(1)],
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind(), AppendErrorKind::InvalidName { what: "id", .. }),
            "{bad_id:?}: {err}"
        );
    }
    let err = store
        .append(Append::new(
            "ledger",
            "a",
            ExpectedVersion::NoStream,
            vec![],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &AppendErrorKind::NoEvents);
    assert_eq!(store.stats().batches, 0, "nothing may have been sent");
    let all: Vec<_> = store.read_all(1).try_collect().await.unwrap();
    assert!(all.is_empty());
}

#[tokio::test]
async fn a_ten_thousand_event_aggregate_loads_whole_and_streams_leaving_no_consumer() {
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = open_store(&server).await;
    let mut position = Position::default();
    for chunk in 0..10 {
        let events: Vec<_> = (0..1000).map(|i| event(chunk * 1000 + i)).collect();
        let expected = if chunk == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(position)
        };
        position = store
            .append(Append::new("ledger", "long", expected, events))
            .await
            .unwrap()
            .position();
        // Interleave another aggregate so the read has to skip.
        append_new(&store, &format!("other-{chunk}"), vec![event(0)]).await;
    }
    let all = store.read_aggregate("ledger", "long", 0).await.unwrap();
    assert_eq!(all.len(), 10_000);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, e)| e.version == i as u64 + 1));
    let tail = store
        .read_aggregate("ledger", "long", all[8999].seq)
        .await
        .unwrap();
    assert_eq!(tail.len(), 1000);
    assert_eq!(tail[0].version, 9001);
    let streamed = store.stream_aggregate("ledger", "long", 0).count().await;
    assert_eq!(streamed, 10_000);

    // A long read goes on with an ordered consumer after its first page ...
    let consumers = || async {
        let mut stream = store.jetstream().get_stream("EVENTS").await.unwrap();
        stream.info().await.unwrap().state.consumer_count
    };
    let mut partial = store.stream_aggregate("ledger", "long", 0);
    for version in 1..=1500 {
        assert_eq!(partial.next().await.unwrap().unwrap().version, version);
    }
    assert_eq!(consumers().await, 1);
    // ... which goes away when the read is dropped half-way, and more long reads
    // at once than a store runs consumers for finish on direct gets.
    drop(partial);
    let reads = (0..20).map(|_| store.read_aggregate("ledger", "long", 0));
    for read in futures::future::join_all(reads).await {
        let read = read.unwrap();
        assert_eq!(read.len(), 10_000);
        assert!(read.windows(2).all(|w| w[1].version == w[0].version + 1));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while consumers().await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a read left its consumer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_global_log_and_type_scans_filter_without_decoding_skipped_bodies() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    let opened = encode_event(
        &LedgerEvent::Opened { owner: "o".into() },
        Codec::Json,
        &Default::default(),
    )
    .unwrap();
    append_new(&store, "a", vec![opened, event(5)]).await;
    // An undecodable body of a type the scan skips must not break it.
    let junk = NewEvent {
        payload: bytes::Bytes::from_static(b"\xff not json"),
        ..NewEvent::encode("Junk", 1, &(), Codec::Json, Metadata::default()).unwrap()
    };
    append_new(&store, "b", vec![junk]).await;
    let midpoint = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store
        .append(Append::new(
            "other",
            "c",
            ExpectedVersion::NoStream,
            vec![event(6)],
        ))
        .await
        .unwrap();
    append_new(&store, "d", vec![event(7)]).await;

    let log: Vec<_> = store.read_all(1).try_collect().await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let from3: Vec<_> = store.read_all(3).try_collect().await.unwrap();
    assert_eq!(from3.len(), 3);

    let credited: Vec<_> = store
        .read_by_type(TypeQuery::new("ledger").types(["Credited"]))
        .try_collect()
        .await
        .unwrap();
    let amounts: Vec<_> = credited
        .iter()
        .map(|e| decode_event::<LedgerEvent>(e).unwrap())
        .collect();
    assert_eq!(
        amounts,
        [
            LedgerEvent::Credited { amount: 5 },
            LedgerEvent::Credited { amount: 7 }
        ]
    );

    let late: Vec<_> = store
        .read_by_type(TypeQuery::new("ledger").since(midpoint))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        late.iter()
            .map(|e| e.aggregate_id.as_str())
            .collect::<Vec<_>>(),
        ["d"]
    );
    let early: Vec<_> = store
        .read_by_type(
            TypeQuery::new("ledger")
                .until(midpoint)
                .types(["Opened", "Credited"]),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(early.len(), 2);

    // The junk body is an error naming its sequence when someone does decode it.
    let junk = &log[2];
    let err = decode_event::<LedgerEvent>(junk).unwrap_err();
    assert_eq!(err.seq, 3);
}

#[tokio::test]
async fn a_stored_message_that_is_not_an_event_is_an_error_naming_its_sequence() {
    let server = TestServer::start();
    let store = open_store(&server).await;
    append_new(&store, "a", vec![event(1)]).await;
    // Someone publishes a bare message onto the aggregate's subject.
    let js = store.jetstream();
    js.publish("events.ledger.a", "raw".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let err = store.read_aggregate("ledger", "a", 0).await.unwrap_err();
    match err.kind() {
        ReadErrorKind::Malformed(m) => assert_eq!(m.seq, 2, "{m}"),
        other => panic!("expected a malformed-event error, got {other}"),
    }
    // The good event before it still comes through a stream, then the error.
    let items: Vec<_> = store.stream_aggregate("ledger", "a", 0).collect().await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap().version, 1);
    assert!(items[1].is_err());
}

#[tokio::test]
async fn an_incompatible_stream_is_reported_and_left_unchanged() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["events.>".into()],
        max_age: std::time::Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = EventStore::open(client.clone(), StoreConfig::default())
        .await
        .unwrap_err();
    let jetsource::store::OpenError::Stream(err) = err else {
        panic!("{err}")
    };
    let StreamErrorKind::Incompatible { differences, .. } = err.kind() else {
        panic!("{err}")
    };
    assert!(
        differences.iter().any(|d| d.starts_with("max_age")),
        "{differences:?}"
    );
    assert!(
        differences.iter().any(|d| d.starts_with("allow_atomic")),
        "{differences:?}"
    );
    let mut stream = js.get_stream("EVENTS").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().config.max_age,
        std::time::Duration::from_secs(3600)
    );
    // Opening twice against a compatible stream is idempotent.
    let server2 = TestServer::start();
    let c2 = jetsource::connect(&server2.url()).await.unwrap();
    EventStore::open(c2.clone(), StoreConfig::default())
        .await
        .unwrap();
    EventStore::open(c2, StoreConfig::default()).await.unwrap();
}

#[tokio::test]
async fn a_restarted_server_keeps_every_acknowledged_event() {
    let mut server = TestServer::start();
    let store = open_store(&server).await;
    let mut acked = 0;
    for i in 0..100 {
        store
            .append_grouped(Append::new(
                "ledger",
                format!("r{}", i % 10),
                ExpectedVersion::Any,
                vec![event(i)],
            ))
            .await
            .unwrap();
        acked += 1;
    }
    server.restart();
    let store = open_store(&server).await;
    let all: Vec<_> = store.read_all(1).try_collect().await.unwrap();
    assert_eq!(all.len(), acked);
    for i in 0..10 {
        let events = store
            .read_aggregate("ledger", &format!("r{i}"), 0)
            .await
            .unwrap();
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_stopped_server_gives_a_typed_error_not_a_hang() {
    let mut server = TestServer::start();
    let store = support::open_store_with(
        &server,
        StoreConfig {
            request_timeout: std::time::Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await;
    server.stop();
    let err = store
        .append(Append::new(
            "ledger",
            "a",
            ExpectedVersion::NoStream,
            vec![event(1)],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            AppendErrorKind::TimedOut | AppendErrorKind::Unavailable
        ),
        "{err}"
    );
    let err = store.read_aggregate("ledger", "a", 0).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ReadErrorKind::TimedOut | ReadErrorKind::Unavailable
        ),
        "{err}"
    );
}

/// A stream made with a shorter duplicate window than idempotency needs (the old
/// 2-minute default) is widened in place on open; a longer one is left alone.
#[tokio::test]
async fn a_short_duplicate_window_is_widened_on_open() {
    let server = TestServer::start();
    let window = |store: &jetsource::EventStore| {
        let js = store.jetstream().clone();
        async move {
            js.get_stream("EVENTS")
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .config
                .duplicate_window
        }
    };
    let short = StoreConfig {
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let old = support::open_store_with(&server, short).await;
    assert_eq!(window(&old).await, Duration::from_secs(120));
    let new = open_store(&server).await;
    assert_eq!(window(&new).await, Duration::from_secs(600));
    let again = support::open_store_with(
        &server,
        StoreConfig {
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        window(&again).await,
        Duration::from_secs(600),
        "never narrowed"
    );
}
