//! Aggregates, events and upcasters without a server.

mod support;

use jetsource::fixture::AggregateFixture;
use jetsource::store::{Codec, Metadata, NewEvent};
use jetsource::{decode_event, encode_event, DomainEvent, RecordedEvent, Upcaster};
use serde::{Deserialize, Serialize};
use support::{Ledger, LedgerCommand, LedgerError, LedgerEvent};

#[test]
fn the_fixture_decides_from_given_events() {
    let state = AggregateFixture::<Ledger>::given([LedgerEvent::Opened { owner: "o".into() }])
        .when(LedgerCommand::Transfer {
            credit: 5,
            debit: 2,
        })
        .then_expect_events([
            LedgerEvent::Credited { amount: 5 },
            LedgerEvent::Debited { amount: 2 },
        ]);
    assert_eq!(state.balance, 3);
    AggregateFixture::<Ledger>::given_no_events()
        .when(LedgerCommand::Credit(1))
        .then_expect_error(LedgerError::NotOpen);
    AggregateFixture::<Ledger>::given([LedgerEvent::Opened { owner: "o".into() }])
        .when(LedgerCommand::Debit(1))
        .then_expect_error_matching(|e| matches!(e, LedgerError::InsufficientFunds));
}

#[test]
#[should_panic(expected = "expected events [Credited { amount: 2 }]")]
fn a_wrong_expectation_says_what_was_expected_and_what_came() {
    AggregateFixture::<Ledger>::given([LedgerEvent::Opened { owner: "o".into() }])
        .when(LedgerCommand::Credit(1))
        .then_expect_events([LedgerEvent::Credited { amount: 2 }]);
}

/// Version 1 of `Renamed` had one `name`; version 2 has `first` and `last`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum PersonEvent {
    Renamed { first: String, last: String },
    Deactivated,
}

fn split_name(body: serde_json::Value) -> Result<serde_json::Value, String> {
    let name = body["name"].as_str().ok_or("v1 Renamed has no name")?;
    let (first, last) = name.split_once(' ').unwrap_or((name, ""));
    Ok(serde_json::json!({"first": first, "last": last}))
}

impl DomainEvent for PersonEvent {
    fn schema_version(event_type: &str) -> u32 {
        if event_type == "Renamed" {
            2
        } else {
            1
        }
    }
    fn upcasters() -> &'static [Upcaster] {
        &[Upcaster {
            event_type: "Renamed",
            from_schema: 1,
            upcast: split_name,
        }]
    }
}

fn recorded(event: NewEvent) -> RecordedEvent {
    RecordedEvent {
        seq: 7,
        subject: "events.person.1".into(),
        aggregate: "person".into(),
        aggregate_id: "1".into(),
        version: 1,
        event_id: event.event_id,
        event_type: event.event_type,
        schema: event.schema,
        occurred_at: event.occurred_at,
        stored_at: None,
        codec: event.codec,
        payload: event.payload,
        metadata: event.metadata,
    }
}

#[test]
fn old_schemas_are_upcast_on_read_in_both_codecs() {
    for codec in [Codec::Json, Codec::Cbor] {
        let v1 = NewEvent::encode(
            "Renamed",
            1,
            &serde_json::json!({"name": "Ada Lovelace"}),
            codec,
            Metadata::default(),
        )
        .unwrap();
        assert_eq!(
            decode_event::<PersonEvent>(&recorded(v1)).unwrap(),
            PersonEvent::Renamed {
                first: "Ada".into(),
                last: "Lovelace".into()
            }
        );
        let current = encode_event(
            &PersonEvent::Renamed {
                first: "A".into(),
                last: "B".into(),
            },
            codec,
            &Metadata::default(),
        )
        .unwrap();
        assert_eq!(current.schema, 2);
        assert!(decode_event::<PersonEvent>(&recorded(current)).is_ok());
        let unit = encode_event(&PersonEvent::Deactivated, codec, &Metadata::default()).unwrap();
        assert_eq!(
            decode_event::<PersonEvent>(&recorded(unit)).unwrap(),
            PersonEvent::Deactivated
        );
    }
}

#[test]
fn undecodable_or_future_events_are_errors_naming_the_sequence() {
    let future = NewEvent::encode(
        "Renamed",
        3,
        &serde_json::json!({}),
        Codec::Json,
        Metadata::default(),
    )
    .unwrap();
    let err = decode_event::<PersonEvent>(&recorded(future)).unwrap_err();
    assert_eq!(err.seq, 7);
    assert!(err.reason.contains("newer"), "{err}");
    let unknown = NewEvent::encode(
        "Exploded",
        1,
        &serde_json::json!({}),
        Codec::Json,
        Metadata::default(),
    )
    .unwrap();
    assert!(decode_event::<PersonEvent>(&recorded(unknown)).is_err());
    let mut garbage =
        NewEvent::encode("Deactivated", 1, &(), Codec::Cbor, Metadata::default()).unwrap();
    garbage.payload = bytes::Bytes::from_static(&[0xff, 0x00, 0x13]);
    let err = decode_event::<PersonEvent>(&recorded(garbage)).unwrap_err();
    assert!(err.to_string().contains("sequence 7"), "{err}");
}

#[test]
fn an_event_type_that_is_not_adjacently_tagged_is_refused_with_advice() {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Plain {
        x: u32,
    }
    impl DomainEvent for Plain {}
    let err = encode_event(&Plain { x: 1 }, Codec::Json, &Metadata::default()).unwrap_err();
    assert!(
        err.to_string().contains("tag = \\\"type\\\"")
            || err.to_string().contains("tag = \"type\""),
        "{err}"
    );
}
