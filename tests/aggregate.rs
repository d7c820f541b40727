//! Aggregates, events and upcasters without a server.

mod support;

use jetsource::fixture::AggregateFixture;
use jetsource::store::{Codec, Metadata, NewEvent};
use jetsource::{
    decode_event, decode_events, encode_event, DomainEvent, EventForm, RecordedEvent, Upcaster,
};
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

/// The test domain's history: `Renamed` had one `name` (schema 1), now `first`
/// and `last`; `Addressed` had `street` and `city`, now one `address`;
/// `Retired` is now called `Deactivated`; `Moved` was a rename and an address
/// in one event and is now read as both; `Pinged` is no longer read at all;
/// `Ping` and `Pong` rename into each other (a loop the decoder must stop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum PersonEvent {
    Renamed { first: String, last: String },
    Addressed { address: String },
    Deactivated,
}

fn split_name(body: serde_json::Value) -> Result<serde_json::Value, String> {
    let name = body["name"].as_str().ok_or("v1 Renamed has no name")?;
    let (first, last) = name.split_once(' ').unwrap_or((name, ""));
    Ok(serde_json::json!({"first": first, "last": last}))
}

fn merge_address(body: serde_json::Value) -> Result<serde_json::Value, String> {
    let part = |f: &str| {
        body[f]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("no {f}"))
    };
    Ok(serde_json::json!({"address": format!("{}, {}", part("street")?, part("city")?)}))
}

fn split_moved(body: serde_json::Value) -> Result<Vec<EventForm>, String> {
    Ok(vec![
        EventForm::new("Renamed", 1, serde_json::json!({"name": body["name"]})),
        EventForm::new(
            "Addressed",
            1,
            serde_json::json!({"street": body["street"], "city": body["city"]}),
        ),
    ])
}

impl DomainEvent for PersonEvent {
    fn schema_version(event_type: &str) -> u32 {
        match event_type {
            "Renamed" | "Addressed" => 2,
            _ => 1,
        }
    }
    fn upcasters() -> &'static [Upcaster] {
        // A const, so the `const fn` constructors make a `'static` table.
        const UPCASTERS: &[Upcaster] = &[
            Upcaster::body("Renamed", 1, split_name),
            Upcaster::body("Addressed", 1, merge_address),
            Upcaster::rename("Retired", 1, "Deactivated", 1),
            Upcaster::split("Moved", 1, split_moved),
            Upcaster::split("Pinged", 1, |_| Ok(vec![])),
            Upcaster::rename("Ping", 1, "Pong", 1),
            Upcaster::rename("Pong", 1, "Ping", 1),
        ];
        UPCASTERS
    }
}

fn stored(event_type: &str, schema: u32, body: serde_json::Value) -> RecordedEvent {
    recorded(NewEvent::encode(event_type, schema, &body, Codec::Json, Metadata::default()).unwrap())
}

#[test]
fn a_renamed_event_type_is_read_under_its_new_name() {
    let retired = stored("Retired", 1, serde_json::Value::Null);
    assert_eq!(
        decode_event::<PersonEvent>(&retired).unwrap(),
        PersonEvent::Deactivated
    );
}

#[test]
fn merged_fields_are_read_as_one() {
    let v1 = stored(
        "Addressed",
        1,
        serde_json::json!({"street": "1 Main St", "city": "Springfield"}),
    );
    assert_eq!(
        decode_event::<PersonEvent>(&v1).unwrap(),
        PersonEvent::Addressed {
            address: "1 Main St, Springfield".into()
        }
    );
    let broken = stored("Addressed", 1, serde_json::json!({"street": "1 Main St"}));
    let err = decode_event::<PersonEvent>(&broken).unwrap_err();
    assert!(
        err.reason
            .contains("upcasting Addressed from schema 1: no city"),
        "{err}"
    );
}

#[test]
fn a_split_event_is_read_as_several_each_upcast_in_turn() {
    let moved = stored(
        "Moved",
        1,
        serde_json::json!({"name": "Ada Lovelace", "street": "1 Main St", "city": "London"}),
    );
    assert_eq!(
        decode_events::<PersonEvent>(&moved).unwrap(),
        vec![
            PersonEvent::Renamed {
                first: "Ada".into(),
                last: "Lovelace".into()
            },
            PersonEvent::Addressed {
                address: "1 Main St, London".into()
            },
        ]
    );
    // One event expected, two found: the reader is told to read several.
    let err = decode_event::<PersonEvent>(&moved).unwrap_err();
    assert!(err.reason.contains("use decode_events"), "{err}");
    let stored_form = EventForm::new(
        "Moved",
        1,
        serde_json::json!({"name": "A B", "street": "s", "city": "c"}),
    );
    let today = jetsource::aggregate::upcast::<PersonEvent>(stored_form).unwrap();
    let forms: Vec<_> = today
        .iter()
        .map(|f| (f.event_type.as_str(), f.schema))
        .collect();
    assert_eq!(forms, [("Renamed", 2), ("Addressed", 2)]);
}

#[test]
fn an_event_split_into_nothing_is_read_as_no_events() {
    let pinged = stored("Pinged", 1, serde_json::json!({"at": 1}));
    assert_eq!(decode_events::<PersonEvent>(&pinged).unwrap(), vec![]);
}

#[test]
fn an_upcaster_loop_is_an_error_not_a_hang() {
    let ping = stored("Ping", 1, serde_json::json!({}));
    let err = decode_events::<PersonEvent>(&ping).unwrap_err();
    assert!(err.reason.contains("more than 64 steps"), "{err}");
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
