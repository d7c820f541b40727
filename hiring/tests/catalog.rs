//! The code and `subjects/catalog.json` describe the same contract.

mod support;

use jetsource::store::headers;
use jetsource::store::Codec;
use jetsource::{StoreConfig, Subjects};
use serde_json::Value;

fn catalog() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../subjects/catalog.json"
    ))
    .expect("subjects/catalog.json");
    serde_json::from_str(&text).expect("catalog is JSON")
}

#[test]
fn the_event_stream_matches_the_catalog() {
    let c = catalog();
    let stream = &c["streams"][0];
    let cfg = StoreConfig::default();
    assert_eq!(stream["name"], cfg.stream.as_str());
    assert_eq!(
        stream["subjects"][0],
        Subjects::new("").all_events().as_str()
    );
    assert_eq!(
        stream["duplicate_window_seconds"],
        cfg.duplicate_window.as_secs()
    );
    assert_eq!(
        c["subjects"][0]["pattern"],
        Subjects::new("").aggregate("<aggregate>", "<id>").as_str()
    );
}

#[test]
fn every_event_header_is_in_the_catalog_and_back() {
    let c = catalog();
    let listed: Vec<&str> = c["event_headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    let meta = format!("{}<key>", headers::META_PREFIX);
    let code = [
        headers::EVENT_TYPE,
        headers::EVENT_ID,
        headers::SCHEMA,
        headers::VERSION,
        headers::OCCURRED_AT,
        headers::CORRELATION_ID,
        headers::CAUSATION_ID,
        headers::ACTOR,
        headers::ON_BEHALF_OF,
        headers::COMMAND_ID,
        meta.as_str(),
        headers::TRACEPARENT,
        headers::TRACESTATE,
        headers::CONTENT_TYPE,
        headers::NATS_MSG_ID,
        headers::NATS_EXPECTED_LAST_SUBJECT_SEQ,
    ];
    assert_eq!(
        listed, code,
        "subjects/catalog.json event_headers and store::headers differ"
    );
    let types: Vec<&str> = c["content_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [Codec::Json.content_type(), Codec::Cbor.content_type()]
    );
}

/// Variant names of a serde enum, read from serde's own "unknown variant" message
/// for a value with an impossible variant (test-only: the node discovers command
/// names on its own, so this twin catches a change in either).
fn variants<E: serde::de::DeserializeOwned>(impossible: Value) -> Vec<String> {
    let err = serde_json::from_value::<E>(impossible)
        .err()
        .expect("no such variant")
        .to_string();
    let list = err.split("expected one of ").nth(1).expect(&err);
    list.split(", ")
        .map(|s| {
            s.trim_matches(|c: char| c == '`' || c.is_whitespace())
                .split('`')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn event_names<E: serde::de::DeserializeOwned>() -> Vec<String> {
    variants::<E>(serde_json::json!({"type": "\u{1}", "data": null}))
}

fn command_names<C: serde::de::DeserializeOwned>() -> Vec<String> {
    variants::<C>(serde_json::json!({"\u{1}": {}}))
}

fn listed(c: &Value, aggregate: &str, what: &str) -> Vec<String> {
    c["aggregates"][aggregate][what]
        .as_array()
        .unwrap_or_else(|| panic!("catalog has no {aggregate}.{what}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn commands_and_events_of_each_aggregate_match_the_catalog() {
    use hiring::*;
    let c = catalog();
    let person_commands = command_names::<PersonCommand>();
    let org_commands = command_names::<OrganizationCommand>();
    assert_eq!(listed(&c, "person", "commands"), person_commands);
    assert_eq!(listed(&c, "organization", "commands"), org_commands);
    assert_eq!(listed(&c, "person", "events"), event_names::<PersonEvent>());
    assert_eq!(
        listed(&c, "organization", "events"),
        event_names::<OrganizationEvent>()
    );
    // DESIGN's public names exist as written.
    for name in ["Register", "ChangeEmail", "AcceptOffer", "DeclineOffer"] {
        assert!(person_commands.iter().any(|c| c == name), "{name}");
    }
    for name in ["Register", "OpenPosition", "ExtendOffer"] {
        assert!(org_commands.iter().any(|c| c == name), "{name}");
    }
    assert_eq!(c["service"]["name"], jetsource::node::SERVICE_NAME);
    assert!(
        !c["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == "commands"),
        "idempotency rides on the stream's duplicate window, not a bucket"
    );
    let headers: Vec<&str> = c["command_headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(headers.contains(&jetsource::node::request::COMMAND_ID));
    assert!(headers.contains(&jetsource::node::request::EXPECTED_VERSION));
}

#[test]
fn the_views_and_their_queries_match_the_catalog() {
    use hiring::directory::PersonDirectory;
    use hiring::views::{OffersView, OrganizationsView};
    use jetsource::projection::Projection;
    let c = catalog();
    let served: [&dyn Projection; 3] = [&PersonDirectory, &OrganizationsView, &OffersView];
    for projection in served {
        let queries = projection.queries();
        let entry = &c["views"][queries.view().expect("the projection declares queries")];
        assert_eq!(entry["projection"], projection.name());
        let listed: Vec<&str> = entry["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q.as_str().unwrap())
            .collect();
        assert_eq!(listed, queries.names().collect::<Vec<_>>());
        let consumer = format!("proj_{}", projection.name());
        assert!(c["consumers"][0]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == consumer.as_str()));
    }
}

#[test]
fn the_saga_names_match_the_catalog() {
    use jetsource::saga::Saga;
    let c = catalog();
    let hiring = hiring::Hiring;
    let consumer = format!("saga_{}", hiring.name());
    let listed = |i: usize| -> Vec<String> {
        c["consumers"][i]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert!(listed(1).contains(&consumer));
    assert!(listed(2).contains(&format!("{consumer}_timers")));
    assert!(c["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["name"] == jetsource::saga::BUCKET));
    assert_eq!(c["streams"][2]["name"], jetsource::saga::timers::STREAM);
    assert_eq!(c["streams"][2]["allow_msg_schedules"], true);
}
