//! The hiring saga's decisions, one per row of its table, without a server.

use chrono::{DateTime, TimeZone, Utc};
use hiring::saga::Stage;
use hiring::HiringState;
use hiring::{Hiring, Organization, OrganizationEvent as O, Person, PersonEvent as P};
use jetsource::fixture::SagaFixture;
use jetsource::saga::Reaction;

fn deadline() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 31, 12, 0, 0).unwrap()
}

fn extended() -> O {
    O::OfferExtended {
        offer_id: "o1".into(),
        position_id: "eng".into(),
        person_id: "ada".into(),
        expires_at: deadline(),
    }
}

fn received() -> P {
    P::OfferReceived {
        offer_id: "o1".into(),
        organization_id: "acme".into(),
        position_id: "eng".into(),
        expires_at: deadline(),
    }
}

fn accepted() -> P {
    P::OfferAccepted {
        offer_id: "o1".into(),
        organization_id: "acme".into(),
        position_id: "eng".into(),
    }
}

/// An offer on the person's record, waiting for an answer.
fn recorded() -> SagaFixture<Hiring> {
    SagaFixture::new(Hiring)
        .given::<Organization>("acme", &extended())
        .given::<Person>("ada", &received())
}

#[track_caller]
fn sends(reaction: &Reaction<HiringState>, expected: &[(&str, &str, &str)]) {
    let sent: Vec<_> = reaction
        .commands
        .iter()
        .map(|c| (c.step.as_str(), c.aggregate.as_str(), c.command.as_str()))
        .collect();
    assert_eq!(sent, expected);
}

#[test]
fn an_extended_offer_is_recorded_on_the_person_with_a_deadline() {
    let r = SagaFixture::new(Hiring).when::<Organization>("acme", &extended());
    sends(&r, &[("record-offer", "person", "RecordOffer")]);
    assert_eq!(r.commands[0].body["id"], "ada");
    assert_eq!(r.commands[0].body["organization_id"], "acme");
    assert_eq!(r.deadlines.len(), 1);
    assert_eq!(r.deadlines[0].name, "expiry");
    assert!(
        r.deadlines[0].at > deadline(),
        "a little slack after the deadline"
    );
    assert_eq!(r.state.stage, Stage::Extended);
}

#[test]
fn an_acceptance_hires_and_a_filled_position_starts_the_employment() {
    let r = recorded().when::<Person>("ada", &accepted());
    sends(&r, &[("hire", "organization", "Hire")]);
    let accepted = recorded().given::<Person>("ada", &accepted());
    let filled = O::PositionFilled {
        position_id: "eng".into(),
        person_id: "ada".into(),
        offer_id: "o1".into(),
    };
    let r = accepted.when::<Organization>("acme", &filled);
    sends(&r, &[("start-employment", "person", "StartEmployment")]);
    let started = P::EmploymentStarted {
        offer_id: "o1".into(),
        organization_id: "acme".into(),
        position_id: "eng".into(),
    };
    let r = accepted
        .given::<Organization>("acme", &filled)
        .when::<Person>("ada", &started);
    assert_eq!(r.finished.as_deref(), Some("hired"));
    assert_eq!(r.cancel, ["expiry"]);
}

#[test]
fn a_position_filled_for_another_offer_starts_nothing() {
    let other = O::PositionFilled {
        position_id: "eng".into(),
        person_id: "bob".into(),
        offer_id: "o2".into(),
    };
    let r = recorded()
        .given::<Person>("ada", &accepted())
        .when::<Organization>("acme", &other);
    assert!(r.commands.is_empty());
}

#[test]
fn a_declined_offer_is_withdrawn_then_finished() {
    let declined = P::OfferDeclined {
        offer_id: "o1".into(),
        organization_id: "acme".into(),
        position_id: "eng".into(),
    };
    let r = recorded().when::<Person>("ada", &declined);
    sends(&r, &[("withdraw", "organization", "WithdrawOffer")]);
    let withdrawn = O::OfferWithdrawn {
        offer_id: "o1".into(),
        position_id: "eng".into(),
        person_id: "ada".into(),
        reason: "declined by the person".into(),
    };
    let r = recorded()
        .given::<Person>("ada", &declined)
        .when::<Organization>("acme", &withdrawn);
    assert_eq!(r.finished.as_deref(), Some("declined"));
    assert!(r.commands.is_empty(), "nothing to rescind after a decline");
}

#[test]
fn a_refused_hire_rescinds_the_persons_offer() {
    let r = recorded()
        .given::<Person>("ada", &accepted())
        .when_refused("hire", "position_not_open");
    sends(&r, &[("rescind", "person", "RescindOffer")]);
    assert_eq!(r.state.stage, Stage::Rescinding);
}

#[test]
fn a_withdrawal_by_the_organization_rescinds_the_offer() {
    let withdrawn = O::OfferWithdrawn {
        offer_id: "o1".into(),
        position_id: "eng".into(),
        person_id: "ada".into(),
        reason: "position closed".into(),
    };
    let r = recorded().when::<Organization>("acme", &withdrawn);
    sends(&r, &[("rescind", "person", "RescindOffer")]);
    let rescinded = P::OfferRescinded {
        offer_id: "o1".into(),
        reason: "position closed".into(),
    };
    let r = recorded()
        .given::<Organization>("acme", &withdrawn)
        .when::<Person>("ada", &rescinded);
    assert_eq!(r.finished.as_deref(), Some("rescinded"));
}

#[test]
fn the_deadline_expires_a_pending_offer_on_both_sides() {
    let r = recorded().when_deadline("expiry");
    sends(
        &r,
        &[
            ("expire-organization", "organization", "ExpireOffer"),
            ("expire-person", "person", "ExpireOffer"),
        ],
    );
    let r = recorded()
        .given::<Person>("ada", &accepted())
        .when_deadline("expiry");
    assert!(r.commands.is_empty(), "an accepted offer does not expire");
}

#[test]
fn an_acceptance_racing_the_deadline_is_rescinded() {
    let expired = SagaFixture::new(Hiring)
        .given::<Organization>("acme", &extended())
        .given::<Person>("ada", &received());
    let r = expired.when_refused("expire-person", "offer_not_pending");
    sends(&r, &[("rescind", "person", "RescindOffer")]);
}

#[test]
fn a_premature_expiry_is_tried_again_later() {
    let r = recorded().when_refused("expire-organization", "not_yet_expired");
    assert_eq!(r.deadlines.len(), 1);
    assert!(r.deadlines[0].at > deadline());
    assert!(r.finished.is_none());
}

#[test]
fn an_offer_the_person_cannot_receive_is_withdrawn() {
    let extended = SagaFixture::new(Hiring).given::<Organization>("acme", &extended());
    let r = extended.when_refused("record-offer", "not_registered");
    sends(&r, &[("withdraw", "organization", "WithdrawOffer")]);
    assert_eq!(r.finished.as_deref(), Some("not recorded"));
}

#[test]
fn an_employment_that_cannot_start_removes_the_member() {
    let r = recorded()
        .given::<Person>("ada", &accepted())
        .when_refused("start-employment", "already_employed");
    sends(&r, &[("remove-member", "organization", "RemoveMember")]);
    assert_eq!(r.commands[0].body["person_id"], "ada");
    assert_eq!(r.finished.as_deref(), Some("employment refused"));
}

#[test]
fn events_of_other_offers_and_unrelated_events_change_nothing() {
    let fixture = recorded();
    let r = fixture.when::<Person>(
        "ada",
        &P::NameChanged {
            name: "Ada L".into(),
        },
    );
    assert!(r.is_nothing(fixture.state()));
}

#[test]
fn events_are_routed_by_offer_and_garbled_ones_are_errors() {
    use jetsource::fixture::recorded;
    use jetsource::saga::Saga;
    let accepted = recorded::<Person>("ada", 7, &accepted());
    assert_eq!(Hiring.correlate(&accepted).unwrap().as_deref(), Some("o1"));
    let registered = P::PersonRegistered {
        name: "Ada".into(),
        email: "ada@example.org".into(),
    };
    let registered = recorded::<Person>("ada", 8, &registered);
    assert_eq!(Hiring.correlate(&registered).unwrap(), None);

    let mut garbled = accepted.clone();
    garbled.payload = r#"{"nonsense":true}"#.into();
    let error = Hiring.correlate(&garbled).unwrap_err();
    assert_eq!(error.seq, 7);

    // A type the saga does not react to is not decoded, so not an error either.
    let mut unknown = garbled.clone();
    unknown.event_type = "FavouriteColourChosen".into();
    assert_eq!(Hiring.correlate(&unknown).unwrap(), None);
}
