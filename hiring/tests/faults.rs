//! The fault test: clients send commands with ids while the server, the node, a
//! projection and the saga are killed with SIGKILL and the server is paused with
//! SIGSTOP; then every guarantee is checked: no acked command lost, none executed
//! twice, versions contiguous, the view equal to a fresh rebuild, each hiring
//! saga instance finished exactly once.

mod support;

use chrono::Utc;
use futures::StreamExt;
use jetsource::saga::instances;
use jetsource::testing::TestServer;
use rustix::process::{kill_process, Pid, Signal};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{wait_for_nodes, Process};

const CLIENTS: usize = 4;
/// Each client registers people until the faults are over (at least this many).
const PEOPLE_PER_CLIENT: usize = 30;
const FLOWS: usize = 4;

/// Retries sent (a send after a timeout, no responders or a 503).
static RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sends one command until it has an answer a retry cannot change (the same id
/// every time); returns the reply body.
async fn send(nats: &async_nats::Client, subject: &str, id: &str, body: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    for attempt in 0.. {
        if attempt > 0 {
            RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Jetsource-Command-Id", id);
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(serde_json::to_vec(body).unwrap().into())
            .timeout(Some(Duration::from_secs(2)));
        if let Ok(reply) = nats.send_request(subject.to_string(), request).await {
            let v: Value = serde_json::from_slice(&reply.payload).unwrap();
            if v["status"] == "accepted" || v["error"]["code"] != "store_unavailable" {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "{subject} {id} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// `jetsource <args>` as a child that the faults may kill and bring back.
struct Role {
    url: String,
    args: &'static [&'static str],
    process: Process,
}

impl Role {
    fn start(url: &str, args: &'static [&'static str]) -> Role {
        Role {
            url: url.to_string(),
            args,
            process: support::start(url, args),
        }
    }

    fn kill_and_restart(&mut self) {
        self.process.kill();
        self.process = support::start(&self.url, self.args);
    }
}

#[tokio::test]
async fn faults_lose_nothing_run_nothing_twice_and_views_equal_a_rebuild() {
    let mut server = TestServer::start(); // safe: fsync always
    let url = server.url();
    let nats = jetsource::connect(&url).await.unwrap();
    let store = support::open_store(&server).await;
    let mut node = Role::start(&url, &["node"]);
    wait_for_nodes(&nats, 1).await;
    let mut projection = Role::start(&url, &["project", "person_directory"]);
    let mut saga = Role::start(&url, &["saga", "hiring"]);

    // The hiring side: one organization, a position per flow, a person per flow.
    let org = json!({"id": "acme", "name": "Acme"});
    send(&nats, "cmd.organization.Register", "org", &org).await;
    for f in 0..FLOWS {
        let open = json!({"id": "acme", "position_id": format!("pos{f}"), "title": "Eng"});
        send(
            &nats,
            "cmd.organization.OpenPosition",
            &format!("open{f}"),
            &open,
        )
        .await;
        let person = json!({"id": format!("h{f}"), "name": "H", "email": format!("h{f}@x.org")});
        send(&nats, "cmd.person.Register", &format!("hreg{f}"), &person).await;
    }

    let started = Instant::now();
    let faults_over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let faults = async {
        let at =
            |secs: f64| tokio::time::sleep_until((started + Duration::from_secs_f64(secs)).into());
        at(0.8).await;
        node.kill_and_restart();
        at(2.0).await;
        projection.kill_and_restart();
        at(3.2).await;
        saga.kill_and_restart();
        at(4.4).await;
        let pid = Pid::from_raw(server.pid().unwrap() as i32).unwrap();
        kill_process(pid, Signal::STOP).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        kill_process(pid, Signal::CONT).unwrap();
        at(7.5).await;
        server.restart(); // SIGKILL, then the same port and store
        at(9.0).await;
        node.kill_and_restart();
        projection.kill_and_restart();
        faults_over.store(true, std::sync::atomic::Ordering::SeqCst);
        (node, projection, saga, server)
    };
    let clients = futures::future::join_all((0..CLIENTS).map(|c| {
        let nats = nats.clone();
        let faults_over = faults_over.clone();
        async move {
            let mut acks = Vec::new();
            let mut k = 0;
            while k < PEOPLE_PER_CLIENT || !faults_over.load(std::sync::atomic::Ordering::SeqCst) {
                let id = format!("c{c}p{k}");
                let commands = [
                    (
                        "Register",
                        json!({"id": id, "name": "P", "email": format!("{id}@a.org")}),
                    ),
                    (
                        "ChangeEmail",
                        json!({"id": id, "email": format!("{id}@b.org")}),
                    ),
                    ("ChangeName", json!({"id": id, "name": format!("P {k}")})),
                ];
                for (command, body) in commands {
                    let command_id = format!("{id}-{command}");
                    let subject = format!("cmd.person.{command}");
                    let ack = send(&nats, &subject, &command_id, &body).await;
                    assert_eq!(ack["status"], "accepted", "{command_id}: {ack}");
                    acks.push((command_id, subject, body, ack));
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (k, acks)
        }
    }));
    let flows = async {
        for f in 0..FLOWS {
            let extend = json!({
                "id": "acme", "position_id": format!("pos{f}"), "person_id": format!("h{f}"),
                "offer_id": format!("offer{f}"),
                "expires_at": Utc::now() + chrono::Duration::hours(1),
            });
            let ack = send(
                &nats,
                "cmd.organization.ExtendOffer",
                &format!("ext{f}"),
                &extend,
            )
            .await;
            assert_eq!(ack["status"], "accepted", "{ack}");
        }
        for f in 0..FLOWS {
            // The person accepts once the saga has put the offer on their record.
            let accept = json!({"id": format!("h{f}"), "offer_id": format!("offer{f}")});
            loop {
                let ack = send(&nats, "cmd.person.AcceptOffer", &format!("acc{f}"), &accept).await;
                if ack["status"] == "accepted" {
                    break;
                }
                assert_eq!(ack["error"]["code"], "unknown_offer", "{ack}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let (acks, (_node, mut projection, _saga, _server), ()) = tokio::join!(clients, faults, flows);
    let people: Vec<usize> = acks.iter().map(|(k, _)| *k).collect();
    let sent: Vec<(String, String, Value, Value)> = acks.into_iter().flat_map(|(_, a)| a).collect();

    // After all the faults, every command is sent again with its id: each retry
    // gets its original ack (most would now be refused or do something else).
    let resent = futures::stream::iter(sent.iter().map(|(id, subject, body, ack)| {
        let nats = nats.clone();
        async move {
            let again = send(&nats, subject, id, body).await;
            assert_eq!(&again, ack, "{id}: the retry's ack differs");
        }
    }))
    .buffer_unordered(16)
    .count()
    .await;
    println!("{resent} retries after the faults, each answered with its original ack");
    let acks: Vec<(String, Value)> = sent.into_iter().map(|(id, _, _, ack)| (id, ack)).collect();
    println!(
        "{} commands acked under faults in {:?}, {} retries sent",
        acks.len(),
        started.elapsed(),
        RETRIES.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Nothing acked is lost, nothing ran twice, versions are contiguous.
    let mut by_command: HashMap<String, Vec<jetsource::RecordedEvent>> = HashMap::new();
    for (c, people) in people.iter().enumerate() {
        for k in 0..*people {
            let id = format!("c{c}p{k}");
            let events = store.read_aggregate("person", &id, 0).await.unwrap();
            let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
            assert_eq!(
                versions,
                (1..=events.len() as u64).collect::<Vec<_>>(),
                "{id}"
            );
            for e in events {
                let command = e.metadata.command_id.clone().unwrap();
                by_command.entry(command).or_default().push(e);
            }
        }
    }
    for (command_id, ack) in &acks {
        let stored = by_command
            .get(command_id)
            .unwrap_or_else(|| panic!("acked {command_id} is not stored: {ack}"));
        assert_eq!(stored.len(), 1, "{command_id} ran {} times", stored.len());
        assert_eq!(
            stored[0].seq,
            ack["seq"].as_u64().unwrap(),
            "{command_id}: {ack}"
        );
        assert_eq!(stored[0].version, ack["version"].as_u64().unwrap());
    }
    assert_eq!(
        by_command.len(),
        acks.len(),
        "no event without an acked command"
    );

    // Each hiring flow ended once, hired.
    for f in 0..FLOWS {
        let offer = format!("offer{f}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let outcome = loop {
            let instance = instances::show(&store, "hiring", &offer)
                .await
                .ok()
                .flatten();
            if let Some(outcome) = instance.and_then(|i| i.outcome) {
                break outcome;
            }
            assert!(Instant::now() < deadline, "hiring {offer} never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(outcome, "hired", "{offer}");
        let person = store
            .read_aggregate("person", &format!("h{f}"), 0)
            .await
            .unwrap();
        for kind in ["OfferReceived", "OfferAccepted", "EmploymentStarted"] {
            let n = person.iter().filter(|e| e.event_type == kind).count();
            assert_eq!(n, 1, "{offer}: {kind} {n} times");
        }
    }
    let org = store
        .read_aggregate("organization", "acme", 0)
        .await
        .unwrap();
    for kind in ["PositionFilled", "MemberJoined"] {
        let n = org.iter().filter(|e| e.event_type == kind).count();
        assert_eq!(n, FLOWS, "{kind} {n} times for {FLOWS} hires");
    }

    // The view, once caught up, equals a fresh rebuild.
    let last = store.last_seq().await.unwrap();
    support::wait_applied(
        &store,
        "view_person_directory",
        last,
        Duration::from_secs(30),
    )
    .await;
    projection.process.kill();
    support::assert_directory_equals_a_rebuild(&store, last).await;
}
