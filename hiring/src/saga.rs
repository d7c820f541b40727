//! The hiring saga: from an extended offer to a started employment, one instance per
//! offer (offer ids are global, UUIDs by default).
//!
//! | when | it does |
//! |---|---|
//! | organization `OfferExtended` | person `RecordOffer`; deadline `expiry` at the offer's `expires_at` (+1 s of clock slack) |
//! | person `OfferAccepted` | organization `Hire` (position filled + member joined, one atomic append) |
//! | organization `PositionFilled` for the offer | person `StartEmployment`; done: `hired` once `EmploymentStarted` |
//! | person `OfferDeclined` | organization `WithdrawOffer`; done: `declined` |
//! | organization `OfferWithdrawn` (position closed, filled by someone else, withdrawn) | person `RescindOffer`; done: `rescinded` |
//! | `Hire` refused (position filled or closed meanwhile) | person `RescindOffer`; done: `rescinded` |
//! | deadline `expiry` before acceptance | organization and person `ExpireOffer`; done: `expired` |
//! | `RecordOffer` refused (no such person, deactivated) | organization `WithdrawOffer`; done: `not recorded` |
//! | `StartEmployment` refused (employed elsewhere meanwhile) | organization `RemoveMember`; done: `employment refused` |

use super::{
    Organization, OrganizationCommand, OrganizationEvent, Person, PersonCommand, PersonEvent,
};
use chrono::{DateTime, Duration, Utc};
use jetsource::aggregate::decode_if;
use jetsource::saga::{Input, Reaction, Saga, SagaCommand};
use jetsource::store::MalformedEvent;
use jetsource::store::RecordedEvent;
use serde::{Deserialize, Serialize};

/// Where one offer's flow stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// No offer seen yet.
    #[default]
    New,
    /// Extended by the organization; being recorded on the person.
    Extended,
    /// On the person's record, waiting for an answer or the deadline.
    Recorded,
    /// Accepted by the person; hiring.
    Accepted,
    /// Position filled; starting the employment.
    Filled,
    /// Employment started.
    Employed,
    /// Declined by the person; withdrawing on the organization's side.
    Declined,
    /// The organization can no longer honour it; rescinding on the person's side.
    Rescinding,
    /// The deadline passed first; expiring on both sides.
    Expired,
    /// Over without a hire (see the instance's outcome).
    Closed,
}

/// One offer's flow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HiringState {
    /// Where it stands.
    pub stage: Stage,
    /// The offer.
    pub offer_id: String,
    /// Who offers.
    pub organization_id: String,
    /// For which position.
    pub position_id: String,
    /// To whom.
    pub person_id: String,
    /// Until when it may be accepted.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The hiring saga (`jetsource saga hiring`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hiring;

/// Slack added to an offer's deadline, so that a node whose clock is slightly behind
/// the server's does not refuse the expiry as premature.
const CLOCK_SLACK: Duration = Duration::seconds(1);

/// When the node still thinks an offer has not expired, the next try is this long
/// after its deadline.
const RETRY_EXPIRY: Duration = Duration::seconds(5);

/// What the saga reads off an event.
enum Seen {
    Org(OrganizationEvent),
    Person(PersonEvent),
}

/// The organization's event types the saga reacts to.
const ORGANIZATION_EVENTS: &[&str] = &[
    "OfferExtended",
    "OfferWithdrawn",
    "OfferLapsed",
    "PositionFilled",
];
/// The person's event types the saga reacts to.
const PERSON_EVENTS: &[&str] = &[
    "OfferReceived",
    "OfferAccepted",
    "OfferDeclined",
    "OfferRescinded",
    "OfferExpired",
    "EmploymentStarted",
];

/// The event, decoded, if it is one the saga reacts to (by today's type names, so
/// one stored under an earlier name counts too). Other types are not decoded at
/// all (so a type a newer node writes is simply not the saga's business); one of
/// these that does not decode is an error.
fn seen(event: &RecordedEvent) -> Result<Option<Seen>, MalformedEvent> {
    Ok(match event.aggregate.as_str() {
        "organization" => decode_if(event, ORGANIZATION_EVENTS)?.map(Seen::Org),
        "person" => decode_if(event, PERSON_EVENTS)?.map(Seen::Person),
        _ => None,
    })
}

impl HiringState {
    fn to_person(&self, step: &str, command: PersonCommand) -> SagaCommand {
        SagaCommand::new::<Person>(step, &self.person_id, &command)
    }

    fn to_organization(&self, step: &str, command: OrganizationCommand) -> SagaCommand {
        SagaCommand::new::<Organization>(step, &self.organization_id, &command)
    }

    fn at(&self, stage: Stage) -> HiringState {
        HiringState {
            stage,
            ..self.clone()
        }
    }

    fn rescind(&self, reason: &str) -> Reaction<HiringState> {
        Reaction::to(self.at(Stage::Rescinding))
            .send(self.to_person(
                "rescind",
                PersonCommand::RescindOffer {
                    offer_id: self.offer_id.clone(),
                    reason: reason.to_string(),
                },
            ))
            .cancel("expiry")
    }

    fn on_event(&self, event: Seen) -> Reaction<HiringState> {
        use Stage::*;
        let nothing = Reaction::to(self.clone());
        match (self.stage, event) {
            (
                New,
                Seen::Org(OrganizationEvent::OfferExtended {
                    offer_id,
                    position_id,
                    person_id,
                    expires_at,
                }),
            ) => {
                let state = HiringState {
                    stage: Extended,
                    offer_id,
                    organization_id: String::new(),
                    position_id,
                    person_id,
                    expires_at: Some(expires_at),
                };
                // The organization's id is the event's aggregate id: filled in by react.
                Reaction::to(state).deadline("expiry", expires_at + CLOCK_SLACK)
            }
            (Extended, Seen::Person(PersonEvent::OfferReceived { .. })) => {
                Reaction::to(self.at(Recorded))
            }
            (Extended | Recorded, Seen::Person(PersonEvent::OfferAccepted { .. })) => {
                Reaction::to(self.at(Accepted)).send(self.to_organization(
                    "hire",
                    OrganizationCommand::Hire {
                        offer_id: self.offer_id.clone(),
                    },
                ))
            }
            // Accepted after the organization gave up on it (a race): undo the acceptance.
            (Rescinding | Expired, Seen::Person(PersonEvent::OfferAccepted { .. })) => {
                self.rescind("the offer is no longer available")
            }
            (Extended | Recorded, Seen::Person(PersonEvent::OfferDeclined { .. })) => {
                Reaction::to(self.at(Declined))
                    .send(self.to_organization(
                        "withdraw",
                        OrganizationCommand::WithdrawOffer {
                            offer_id: self.offer_id.clone(),
                            reason: "declined by the person".into(),
                        },
                    ))
                    .cancel("expiry")
            }
            (Declined, Seen::Org(OrganizationEvent::OfferWithdrawn { .. })) => {
                Reaction::to(self.at(Closed)).finish("declined")
            }
            (
                Extended | Recorded | Accepted,
                Seen::Org(OrganizationEvent::OfferWithdrawn { reason, .. }),
            ) => self.rescind(&reason),
            (Accepted, Seen::Org(OrganizationEvent::PositionFilled { offer_id, .. }))
                if offer_id == self.offer_id =>
            {
                Reaction::to(self.at(Filled)).send(self.to_person(
                    "start-employment",
                    PersonCommand::StartEmployment {
                        offer_id: self.offer_id.clone(),
                    },
                ))
            }
            (Filled, Seen::Person(PersonEvent::EmploymentStarted { .. })) => {
                Reaction::to(self.at(Employed))
                    .cancel("expiry")
                    .finish("hired")
            }
            (Rescinding, Seen::Person(PersonEvent::OfferRescinded { .. })) => {
                Reaction::to(self.at(Closed)).finish("rescinded")
            }
            (
                Expired,
                Seen::Person(PersonEvent::OfferExpired { .. } | PersonEvent::OfferRescinded { .. }),
            ) => Reaction::to(self.at(Closed)).finish("expired"),
            _ => nothing,
        }
    }

    fn on_refused(&self, step: &str, code: &str) -> Reaction<HiringState> {
        use Stage::*;
        match (step, code) {
            // The node's clock is behind the server's: try again a little later
            // (refusals are not remembered, so the same steps may run again).
            ("expire-organization" | "expire-person", "not_yet_expired") => {
                let later = self.expires_at.unwrap_or_default() + RETRY_EXPIRY;
                Reaction::to(self.at(Recorded)).deadline("expiry", later)
            }
            ("record-offer", _) => Reaction::to(self.at(Closed))
                .send(self.to_organization(
                    "withdraw",
                    OrganizationCommand::WithdrawOffer {
                        offer_id: self.offer_id.clone(),
                        reason: format!("the person could not receive it ({code})"),
                    },
                ))
                .cancel("expiry")
                .finish("not recorded"),
            ("hire", _) => self.rescind(&format!("the position is no longer open ({code})")),
            ("start-employment", _) => Reaction::to(self.at(Closed))
                .send(self.to_organization(
                    "remove-member",
                    OrganizationCommand::RemoveMember {
                        person_id: self.person_id.clone(),
                        reason: format!("employment could not start ({code})"),
                    },
                ))
                .finish("employment refused"),
            // Accepted just before the deadline fired: the organization's side has
            // expired, so the acceptance is rescinded.
            ("expire-person", "offer_not_pending") => {
                Reaction::to(self.clone()).send(self.to_person(
                    "rescind",
                    PersonCommand::RescindOffer {
                        offer_id: self.offer_id.clone(),
                        reason: "expired".into(),
                    },
                ))
            }
            ("expire-person", _) if self.stage == Expired => {
                Reaction::to(self.at(Closed)).finish("expired")
            }
            ("rescind", _) => Reaction::to(self.at(Closed)).finish("rescinded"),
            ("withdraw", _) if self.stage == Declined => {
                Reaction::to(self.at(Closed)).finish("declined")
            }
            _ => Reaction::to(self.clone()),
        }
    }

    fn on_deadline(&self) -> Reaction<HiringState> {
        match self.stage {
            Stage::Extended | Stage::Recorded => {
                // The node stamps `at` with its own clock; this value is replaced.
                let at = self.expires_at.unwrap_or_default();
                Reaction::to(self.at(Stage::Expired))
                    .send(self.to_organization(
                        "expire-organization",
                        OrganizationCommand::ExpireOffer {
                            offer_id: self.offer_id.clone(),
                            at,
                        },
                    ))
                    .send(self.to_person(
                        "expire-person",
                        PersonCommand::ExpireOffer {
                            offer_id: self.offer_id.clone(),
                            at,
                        },
                    ))
            }
            _ => Reaction::to(self.clone()),
        }
    }
}

impl Saga for Hiring {
    type State = HiringState;

    fn name(&self) -> &str {
        "hiring"
    }

    fn aggregates(&self) -> &[&'static str] {
        &["organization", "person"]
    }

    fn correlate(&self, event: &RecordedEvent) -> Result<Option<String>, MalformedEvent> {
        let Some(seen) = seen(event)? else {
            return Ok(None);
        };
        Ok(match seen {
            Seen::Org(e) => match e {
                OrganizationEvent::OfferExtended { offer_id, .. }
                | OrganizationEvent::OfferWithdrawn { offer_id, .. }
                | OrganizationEvent::OfferLapsed { offer_id, .. }
                | OrganizationEvent::PositionFilled { offer_id, .. } => Some(offer_id),
                _ => None,
            },
            Seen::Person(e) => match e {
                PersonEvent::OfferReceived { offer_id, .. }
                | PersonEvent::OfferAccepted { offer_id, .. }
                | PersonEvent::OfferDeclined { offer_id, .. }
                | PersonEvent::OfferRescinded { offer_id, .. }
                | PersonEvent::OfferExpired { offer_id }
                | PersonEvent::EmploymentStarted { offer_id, .. } => Some(offer_id),
                _ => None,
            },
        })
    }

    fn stage(&self, state: &HiringState) -> String {
        serde_json::to_value(state.stage)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn react(&self, state: &HiringState, input: Input<'_>) -> Reaction<HiringState> {
        match input {
            Input::Event(event) => {
                // Only correlated events reach here, and those decoded once already.
                let Ok(Some(seen)) = seen(event) else {
                    return Reaction::to(state.clone());
                };
                let mut reaction = state.on_event(seen);
                if state.stage == Stage::New && reaction.state.stage == Stage::Extended {
                    reaction.state.organization_id = event.aggregate_id.clone();
                    let s = reaction.state.clone();
                    reaction = reaction.send(s.to_person(
                        "record-offer",
                        PersonCommand::RecordOffer {
                            offer_id: s.offer_id.clone(),
                            organization_id: s.organization_id.clone(),
                            position_id: s.position_id.clone(),
                            expires_at: s.expires_at.unwrap_or_default(),
                        },
                    ));
                }
                reaction
            }
            Input::Refused { step, code, .. } => state.on_refused(step, code),
            Input::Deadline { name: "expiry" } => state.on_deadline(),
            Input::Deadline { .. } => Reaction::to(state.clone()),
        }
    }
}
