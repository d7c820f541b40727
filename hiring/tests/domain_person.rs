//! Every Person rule, accepted and refused, without a server.

use chrono::{DateTime, Duration, TimeZone, Utc};
use hiring::person::{Person, PersonCommand as C, PersonError as E, PersonEvent as Ev};
use jetsource::fixture::AggregateFixture;
use jetsource::{DomainError, RefusalKind};

type F = AggregateFixture<Person>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap()
}
fn registered() -> Ev {
    Ev::PersonRegistered {
        name: "Ada Lovelace".into(),
        email: "ada@example.org".into(),
    }
}
fn received(offer: &str) -> Ev {
    Ev::OfferReceived {
        offer_id: offer.into(),
        organization_id: "acme".into(),
        position_id: "eng".into(),
        expires_at: t0() + Duration::days(7),
    }
}
fn accepted(offer: &str) -> Ev {
    Ev::OfferAccepted {
        offer_id: offer.into(),
        organization_id: "acme".into(),
        position_id: "eng".into(),
    }
}
fn employed(offer: &str) -> Ev {
    Ev::EmploymentStarted {
        offer_id: offer.into(),
        organization_id: "acme".into(),
        position_id: "eng".into(),
    }
}
fn accept(offer: &str, at: DateTime<Utc>) -> C {
    C::AcceptOffer {
        offer_id: offer.into(),
        at,
    }
}

#[test]
fn register() {
    F::given_no_events()
        .when(C::Register {
            name: " Ada Lovelace ".into(),
            email: "Ada@Example.org".into(),
        })
        .then_expect_events([registered()]);
    F::given([registered()])
        .when(C::Register {
            name: "Ada".into(),
            email: "ada@example.org".into(),
        })
        .then_expect_error(E::AlreadyRegistered);
    F::given_no_events()
        .when(C::Register {
            name: "  ".into(),
            email: "a@b.co".into(),
        })
        .then_expect_error(E::InvalidName);
    for bad in ["nope", "a@b", "a b@c.de", "@c.de", "a@@c.de", "a@.de"] {
        F::given_no_events()
            .when(C::Register {
                name: "A".into(),
                email: bad.into(),
            })
            .then_expect_error(E::InvalidEmail(bad.into()));
    }
}

#[test]
fn change_name_and_email() {
    F::given([registered()])
        .when(C::ChangeName {
            name: "Ada King".into(),
        })
        .then_expect_events([Ev::NameChanged {
            name: "Ada King".into(),
        }]);
    F::given([registered()])
        .when(C::ChangeName {
            name: "Ada Lovelace".into(),
        })
        .then_expect_no_events();
    F::given([registered()])
        .when(C::ChangeName { name: "".into() })
        .then_expect_error(E::InvalidName);
    F::given_no_events()
        .when(C::ChangeName { name: "X".into() })
        .then_expect_error(E::NotRegistered);
    F::given([registered()])
        .when(C::ChangeEmail {
            email: "ada@king.org".into(),
        })
        .then_expect_events([Ev::EmailChanged {
            email: "ada@king.org".into(),
        }]);
    F::given([registered()])
        .when(C::ChangeEmail {
            email: "ADA@example.org".into(),
        })
        .then_expect_no_events();
    F::given([registered()])
        .when(C::ChangeEmail {
            email: "bad".into(),
        })
        .then_expect_error(E::InvalidEmail("bad".into()));
    F::given([registered(), Ev::PersonDeactivated {}])
        .when(C::ChangeEmail {
            email: "ada@king.org".into(),
        })
        .then_expect_error(E::Deactivated);
}

#[test]
fn deactivate_declines_pending_offers_and_refuses_while_employed() {
    F::given([registered(), received("o1")])
        .when(C::Deactivate {})
        .then_expect_events([
            Ev::OfferDeclined {
                offer_id: "o1".into(),
                organization_id: "acme".into(),
                position_id: "eng".into(),
            },
            Ev::PersonDeactivated {},
        ]);
    F::given([registered(), Ev::PersonDeactivated {}])
        .when(C::Deactivate {})
        .then_expect_no_events();
    F::given([registered(), received("o1"), accepted("o1"), employed("o1")])
        .when(C::Deactivate {})
        .then_expect_error(E::StillEmployed);
    F::given_no_events()
        .when(C::Deactivate {})
        .then_expect_error(E::NotRegistered);
}

#[test]
fn record_offer() {
    let cmd = || C::RecordOffer {
        offer_id: "o1".into(),
        organization_id: "acme".into(),
        position_id: "eng".into(),
        expires_at: t0() + Duration::days(7),
    };
    F::given([registered()])
        .when(cmd())
        .then_expect_events([received("o1")]);
    F::given([registered(), received("o1")])
        .when(cmd())
        .then_expect_no_events();
    F::given([registered(), received("o1")])
        .when(C::RecordOffer {
            offer_id: "o1".into(),
            organization_id: "other".into(),
            position_id: "eng".into(),
            expires_at: t0(),
        })
        .then_expect_error(E::DuplicateOffer("o1".into()));
    F::given([registered(), Ev::PersonDeactivated {}])
        .when(cmd())
        .then_expect_error(E::Deactivated);
    F::given([registered()])
        .when(C::RecordOffer {
            offer_id: "o.1".into(),
            organization_id: "acme".into(),
            position_id: "eng".into(),
            expires_at: t0(),
        })
        .then_expect_error(E::InvalidId("o.1".into()));
}

#[test]
fn accept_offer() {
    F::given([registered(), received("o1")])
        .when(accept("o1", t0()))
        .then_expect_events([accepted("o1")]);
    F::given([registered(), received("o1")])
        .when(accept("o1", t0() + Duration::days(8)))
        .then_expect_error(E::OfferExpired("o1".into()));
    F::given([registered()])
        .when(accept("o9", t0()))
        .then_expect_error(E::UnknownOffer("o9".into()));
    F::given([
        registered(),
        received("o1"),
        Ev::OfferRescinded {
            offer_id: "o1".into(),
            reason: "filled".into(),
        },
    ])
    .when(accept("o1", t0()))
    .then_expect_error(E::OfferNotPending {
        offer_id: "o1".into(),
        status: "rescinded",
    });
    F::given([registered(), received("o1"), received("o2"), accepted("o1")])
        .when(accept("o2", t0()))
        .then_expect_error(E::AnotherOfferAccepted("o1".into()));
    F::given([
        registered(),
        received("o1"),
        accepted("o1"),
        employed("o1"),
        received("o2"),
    ])
    .when(accept("o2", t0()))
    .then_expect_error(E::AlreadyEmployed);
    F::given([registered(), received("o1"), Ev::PersonDeactivated {}])
        .when(accept("o1", t0()))
        .then_expect_error(E::Deactivated);
}

#[test]
fn decline_offer() {
    F::given([registered(), received("o1")])
        .when(C::DeclineOffer {
            offer_id: "o1".into(),
        })
        .then_expect_events([Ev::OfferDeclined {
            offer_id: "o1".into(),
            organization_id: "acme".into(),
            position_id: "eng".into(),
        }]);
    F::given([registered(), received("o1"), accepted("o1")])
        .when(C::DeclineOffer {
            offer_id: "o1".into(),
        })
        .then_expect_error(E::OfferNotPending {
            offer_id: "o1".into(),
            status: "accepted",
        });
    F::given([registered()])
        .when(C::DeclineOffer {
            offer_id: "o1".into(),
        })
        .then_expect_error(E::UnknownOffer("o1".into()));
}

#[test]
fn rescind_and_expire_offer() {
    let rescind = || C::RescindOffer {
        offer_id: "o1".into(),
        reason: "position filled".into(),
    };
    let rescinded = Ev::OfferRescinded {
        offer_id: "o1".into(),
        reason: "position filled".into(),
    };
    F::given([registered(), received("o1"), accepted("o1")])
        .when(rescind())
        .then_expect_events([rescinded.clone()]);
    F::given([registered(), received("o1"), rescinded])
        .when(rescind())
        .then_expect_no_events();
    F::given([registered(), received("o1"), accepted("o1"), employed("o1")])
        .when(rescind())
        .then_expect_error(E::OfferNotOutstanding {
            offer_id: "o1".into(),
            status: "hired",
        });

    let late = t0() + Duration::days(7);
    F::given([registered(), received("o1")])
        .when(C::ExpireOffer {
            offer_id: "o1".into(),
            at: late,
        })
        .then_expect_events([Ev::OfferExpired {
            offer_id: "o1".into(),
        }]);
    F::given([registered(), received("o1")])
        .when(C::ExpireOffer {
            offer_id: "o1".into(),
            at: t0(),
        })
        .then_expect_error(E::NotYetExpired("o1".into()));
    F::given([
        registered(),
        received("o1"),
        Ev::OfferExpired {
            offer_id: "o1".into(),
        },
    ])
    .when(C::ExpireOffer {
        offer_id: "o1".into(),
        at: late,
    })
    .then_expect_no_events();
    F::given([registered(), received("o1"), accepted("o1")])
        .when(C::ExpireOffer {
            offer_id: "o1".into(),
            at: late,
        })
        .then_expect_error(E::OfferNotPending {
            offer_id: "o1".into(),
            status: "accepted",
        });
}

#[test]
fn employment() {
    F::given([registered(), received("o1"), accepted("o1")])
        .when(C::StartEmployment {
            offer_id: "o1".into(),
        })
        .then_expect_events([employed("o1")]);
    F::given([registered(), received("o1"), accepted("o1"), employed("o1")])
        .when(C::StartEmployment {
            offer_id: "o1".into(),
        })
        .then_expect_no_events();
    F::given([registered(), received("o1")])
        .when(C::StartEmployment {
            offer_id: "o1".into(),
        })
        .then_expect_error(E::OfferNotAccepted("o1".into()));
    F::given([
        registered(),
        received("o1"),
        accepted("o1"),
        employed("o1"),
        received("o2"),
    ])
    .when(C::StartEmployment {
        offer_id: "o2".into(),
    })
    .then_expect_error(E::AlreadyEmployed);
    let ended = Ev::EmploymentEnded {
        organization_id: "acme".into(),
        position_id: "eng".into(),
        reason: "moved".into(),
    };
    let state = F::given([registered(), received("o1"), accepted("o1"), employed("o1")])
        .when(C::EndEmployment {
            reason: "moved".into(),
        })
        .then_expect_events([ended]);
    assert!(state.employment.is_none());
    F::given([registered()])
        .when(C::EndEmployment {
            reason: String::new(),
        })
        .then_expect_error(E::NotEmployed);
}

#[test]
fn refusals_map_to_409_or_422() {
    assert_eq!(
        E::InvalidEmail("x".into()).kind(),
        RefusalKind::InvalidValue
    );
    assert_eq!(E::AlreadyRegistered.kind(), RefusalKind::Rule);
    assert_eq!(E::AlreadyRegistered.code(), "already_registered");
}
