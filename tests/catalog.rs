//! The code and `subjects/catalog.json` describe the same contract.

mod support;

use jetsource::store::headers;
use jetsource::store::Codec;
use jetsource::{StoreConfig, Subjects};
use serde_json::Value;

fn catalog() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/subjects/catalog.json"
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
        headers::TENANT,
        headers::COMMAND_ID,
        meta.as_str(),
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
