//! The hiring saga with real processes: a `jetsource node`, a `jetsource saga hiring`,
//! and a real nats-server. One test per path of the flow, one for deadlines across
//! restarts, and one that kill -9s the saga process over and over.

mod support;

use chrono::Utc;
use hiring::{Organization, OrganizationCommand, Person, PersonCommand};
use jetsource::client::{Client, CommandOptions};
use jetsource::saga::instances;
use jetsource::testing::TestServer;
use jetsource::EventStore;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{wait_for_nodes, Process};

struct World {
    server: TestServer,
    store: EventStore,
    client: Client,
    _node: Process,
    saga: Option<Process>,
    saga_args: &'static [&'static str],
}

impl World {
    async fn start() -> World {
        World::start_with(&["saga", "hiring"]).await
    }

    /// With the saga started as `jetsource <saga_args…>`.
    async fn start_with(saga_args: &'static [&'static str]) -> World {
        let server = TestServer::start();
        let store = support::open_store(&server).await;
        let node = support::start(&server.url(), &["node"]);
        wait_for_nodes(store.client(), 1).await;
        let client = Client::new(store.client().clone(), jetsource::Subjects::default())
            .with_timeout(Duration::from_secs(10));
        let mut world = World {
            server,
            store,
            client,
            _node: node,
            saga: None,
            saga_args,
        };
        world.start_saga();
        world
    }

    fn start_saga(&mut self) {
        self.saga = Some(support::start(&self.server.url(), self.saga_args));
    }

    fn kill_saga(&mut self) {
        if let Some(mut saga) = self.saga.take() {
            saga.kill();
        }
    }

    async fn org(&self, id: &str, positions: &[&str]) {
        let register = OrganizationCommand::Register {
            name: format!("Org {id}"),
        };
        self.org_command(id, register).await;
        for p in positions {
            let open = OrganizationCommand::OpenPosition {
                position_id: p.to_string(),
                title: format!("Role {p}"),
            };
            self.org_command(id, open).await;
        }
    }

    async fn org_command(&self, id: &str, command: OrganizationCommand) {
        self.client
            .execute::<Organization>(id, &command, &CommandOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{command:?} on {id}: {e}"));
    }

    async fn person(&self, id: &str) {
        let register = PersonCommand::Register {
            name: format!("Person {id}"),
            email: format!("{id}@example.org"),
        };
        self.person_command(id, register).await;
    }

    async fn person_command(&self, id: &str, command: PersonCommand) {
        self.client
            .execute::<Person>(id, &command, &CommandOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{command:?} on {id}: {e}"));
    }

    async fn extend(&self, org: &str, position: &str, person: &str, offer: &str, valid: Duration) {
        let extend = OrganizationCommand::ExtendOffer {
            position_id: position.into(),
            person_id: person.into(),
            offer_id: offer.into(),
            expires_at: Utc::now() + chrono::Duration::from_std(valid).unwrap(),
            at: Utc::now(),
        };
        self.org_command(org, extend).await;
    }

    async fn events(&self, aggregate: &str, id: &str) -> Vec<jetsource::RecordedEvent> {
        self.store.read_aggregate(aggregate, id, 0).await.unwrap()
    }

    /// How many events of `event_type` on that aggregate mention `offer` (any, if empty).
    async fn count(&self, aggregate: &str, id: &str, event_type: &str, offer: &str) -> usize {
        self.events(aggregate, id)
            .await
            .iter()
            .filter(|e| e.event_type == event_type)
            .filter(|e| {
                let body: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
                offer.is_empty() || body["offer_id"] == offer
            })
            .count()
    }

    /// Waits until the person holds the offer (the saga recorded it).
    async fn received(&self, person: &str, offer: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count("person", person, "OfferReceived", offer).await == 0 {
            assert!(
                Instant::now() < deadline,
                "offer {offer} never reached {person}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the instance's outcome.
    async fn outcome(&self, offer: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let instance = instances::show(&self.store, "hiring", offer).await.unwrap();
            if let Some(outcome) = instance.as_ref().and_then(|i| i.outcome.clone()) {
                return outcome;
            }
            assert!(
                Instant::now() < deadline,
                "hiring {offer} did not finish: {instance:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Acme with position `eng`, `person`, and offer `offer` (valid an hour) on
    /// the person's record.
    async fn recorded_offer(&self, person: &str, offer: &str) {
        self.org("acme", &["eng"]).await;
        self.person(person).await;
        self.extend("acme", "eng", person, offer, HOUR).await;
        self.received(person, offer).await;
    }

    async fn accept(&self, person: &str, offer: &str) {
        let accept = PersonCommand::AcceptOffer {
            offer_id: offer.into(),
            at: Utc::now(),
        };
        self.person_command(person, accept).await;
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_accepted_offer_ends_in_a_started_employment() {
    let w = World::start().await;
    w.recorded_offer("ada", "offer-1").await;
    w.accept("ada", "offer-1").await;
    assert_eq!(w.outcome("offer-1", PATIENCE).await, "hired");

    for (aggregate, id, event_type) in [
        ("person", "ada", "OfferReceived"),
        ("person", "ada", "OfferAccepted"),
        ("person", "ada", "EmploymentStarted"),
        ("organization", "acme", "PositionFilled"),
        ("organization", "acme", "MemberJoined"),
    ] {
        let offer = if event_type == "MemberJoined" {
            ""
        } else {
            "offer-1"
        };
        assert_eq!(
            w.count(aggregate, id, event_type, offer).await,
            1,
            "{event_type} on {aggregate} {id}"
        );
    }
    let instance = instances::show(&w.store, "hiring", "offer-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(instance.state["stage"], "employed");
    assert!(
        instance.deadlines.is_empty(),
        "the expiry is cancelled once hired"
    );
    let steps: Vec<_> = instance
        .log
        .iter()
        .flat_map(|entry| entry.sent.iter().map(|s| s.step.as_str()))
        .collect();
    assert_eq!(steps, ["record-offer", "hire", "start-employment"]);
    // Every command the saga sent carries the offer's correlation id.
    let started = w.events("person", "ada").await;
    let started = started
        .iter()
        .find(|e| e.event_type == "EmploymentStarted")
        .unwrap();
    assert_eq!(started.metadata.correlation_id, instance.correlation_id);
    assert_eq!(started.metadata.actor.as_deref(), Some("saga:hiring"));
}

#[tokio::test]
async fn a_declined_offer_is_withdrawn_by_the_organization() {
    let w = World::start().await;
    w.recorded_offer("bob", "offer-2").await;
    w.person_command(
        "bob",
        PersonCommand::DeclineOffer {
            offer_id: "offer-2".into(),
        },
    )
    .await;
    assert_eq!(w.outcome("offer-2", PATIENCE).await, "declined");
    assert_eq!(
        w.count("organization", "acme", "OfferWithdrawn", "offer-2")
            .await,
        1
    );
    assert_eq!(
        w.count("organization", "acme", "PositionFilled", "offer-2")
            .await,
        0
    );
}

/// Events the saga cannot read are parked in `DLQ` under `saga_hiring` and the saga
/// goes on; events of types it does not react to are not its business (not parked).
#[tokio::test]
async fn unreadable_events_are_parked_and_the_saga_goes_on() {
    use jetsource::store::{Append, Codec, ExpectedVersion};
    use jetsource::{Metadata, NewEvent};
    let w = World::start().await;
    // No envelope headers at all (someone published to events.> by hand).
    w.store
        .jetstream()
        .publish("events.person.zed", "not an event".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // A type the saga reacts to, with a body that is not that event.
    let garbled = NewEvent::encode(
        "OfferAccepted",
        1,
        &serde_json::json!({"nonsense": true}),
        Codec::Json,
        Metadata::default(),
    )
    .unwrap();
    // A type this code does not know at all (a newer node might write it).
    let unknown = NewEvent::encode(
        "FavouriteColourChosen",
        1,
        &serde_json::json!({"colour": "teal"}),
        Codec::Json,
        Metadata::default(),
    )
    .unwrap();
    w.store
        .append(Append::new(
            "person",
            "yan",
            ExpectedVersion::Any,
            vec![garbled, unknown],
        ))
        .await
        .unwrap();

    w.recorded_offer("ada", "offer-1").await;
    w.accept("ada", "offer-1").await;
    assert_eq!(w.outcome("offer-1", PATIENCE).await, "hired");

    let parked = jetsource::projection::dlq::list(&w.store).await.unwrap();
    let parked: Vec<_> = parked
        .iter()
        .map(|p| (p.consumer.as_str(), p.subject.as_str(), p.error.as_str()))
        .collect();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert!(
        parked.iter().all(|(c, _, _)| *c == "saga_hiring"),
        "{parked:?}"
    );
    assert_eq!(parked[0].1, "events.person.zed");
    assert!(parked[0].2.contains("header"), "{parked:?}");
    assert_eq!(parked[1].1, "events.person.yan");
    assert!(parked[1].2.contains("OfferAccepted"), "{parked:?}");
    // `jetsource status` shows the saga's consumer with them.
    let status = jetsource::projection::status::consumers(&w.store)
        .await
        .unwrap();
    let saga = status.iter().find(|c| c.consumer == "saga_hiring");
    assert_eq!(saga.map(|c| c.parked), Some(2), "{status:?}");
}

/// Two people accept offers for the same position while the saga is down; when it
/// comes back the first is hired and the second's offer is rescinded.
#[tokio::test]
async fn accepting_a_position_filled_meanwhile_rescinds_the_offer() {
    let mut w = World::start().await;
    w.org("acme", &["eng"]).await;
    w.person("cyd").await;
    w.person("dee").await;
    w.extend("acme", "eng", "cyd", "offer-c", HOUR).await;
    w.extend("acme", "eng", "dee", "offer-d", HOUR).await;
    w.received("cyd", "offer-c").await;
    w.received("dee", "offer-d").await;
    w.kill_saga();
    w.accept("cyd", "offer-c").await;
    w.accept("dee", "offer-d").await;
    w.start_saga();
    // Both acceptances are in the stream before the saga sees either; the saga
    // handles instances concurrently, so either may win the position.
    let c = w.outcome("offer-c", PATIENCE).await;
    let d = w.outcome("offer-d", PATIENCE).await;
    let (lost_person, lost_offer) = match (c.as_str(), d.as_str()) {
        ("hired", "rescinded") => ("dee", "offer-d"),
        ("rescinded", "hired") => ("cyd", "offer-c"),
        other => panic!("one hire and one rescinded offer, not {other:?}"),
    };
    assert_eq!(
        w.count("person", lost_person, "OfferRescinded", lost_offer)
            .await,
        1
    );
    assert_eq!(
        w.count("person", lost_person, "EmploymentStarted", lost_offer)
            .await,
        0
    );
    assert_eq!(
        w.count("organization", "acme", "PositionFilled", "").await,
        1
    );
    let instance = instances::show(&w.store, "hiring", lost_offer)
        .await
        .unwrap()
        .unwrap();
    let hire = instance
        .log
        .iter()
        .flat_map(|e| e.sent.iter())
        .find(|s| s.step == "hire")
        .expect("the saga tried to hire");
    assert!(hire.reply.starts_with("refused 409"), "{}", hire.reply);
}

#[tokio::test]
async fn closing_the_position_rescinds_an_outstanding_offer() {
    let w = World::start().await;
    w.recorded_offer("eve", "offer-e").await;
    w.org_command(
        "acme",
        OrganizationCommand::ClosePosition {
            position_id: "eng".into(),
        },
    )
    .await;
    assert_eq!(w.outcome("offer-e", PATIENCE).await, "rescinded");
    assert_eq!(
        w.count("person", "eve", "OfferRescinded", "offer-e").await,
        1
    );
}

#[tokio::test]
async fn an_offer_for_an_unknown_person_is_withdrawn() {
    let w = World::start().await;
    w.org("acme", &["eng"]).await;
    w.extend("acme", "eng", "nobody", "offer-n", HOUR).await;
    assert_eq!(w.outcome("offer-n", PATIENCE).await, "not recorded");
    assert_eq!(
        w.count("organization", "acme", "OfferWithdrawn", "offer-n")
            .await,
        1
    );
}

/// The deadline passes while the saga process is dead and the server restarts: the
/// offer still expires on both sides.
#[tokio::test]
async fn an_offer_whose_deadline_passes_expires_on_both_sides_across_restarts() {
    let mut w = World::start().await;
    w.org("acme", &["eng"]).await;
    w.person("fay").await;
    w.extend("acme", "eng", "fay", "offer-f", Duration::from_secs(4))
        .await;
    w.received("fay", "offer-f").await;
    w.kill_saga();
    w.server.stop();
    tokio::time::sleep(Duration::from_secs(6)).await;
    w.server.restart();
    w.start_saga();
    assert_eq!(w.outcome("offer-f", PATIENCE).await, "expired");
    assert_eq!(
        w.count("organization", "acme", "OfferLapsed", "offer-f")
            .await,
        1
    );
    assert_eq!(w.count("person", "fay", "OfferExpired", "offer-f").await, 1);
    // Accepting now is refused: the offer is gone.
    let late = PersonCommand::AcceptOffer {
        offer_id: "offer-f".into(),
        at: Utc::now(),
    };
    let refused = w
        .client
        .execute::<Person>("fay", &late, &CommandOptions::default())
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

/// Regression: `jetsource project` and `jetsource saga` exited when the server was
/// away for longer than their lease's TTL (the lease was "lost"), which also ended
/// `jetsource up`. They now stand by, take the lease again and go on.
#[tokio::test]
async fn saga_and_projection_processes_ride_out_a_server_outage_longer_than_their_lease() {
    const SHORT_LEASE: &[&str] = &["saga", "hiring", "--lease-ttl", "2"];
    let mut w = World::start_with(SHORT_LEASE).await;
    let project = ["project", "person_directory", "--lease-ttl", "2"];
    let mut directory = support::start(&w.server.url(), &project);
    w.recorded_offer("ada", "offer-1").await;
    w.server.stop();
    // Longer than the lease (2 s) and than a JetStream request's timeout (5 s).
    tokio::time::sleep(Duration::from_secs(7)).await;
    w.server.restart();
    wait_for_nodes(w.store.client(), 1).await;
    let saga = w.saga.as_mut().expect("the saga runs");
    assert_eq!(saga.0.try_wait().unwrap(), None, "the saga process exited");
    assert_eq!(
        directory.0.try_wait().unwrap(),
        None,
        "the projection process exited"
    );

    w.accept("ada", "offer-1").await;
    assert_eq!(w.outcome("offer-1", PATIENCE).await, "hired");
    let zoe = PersonCommand::Register {
        name: "Zoe".into(),
        email: "zoe@example.org".into(),
    };
    let ack = w
        .client
        .execute::<Person>("zoe", &zoe, &CommandOptions::default())
        .await
        .unwrap();
    let found = w
        .client
        .query_after(
            "person",
            "by_email",
            &serde_json::json!({"email": "zoe@example.org"}),
            ack.seq,
        )
        .await
        .unwrap();
    assert_eq!(found["id"], "zoe", "{found}");
}

/// kill -9 the saga process at random moments while a dozen flows run: each flow
/// ends exactly once, with no duplicate event and no instance left running.
#[tokio::test]
async fn killing_the_saga_process_at_random_steps_completes_every_flow_exactly_once() {
    let mut w = World::start().await;
    let orgs = ["o1", "o2", "o3"];
    for org in orgs {
        w.org(org, &["p1", "p2", "p3", "p4"]).await;
    }
    // offer -> (org, position, person, what the person does)
    let mut plan = Vec::new();
    for (i, org) in orgs.iter().enumerate() {
        for (j, position) in ["p1", "p2", "p3", "p4"].iter().enumerate() {
            let person = format!("person-{i}-{j}");
            let action = match j {
                0 | 1 => "accept",
                2 => "decline",
                _ => "expire",
            };
            plan.push((format!("offer-{i}-{j}"), *org, *position, person, action));
        }
    }
    for (offer, org, position, person, action) in &plan {
        w.person(person).await;
        let valid = if *action == "expire" {
            Duration::from_secs(6)
        } else {
            HOUR
        };
        w.extend(org, position, person, offer, valid).await;
    }
    let driver = {
        let client = w.client.clone();
        let store = w.store.clone();
        let plan = plan.clone();
        tokio::spawn(async move {
            for (offer, _, _, person, action) in plan {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let events = store.read_aggregate("person", &person, 0).await.unwrap();
                    if events.iter().any(|e| e.event_type == "OfferReceived") {
                        break;
                    }
                    assert!(Instant::now() < deadline, "{offer} never recorded");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let command = match action {
                    "accept" => PersonCommand::AcceptOffer {
                        offer_id: offer.clone(),
                        at: Utc::now(),
                    },
                    "decline" => PersonCommand::DeclineOffer {
                        offer_id: offer.clone(),
                    },
                    _ => continue,
                };
                client
                    .execute::<Person>(&person, &command, &CommandOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("{action} {offer}: {e}"));
            }
        })
    };
    let mut kills = 0;
    while !driver.is_finished() || kills < 12 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..900))).await;
        w.kill_saga();
        kills += 1;
        w.start_saga();
        assert!(kills < 200, "the driver never finished");
    }
    driver.await.unwrap();

    let expected: HashMap<&str, &str> = [
        ("accept", "hired"),
        ("decline", "declined"),
        ("expire", "expired"),
    ]
    .into();
    for (offer, org, _, person, action) in &plan {
        assert_eq!(
            w.outcome(offer, Duration::from_secs(60)).await,
            expected[action],
            "{offer}"
        );
        let once_on_person = match *action {
            "accept" => vec!["OfferReceived", "OfferAccepted", "EmploymentStarted"],
            "decline" => vec!["OfferReceived", "OfferDeclined"],
            _ => vec!["OfferReceived", "OfferExpired"],
        };
        for event_type in once_on_person {
            assert_eq!(
                w.count("person", person, event_type, offer).await,
                1,
                "{event_type} {offer}"
            );
        }
        let once_on_org = match *action {
            "accept" => vec!["OfferExtended", "PositionFilled"],
            "decline" => vec!["OfferExtended", "OfferWithdrawn"],
            _ => vec!["OfferExtended", "OfferLapsed"],
        };
        for event_type in once_on_org {
            assert_eq!(
                w.count("organization", org, event_type, offer).await,
                1,
                "{event_type} {offer}"
            );
        }
    }
    for org in orgs {
        assert_eq!(
            w.count("organization", org, "MemberJoined", "").await,
            2,
            "two hires per organization, each joined once"
        );
    }
    let running = instances::list(&w.store, "hiring")
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.outcome.is_none())
        .count();
    assert_eq!(running, 0, "no instance is stuck");
    eprintln!("saga process killed {kills} times");
}

/// The README's run command: the whole story, every process real, exit 0.
#[test]
fn jetsource_up_demo_tells_the_hiring_story_and_exits_0() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetsource"))
        .args(["up", "--demo"])
        .output()
        .expect("run jetsource up --demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "saga hiring.offer-ada: finished: hired",
        "saga hiring.offer-bob: finished: declined",
        "saga hiring.offer-cyd: finished: expired",
        "the demo ran to the end.",
        "stopped.",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
}
