//! Every Organization rule, accepted and refused, without a server.

use chrono::{DateTime, Duration, TimeZone, Utc};
use hiring::organization::{
    Organization, OrganizationCommand as C, OrganizationError as E, OrganizationEvent as Ev,
};
use jetsource::fixture::AggregateFixture;

type F = AggregateFixture<Organization>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap()
}
fn registered() -> Ev {
    Ev::OrganizationRegistered {
        name: "Acme".into(),
    }
}
fn opened(p: &str) -> Ev {
    Ev::PositionOpened {
        position_id: p.into(),
        title: "Engineer".into(),
    }
}
fn extended(offer: &str, person: &str) -> Ev {
    Ev::OfferExtended {
        offer_id: offer.into(),
        position_id: "eng".into(),
        person_id: person.into(),
        expires_at: t0() + Duration::days(7),
    }
}
fn extend(offer: &str, person: &str) -> C {
    C::ExtendOffer {
        position_id: "eng".into(),
        person_id: person.into(),
        offer_id: offer.into(),
        expires_at: t0() + Duration::days(7),
        at: t0(),
    }
}
fn hired(offer: &str, person: &str) -> [Ev; 2] {
    [
        Ev::PositionFilled {
            position_id: "eng".into(),
            person_id: person.into(),
            offer_id: offer.into(),
        },
        Ev::MemberJoined {
            person_id: person.into(),
            position_id: "eng".into(),
        },
    ]
}
fn withdrawn(offer: &str, person: &str, reason: &str) -> Ev {
    Ev::OfferWithdrawn {
        offer_id: offer.into(),
        position_id: "eng".into(),
        person_id: person.into(),
        reason: reason.into(),
    }
}

#[test]
fn register() {
    F::given_no_events()
        .when(C::Register {
            name: "Acme".into(),
        })
        .then_expect_events([registered()]);
    F::given([registered()])
        .when(C::Register {
            name: "Acme".into(),
        })
        .then_expect_error(E::AlreadyRegistered);
    F::given_no_events()
        .when(C::Register { name: "\n".into() })
        .then_expect_error(E::InvalidName);
    F::given_no_events()
        .when(C::OpenPosition {
            position_id: "eng".into(),
            title: "Engineer".into(),
        })
        .then_expect_error(E::NotRegistered);
}

#[test]
fn open_and_close_positions() {
    F::given([registered()])
        .when(C::OpenPosition {
            position_id: "eng".into(),
            title: "Engineer".into(),
        })
        .then_expect_events([opened("eng")]);
    F::given([registered(), opened("eng")])
        .when(C::OpenPosition {
            position_id: "eng".into(),
            title: "Other".into(),
        })
        .then_expect_error(E::DuplicatePosition("eng".into()));
    F::given([registered()])
        .when(C::OpenPosition {
            position_id: "e g".into(),
            title: "Engineer".into(),
        })
        .then_expect_error(E::InvalidId("e g".into()));
    F::given([registered()])
        .when(C::OpenPosition {
            position_id: "eng".into(),
            title: "".into(),
        })
        .then_expect_error(E::InvalidName);

    F::given([registered(), opened("eng"), extended("o1", "p1")])
        .when(C::ClosePosition {
            position_id: "eng".into(),
        })
        .then_expect_events([
            withdrawn("o1", "p1", "position closed"),
            Ev::PositionClosed {
                position_id: "eng".into(),
            },
        ]);
    F::given([
        registered(),
        opened("eng"),
        Ev::PositionClosed {
            position_id: "eng".into(),
        },
    ])
    .when(C::ClosePosition {
        position_id: "eng".into(),
    })
    .then_expect_no_events();
    let [filled, joined] = hired("o1", "p1");
    F::given([
        registered(),
        opened("eng"),
        extended("o1", "p1"),
        filled,
        joined,
    ])
    .when(C::ClosePosition {
        position_id: "eng".into(),
    })
    .then_expect_error(E::PositionFilled("eng".into()));
    F::given([registered()])
        .when(C::ClosePosition {
            position_id: "x".into(),
        })
        .then_expect_error(E::UnknownPosition("x".into()));
}

#[test]
fn extend_offer() {
    F::given([registered(), opened("eng")])
        .when(extend("o1", "p1"))
        .then_expect_events([extended("o1", "p1")]);
    F::given([
        registered(),
        opened("eng"),
        Ev::PositionClosed {
            position_id: "eng".into(),
        },
    ])
    .when(extend("o1", "p1"))
    .then_expect_error(E::PositionNotOpen {
        position_id: "eng".into(),
        status: "closed",
    });
    F::given([registered(), opened("eng"), extended("o1", "p1")])
        .when(extend("o1", "p2"))
        .then_expect_error(E::DuplicateOffer("o1".into()));
    F::given([registered(), opened("eng"), extended("o1", "p1")])
        .when(extend("o2", "p1"))
        .then_expect_error(E::OfferAlreadyOutstanding {
            person_id: "p1".into(),
            offer_id: "o1".into(),
        });
    F::given([registered(), opened("eng")])
        .when(C::ExtendOffer {
            position_id: "eng".into(),
            person_id: "p1".into(),
            offer_id: "o1".into(),
            expires_at: t0(),
            at: t0(),
        })
        .then_expect_error(E::ExpiryNotInFuture);
    let [filled, joined] = hired("o1", "p1");
    F::given([
        registered(),
        opened("eng"),
        opened("ops"),
        extended("o1", "p1"),
        filled,
        joined,
    ])
    .when(C::ExtendOffer {
        position_id: "ops".into(),
        person_id: "p1".into(),
        offer_id: "o2".into(),
        expires_at: t0() + Duration::days(1),
        at: t0(),
    })
    .then_expect_error(E::AlreadyMember("p1".into()));
    F::given([registered(), opened("eng")])
        .when(extend("o1", "p>"))
        .then_expect_error(E::InvalidId("p>".into()));
}

#[test]
fn withdraw_and_expire_offer() {
    F::given([registered(), opened("eng"), extended("o1", "p1")])
        .when(C::WithdrawOffer {
            offer_id: "o1".into(),
            reason: "declined".into(),
        })
        .then_expect_events([withdrawn("o1", "p1", "declined")]);
    F::given([
        registered(),
        opened("eng"),
        extended("o1", "p1"),
        withdrawn("o1", "p1", "x"),
    ])
    .when(C::WithdrawOffer {
        offer_id: "o1".into(),
        reason: "again".into(),
    })
    .then_expect_no_events();
    let [filled, joined] = hired("o1", "p1");
    F::given([
        registered(),
        opened("eng"),
        extended("o1", "p1"),
        filled,
        joined,
    ])
    .when(C::WithdrawOffer {
        offer_id: "o1".into(),
        reason: String::new(),
    })
    .then_expect_error(E::OfferNotOutstanding {
        offer_id: "o1".into(),
        status: "hired",
    });
    F::given([registered()])
        .when(C::WithdrawOffer {
            offer_id: "o1".into(),
            reason: String::new(),
        })
        .then_expect_error(E::UnknownOffer("o1".into()));

    let late = t0() + Duration::days(8);
    F::given([registered(), opened("eng"), extended("o1", "p1")])
        .when(C::ExpireOffer {
            offer_id: "o1".into(),
            at: late,
        })
        .then_expect_events([Ev::OfferLapsed {
            offer_id: "o1".into(),
            position_id: "eng".into(),
            person_id: "p1".into(),
        }]);
    F::given([registered(), opened("eng"), extended("o1", "p1")])
        .when(C::ExpireOffer {
            offer_id: "o1".into(),
            at: t0(),
        })
        .then_expect_error(E::NotYetExpired("o1".into()));
}

#[test]
fn hire_fills_the_position_and_withdraws_the_other_offers() {
    let [filled, joined] = hired("o1", "p1");
    let state = F::given([
        registered(),
        opened("eng"),
        extended("o1", "p1"),
        extended("o2", "p2"),
    ])
    .when(C::Hire {
        offer_id: "o1".into(),
    })
    .then_expect_events([
        filled.clone(),
        joined.clone(),
        withdrawn("o2", "p2", "position filled"),
    ]);
    assert_eq!(state.members.get("p1").map(String::as_str), Some("eng"));
    F::given([
        registered(),
        opened("eng"),
        extended("o1", "p1"),
        filled.clone(),
        joined.clone(),
    ])
    .when(C::Hire {
        offer_id: "o1".into(),
    })
    .then_expect_no_events();
    F::given([
        registered(),
        opened("eng"),
        extended("o1", "p1"),
        withdrawn("o1", "p1", "x"),
    ])
    .when(C::Hire {
        offer_id: "o1".into(),
    })
    .then_expect_error(E::OfferNotOutstanding {
        offer_id: "o1".into(),
        status: "withdrawn",
    });
    F::given([
        registered(),
        opened("eng"),
        extended("o1", "p1"),
        Ev::OfferLapsed {
            offer_id: "o1".into(),
            position_id: "eng".into(),
            person_id: "p1".into(),
        },
    ])
    .when(C::Hire {
        offer_id: "o1".into(),
    })
    .then_expect_error(E::OfferNotOutstanding {
        offer_id: "o1".into(),
        status: "expired",
    });
}

#[test]
fn remove_member_reopens_the_position() {
    let [filled, joined] = hired("o1", "p1");
    let state = F::given([
        registered(),
        opened("eng"),
        extended("o1", "p1"),
        filled,
        joined,
    ])
    .when(C::RemoveMember {
        person_id: "p1".into(),
        reason: "left".into(),
    })
    .then_expect_events([Ev::MemberRemoved {
        person_id: "p1".into(),
        position_id: "eng".into(),
        reason: "left".into(),
    }]);
    assert!(state.members.is_empty());
    F::given([registered()])
        .when(C::RemoveMember {
            person_id: "p1".into(),
            reason: String::new(),
        })
        .then_expect_error(E::NotMember("p1".into()));
}
