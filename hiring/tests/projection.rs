//! The projection runner against a real server: catch-up, idempotent replays,
//! poison events parked in DLQ.

mod support;

use futures::StreamExt;
use hiring::directory::{email_key, person_key, PersonDirectory};
use hiring::{Person, PersonCommand};
use jetsource::projection::{
    ApplyError, PoisonPolicy, Projection, ProjectionRunner, RunnerConfig, RunnerErrorKind, View,
};
use jetsource::testing::TestServer;
use jetsource::{EventStore, Metadata, RecordedEvent, Repository, RepositoryConfig, StoreConfig};
use serde_json::Value;
use std::time::{Duration, Instant};
use support::view_rows;

async fn setup() -> (TestServer, EventStore, Repository<Person>) {
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client, StoreConfig::default())
        .await
        .unwrap();
    let people = Repository::<Person>::new(store.clone(), RepositoryConfig::default());
    (server, store, people)
}

async fn register(people: &Repository<Person>, id: &str, name: &str, email: &str) {
    people
        .execute(
            id,
            &PersonCommand::Register {
                name: name.into(),
                email: email.into(),
            },
            &Metadata::default(),
        )
        .await
        .unwrap();
}

async fn catch_up<P: Projection>(runner: &mut ProjectionRunner<P>, store: &EventStore) {
    let target = store.last_seq().await.unwrap();
    for _ in 0..100 {
        if runner.checkpoint() >= target {
            return;
        }
        runner.step().await.unwrap();
    }
    panic!("runner stuck at {} of {target}", runner.checkpoint());
}

#[tokio::test]
async fn the_directory_catches_up_in_batches_and_follows_email_changes() {
    let (_server, store, people) = setup().await;
    for i in 0..300 {
        register(
            &people,
            &format!("p{i}"),
            &format!("Person {i}"),
            &format!("p{i}@example.org"),
        )
        .await;
    }
    for i in 0..50 {
        let cmd = PersonCommand::ChangeEmail {
            email: format!("new{i}@example.org"),
        };
        people
            .execute(&format!("p{i}"), &cmd, &Metadata::default())
            .await
            .unwrap();
    }
    people
        .execute("p7", &PersonCommand::Deactivate {}, &Metadata::default())
        .await
        .unwrap();
    let mut runner = ProjectionRunner::new(
        store.clone(),
        PersonDirectory,
        RunnerConfig {
            batch: 128,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    catch_up(&mut runner, &store).await;
    let view = view_rows(&store, "view_person_directory").await;
    let person = |id: &str| view[&person_key(id)]["value"].clone();
    assert_eq!(person("p3")["email"], "new3@example.org");
    assert_eq!(person("p299")["name"], "Person 299");
    assert_eq!(person("p7")["active"], false);
    assert_eq!(view[&email_key("new3@example.org")]["value"]["id"], "p3");
    assert_eq!(
        view[&email_key("p3@example.org")]["value"],
        Value::Null,
        "the old email no longer points anywhere"
    );
    assert_eq!(view[&email_key("p60@example.org")]["value"]["id"], "p60");
    let seq = view[&person_key("p3")]["seq"].as_u64().unwrap();
    assert!(
        seq > 300,
        "a row remembers the event that last wrote it: {seq}"
    );

    // Later events are picked up by the same runner.
    register(&people, "late", "Late Person", "late@example.org").await;
    catch_up(&mut runner, &store).await;
    assert_eq!(
        view_rows(&store, "view_person_directory").await[&person_key("late")]["value"]["name"],
        "Late Person"
    );
}

#[tokio::test]
async fn replaying_every_event_over_an_existing_view_changes_nothing() {
    let (_server, store, people) = setup().await;
    for i in 0..40 {
        register(
            &people,
            &format!("p{i}"),
            "Same",
            &format!("p{i}@example.org"),
        )
        .await;
        people
            .execute(
                &format!("p{i}"),
                &PersonCommand::ChangeName {
                    name: format!("Name {i}"),
                },
                &Metadata::default(),
            )
            .await
            .unwrap();
    }
    let mut runner = ProjectionRunner::new(store.clone(), PersonDirectory, RunnerConfig::default())
        .await
        .unwrap();
    catch_up(&mut runner, &store).await;
    let before = view_rows(&store, "view_person_directory").await;
    // Lose the consumer and the checkpoint (say, a botched migration): every event
    // is delivered again onto the existing rows.
    store
        .jetstream()
        .get_stream("EVENTS")
        .await
        .unwrap()
        .delete_consumer("proj_person_directory")
        .await
        .unwrap();
    store
        .jetstream()
        .get_key_value("view_person_directory")
        .await
        .unwrap()
        .purge(jetsource::projection::storage::CHECKPOINT_KEY)
        .await
        .unwrap();
    let mut again = ProjectionRunner::new(
        store.clone(),
        PersonDirectory,
        RunnerConfig {
            batch: 7,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(again.checkpoint(), 0);
    catch_up(&mut again, &store).await;
    assert_eq!(view_rows(&store, "view_person_directory").await, before);
}

/// Counts events per type, and cannot stomach a person named "poison".
struct Picky;

impl Projection for Picky {
    fn name(&self) -> &str {
        "picky"
    }
    fn aggregates(&self) -> &[&'static str] {
        &["person"]
    }
    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError> {
        if event.body().unwrap()["name"] == "poison" {
            return Err(ApplyError::Failed("cannot apply poison".into()));
        }
        let n = view
            .get(&event.event_type)?
            .and_then(Value::as_u64)
            .unwrap_or(0);
        view.put(&event.event_type, serde_json::json!(n + 1));
        Ok(())
    }
}

#[tokio::test]
async fn a_poison_event_is_parked_with_its_error_and_the_rest_applied() {
    let (_server, store, people) = setup().await;
    register(&people, "a", "Fine", "a@example.org").await;
    register(&people, "b", "poison", "b@example.org").await;
    register(&people, "c", "Fine", "c@example.org").await;
    let mut runner = ProjectionRunner::new(
        store.clone(),
        Picky,
        RunnerConfig {
            max_deliver: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    catch_up(&mut runner, &store).await;
    let view = view_rows(&store, "view_picky").await;
    assert_eq!(
        view["PersonRegistered"]["value"], 2,
        "a and c counted once each, b parked"
    );
    let mut dlq = store.jetstream().get_stream("DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1);
    let parked = dlq.get_raw_message(1).await.unwrap();
    assert_eq!(parked.subject.as_str(), "dlq.proj_picky");
    let h = parked.headers;
    assert_eq!(h.get("Jetsource-Dlq-Seq").unwrap().as_str(), "2");
    assert_eq!(
        h.get("Jetsource-Dlq-Error").unwrap().as_str(),
        "cannot apply poison"
    );
    assert_eq!(
        h.get("Jetsource-Event-Type").unwrap().as_str(),
        "PersonRegistered"
    );

    // With the stop policy the runner parks it and stops.
    let mut stopping = ProjectionRunner::new(
        store.clone(),
        Picky2,
        RunnerConfig {
            max_deliver: 1,
            poison: PoisonPolicy::Stop,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut outcome = Ok(0);
    for _ in 0..10 {
        outcome = stopping.step().await;
        if outcome.is_err() {
            break;
        }
    }
    assert!(
        matches!(
            outcome.as_ref().map_err(|e| e.kind()),
            Err(RunnerErrorKind::Stopped { seq: 2, .. })
        ),
        "{outcome:?}"
    );
}

/// The same as [`Picky`] under another name, so it has its own consumer.
struct Picky2;

impl Projection for Picky2 {
    fn name(&self) -> &str {
        "picky2"
    }
    fn aggregates(&self) -> &[&'static str] {
        &["person"]
    }
    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError> {
        Picky.apply(view, event)
    }
}

/// `picky` after the fix: accepts everything.
struct Tolerant;

impl Projection for Tolerant {
    fn name(&self) -> &str {
        "picky"
    }
    fn aggregates(&self) -> &[&'static str] {
        &["person"]
    }
    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError> {
        let n = view
            .get(&event.event_type)?
            .and_then(Value::as_u64)
            .unwrap_or(0);
        view.put(&event.event_type, serde_json::json!(n + 1));
        view.put(
            &format!("person.{}", event.aggregate_id),
            event.body().unwrap(),
        );
        Ok(())
    }
}

#[tokio::test]
async fn a_parked_event_retried_after_a_fix_is_applied_once() {
    use jetsource::projection::dlq;
    let (_server, store, people) = setup().await;
    register(&people, "a", "Fine", "a@example.org").await;
    register(&people, "b", "poison", "b@example.org").await;
    register(&people, "c", "Fine", "c@example.org").await;
    let mut runner = ProjectionRunner::new(
        store.clone(),
        Picky,
        RunnerConfig {
            max_deliver: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    catch_up(&mut runner, &store).await;
    drop(runner);
    let parked = dlq::list(&store).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (
            parked[0].consumer.as_str(),
            parked[0].seq,
            parked[0].event_type.as_str()
        ),
        ("proj_picky", 2, "PersonRegistered")
    );
    // Retried while a projection that still cannot apply it runs: parked again,
    // with nothing rewound and the runner going on.
    let mut running = ProjectionRunner::new(
        store.clone(),
        Picky,
        RunnerConfig {
            max_deliver: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    dlq::retry(&store, parked[0].dlq_seq).await.unwrap();
    assert!(dlq::list(&store).await.unwrap().is_empty());
    running.step().await.unwrap();
    assert_eq!(running.checkpoint(), 3, "nothing rewound");
    let parked = dlq::list(&store).await.unwrap();
    assert_eq!(parked.len(), 1, "parked again");
    assert_eq!(parked[0].seq, 2);
    drop(running);

    // Retried once the projection is fixed: applied where the view stands.
    let mut fixed = ProjectionRunner::new(store.clone(), Tolerant, RunnerConfig::default())
        .await
        .unwrap();
    dlq::retry(&store, parked[0].dlq_seq).await.unwrap();
    fixed.step().await.unwrap();
    assert_eq!(fixed.checkpoint(), 3, "nothing rewound");
    let view = view_rows(&store, "view_picky").await;
    assert_eq!(
        view["person.b"]["value"]["name"], "poison",
        "the retried event is applied"
    );
    assert_eq!(view["person.b"]["seq"], 2);
    // A row a later event already wrote keeps its value: a retry applies a parked
    // event only where nothing after it wrote (so this counter stays at 2).
    assert_eq!(view["PersonRegistered"]["value"], 2, "{view:?}");
    let mut dlq_stream = store.jetstream().get_stream("DLQ").await.unwrap();
    assert_eq!(
        dlq_stream.info().await.unwrap().state.messages,
        0,
        "the retry request is gone once applied"
    );
    assert!(!dlq::discard(&store, 999).await.unwrap());
}

#[tokio::test]
async fn status_reports_checkpoint_lag_and_parked_events_per_consumer() {
    use jetsource::projection::status;
    let (_server, store, people) = setup().await;
    register(&people, "a", "Fine", "a@example.org").await;
    register(&people, "b", "poison", "b@example.org").await;
    let mut runner = ProjectionRunner::new(
        store.clone(),
        Picky,
        RunnerConfig {
            max_deliver: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    catch_up(&mut runner, &store).await;
    register(&people, "c", "Fine", "c@example.org").await;
    register(&people, "d", "Fine", "d@example.org").await;
    let all = status::consumers(&store).await.unwrap();
    let picky = all
        .iter()
        .find(|c| c.consumer == "proj_picky")
        .expect("proj_picky listed");
    assert_eq!((picky.checkpoint, picky.stream_last_seq), (2, 4));
    assert_eq!(picky.lag_events, 2);
    assert_eq!(picky.parked, 1);
    catch_up(&mut runner, &store).await;
    let picky = status::consumers(&store)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.consumer == "proj_picky")
        .unwrap();
    assert_eq!(
        (picky.checkpoint, picky.lag_events, picky.lag_seconds),
        (4, 0, 0.0)
    );
}

#[tokio::test]
async fn a_running_projection_rides_out_a_server_restart() {
    let (mut server, store, people) = setup().await;
    register(&people, "a", "Before", "a@example.org").await;
    let runner = ProjectionRunner::new(
        store.clone(),
        PersonDirectory,
        RunnerConfig {
            idle_wait: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    server.restart();
    // Writers retry through the outage; the projection must pick the new event up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let cmd = PersonCommand::Register {
            name: "After".into(),
            email: "b@example.org".into(),
        };
        let meta = Metadata::default().with_command_id("after-restart");
        if people.execute("b", &cmd, &meta).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write got through after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let kv = store
            .jetstream()
            .get_key_value("view_person_directory")
            .await;
        let row = match kv {
            Ok(kv) => kv.get(person_key("b")).await.ok().flatten(),
            Err(_) => None,
        };
        if let Some(row) = row {
            let row: Value = serde_json::from_slice(&row).unwrap();
            assert_eq!(row["value"]["name"], "After");
            break;
        }
        assert!(!task.is_finished(), "the runner gave up: {:?}", task.await);
        assert!(Instant::now() < deadline, "the projection did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        view_rows(&store, "view_person_directory").await[&person_key("a")]["value"]["name"],
        "Before"
    );
}

/// Writes a row keyed by the person's name (no valid KV key for "a:b"), or a row
/// too large for any bucket when the name is "huge".
struct KeyedByName;

impl Projection for KeyedByName {
    fn name(&self) -> &str {
        "keyed_by_name"
    }
    fn aggregates(&self) -> &[&'static str] {
        &["person"]
    }
    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError> {
        let name = event.body().unwrap()["name"].as_str().unwrap().to_string();
        let row = match name.as_str() {
            "huge" => serde_json::json!("x".repeat(2 * 1024 * 1024)),
            _ => serde_json::json!(event.aggregate_id),
        };
        view.put(&format!("name.{name}"), row);
        Ok(())
    }
}

/// Finding: one accepted command whose effect the bucket refuses (a key `person.a:b`)
/// halted the projection for good. Such an event is now retried, parked with the
/// reason, and the projection goes on.
#[tokio::test]
async fn one_accepted_command_halts_a_projection_forever() {
    let (_server, store, people) = setup().await;
    register(&people, "p1", "fine", "a@example.org").await;
    register(&people, "p2", "a:b", "b@example.org").await;
    register(&people, "p3", "huge", "c@example.org").await;
    register(&people, "p4", "also-fine", "d@example.org").await;
    let mut runner = ProjectionRunner::new(
        store.clone(),
        KeyedByName,
        RunnerConfig {
            max_deliver: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    catch_up(&mut runner, &store).await;
    let view = view_rows(&store, "view_keyed_by_name").await;
    assert_eq!(view["name.fine"]["value"], "p1");
    assert_eq!(view["name.also-fine"]["value"], "p4");
    assert_eq!(view.len(), 2, "{view:?}");
    let mut dlq = store.jetstream().get_stream("DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 2);
    let reasons: Vec<String> = [1, 2]
        .into_iter()
        .map(|seq| {
            let dlq = dlq.clone();
            async move {
                let parked = dlq.get_raw_message(seq).await.unwrap();
                parked
                    .headers
                    .get("Jetsource-Dlq-Error")
                    .unwrap()
                    .to_string()
            }
        })
        .collect::<futures::stream::FuturesOrdered<_>>()
        .collect()
        .await;
    assert!(reasons[0].contains("no valid KV key"), "{reasons:?}");
    assert!(reasons[1].contains("bytes, more than"), "{reasons:?}");
}

/// Finding: two instances of one projection active at once (a paused holder
/// waking after a standby took over) both wrote, leaving stale rows. Each commit
/// is now fenced on the checkpoint: a runner whose view of it is stale has its
/// whole batch refused, goes on from the checkpoint as it stands, and the view
/// ends equal to a fresh rebuild.
#[tokio::test]
async fn two_projection_instances_become_active_at_once() {
    let (_server, store, people) = setup().await;
    let config = RunnerConfig {
        batch: 20,
        ..Default::default()
    };
    let mut a = ProjectionRunner::new(store.clone(), PersonDirectory, config.clone())
        .await
        .unwrap();
    let mut b = ProjectionRunner::new(store.clone(), PersonDirectory, config)
        .await
        .unwrap();
    let mut refused = 0;
    for round in 0..20 {
        for i in 0..10 {
            let id = format!("p{round}-{i}");
            register(&people, &id, "N", &format!("{id}@a.org")).await;
            people
                .execute(
                    &id,
                    &PersonCommand::ChangeEmail {
                        email: format!("{id}@b.org"),
                    },
                    &Metadata::default(),
                )
                .await
                .unwrap();
        }
        // Both step: whichever committed second was working from a stale checkpoint.
        // (They share one durable consumer, which each recreates on resuming, so
        // a fetch may also find it gone: that is a transient error too.)
        for runner in [&mut a, &mut b] {
            match runner.step().await {
                Ok(_) => {}
                // Fenced off at commit, or caught taking turns on the consumer.
                Err(e) if *e.kind() == RunnerErrorKind::Superseded => {
                    refused += 1;
                    let e = e.to_string();
                    assert!(
                        e.contains("refused whole") || e.contains("pulled from it"),
                        "{e}"
                    );
                    runner.resume().await.unwrap();
                }
                Err(e) if *e.kind() == RunnerErrorKind::JetStream => runner.resume().await.unwrap(),
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(refused > 0, "the second instance was stopped at least once");
    drop(b);
    a.resume().await.unwrap();
    catch_up(&mut a, &store).await;
    let survived = view_rows(&store, "view_person_directory").await;
    store
        .jetstream()
        .delete_key_value("view_person_directory")
        .await
        .unwrap();
    let mut fresh = ProjectionRunner::new(store.clone(), PersonDirectory, RunnerConfig::default())
        .await
        .unwrap();
    catch_up(&mut fresh, &store).await;
    assert_eq!(survived, view_rows(&store, "view_person_directory").await);
}
