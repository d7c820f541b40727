//! Events written by an earlier version of the reference domain, stored by a real
//! nats-server (`tests/fixtures/v1`, see its README), read by today's code.

mod support;

use hiring::organization::OfferStatus;
use hiring::{Organization, OrganizationEvent, Person};
use jetsource::aggregate::decode_if;
use jetsource::testing::TestServer;
use jetsource::Repository;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The last sequence version 1's demo wrote.
const V1_LAST_SEQ: u64 = 35;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A server whose `EVENTS` stream is a copy of the one version 1 stored.
fn server_with_v1_events() -> TestServer {
    let mut server = TestServer::start();
    server.stop();
    let events = server.store_dir().join("jetstream/$G/streams/EVENTS");
    copy_dir(&fixture("v1/EVENTS"), &events);
    server.restart();
    server
}

#[tokio::test]
async fn every_aggregate_version_1_wrote_loads_with_todays_code() {
    let server = server_with_v1_events();
    let store = support::open_store(&server).await;
    let organizations = Repository::<Organization>::new(store.clone(), Default::default());
    let acme = organizations.load("acme").await.unwrap();
    assert_eq!(acme.position.seq, 34, "acme's last event");
    let status = |offer: &str| acme.state.offers[offer].status;
    // Cyd's offer lapsed in an event stored as `OfferExpired`, read as `OfferLapsed`.
    assert_eq!(status("offer-cyd"), OfferStatus::Expired);
    assert_eq!(status("offer-bob"), OfferStatus::Withdrawn);
    assert_eq!(status("offer-eve"), OfferStatus::Withdrawn);
    assert_eq!(status("offer-ada"), OfferStatus::Hired);
    assert_eq!(acme.state.members.len(), 2);
    let people = Repository::<Person>::new(store.clone(), Default::default());
    for id in ["ada", "bob", "cyd", "dee", "eve"] {
        let person = people.load(id).await.unwrap();
        assert!(person.state.registered, "{id}");
    }

    // A reader filtering on today's names (the saga's way) sees the old event.
    let lapsed = store.read_seq(34).await.unwrap().expect("seq 34");
    assert_eq!(lapsed.event_type, "OfferExpired", "as stored");
    let seen = decode_if::<OrganizationEvent>(&lapsed, &["OfferLapsed"]).unwrap();
    assert!(
        matches!(seen, Some(OrganizationEvent::OfferLapsed { ref offer_id, .. }) if offer_id == "offer-cyd"),
        "{seen:?}"
    );
    let by_old_name = decode_if::<OrganizationEvent>(&lapsed, &["OfferExpired"]).unwrap();
    assert!(by_old_name.is_none(), "only today's names are watched");
}

#[tokio::test]
async fn views_rebuilt_from_version_1_events_answer_what_version_1_answered() {
    let server = server_with_v1_events();
    let url = server.url();
    let _node = support::start(&url, &["node"]);
    let _projections: Vec<_> = ["person_directory", "organizations", "offers"]
        .iter()
        .map(|name| support::start(&url, &["project", name]))
        .collect();
    let client = jetsource::connect(&url).await.unwrap();
    support::wait_for_nodes(&client, 1).await;
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture("v1/views.json")).unwrap()).unwrap();
    let min_seq = V1_LAST_SEQ.to_string();
    let ask = |subject: &'static str, body: Value| {
        let client = client.clone();
        let min_seq = min_seq.clone();
        async move {
            support::send_with(&client, subject, body, &[("Jetsource-Min-Seq", &min_seq)]).await
        }
    };
    assert_eq!(
        ask("qry.organization.get", json!({"id": "acme"})).await,
        expected["qry.organization.get acme"]
    );
    for person in ["ada", "bob", "cyd", "dee", "eve"] {
        assert_eq!(
            ask("qry.offers.by_person", json!({"id": person})).await,
            expected[format!("qry.offers.by_person {person}").as_str()],
            "{person}"
        );
    }
    // The list's order is the rows' write order, which a rebuild may change.
    let by_id = |list: &Value| {
        let mut people = list["people"].as_array().unwrap().clone();
        people.sort_by_key(|p| p["id"].as_str().unwrap().to_string());
        people
    };
    let list = ask("qry.person.list", json!({})).await;
    assert_eq!(by_id(&list), by_id(&expected["qry.person.list"]));
}

#[test]
fn events_raw_shows_the_stored_form_beside_todays() {
    let server = server_with_v1_events();
    let out = support::run_ok(
        &server.url(),
        &["events", "organization", "acme", "--raw", "--json"],
    );
    let events: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(events.len(), 17, "acme's 17 events");
    for e in &events {
        let renamed = e["seq"] == 34;
        assert_eq!(e["stored"]["type"] != e["type"], renamed, "{e}");
        assert_eq!(
            e["stored"]["data"], e["data"],
            "a rename keeps the body: {e}"
        );
    }
    let lapsed = &events[16];
    assert_eq!(lapsed["type"], "OfferLapsed", "{lapsed}");
    assert_eq!(lapsed["stored"]["type"], "OfferExpired", "{lapsed}");
    assert_eq!(lapsed["stored"]["schema"], 1, "{lapsed}");

    // Without --raw: today's form only.
    let out = support::run_ok(&server.url(), &["events", "organization", "acme", "--json"]);
    let events: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(events[16]["type"], "OfferLapsed");
    assert!(events[16].get("stored").is_none());
}
