//! A person: who they are, the offers they received, their employment.

use super::validate;
use chrono::{DateTime, Utc};
use jetsource::aggregate::{Aggregate, DomainError, DomainEvent, RefusalKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a person can be asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PersonCommand {
    /// `cmd.person.Register {"id","name","email"}`
    Register {
        /// Full name.
        name: String,
        /// Email address.
        email: String,
    },
    /// `cmd.person.ChangeName {"id","name"}`
    ChangeName {
        /// New name.
        name: String,
    },
    /// `cmd.person.ChangeEmail {"id","email"}`
    ChangeEmail {
        /// New email.
        email: String,
    },
    /// `cmd.person.Deactivate {"id"}`: pending offers are declined with it.
    Deactivate {},
    /// `cmd.person.RecordOffer`: an organization extended an offer (sent by the hiring saga).
    RecordOffer {
        /// The offer.
        offer_id: String,
        /// Who offers.
        organization_id: String,
        /// For which position.
        position_id: String,
        /// Until when it may be accepted.
        expires_at: DateTime<Utc>,
    },
    /// `cmd.person.AcceptOffer {"id","offer_id"}`
    AcceptOffer {
        /// The offer.
        offer_id: String,
        /// When (stamped by the node).
        at: DateTime<Utc>,
    },
    /// `cmd.person.DeclineOffer {"id","offer_id"}`
    DeclineOffer {
        /// The offer.
        offer_id: String,
    },
    /// `cmd.person.RescindOffer`: the organization could not honour the offer.
    RescindOffer {
        /// The offer.
        offer_id: String,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// `cmd.person.ExpireOffer`: the deadline passed.
    ExpireOffer {
        /// The offer.
        offer_id: String,
        /// When (stamped by the node).
        at: DateTime<Utc>,
    },
    /// `cmd.person.StartEmployment {"id","offer_id"}`: on an accepted offer.
    StartEmployment {
        /// The accepted offer.
        offer_id: String,
    },
    /// `cmd.person.EndEmployment {"id","reason"}`
    EndEmployment {
        /// Why.
        #[serde(default)]
        reason: String,
    },
}

/// What happened to a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
#[allow(missing_docs)]
pub enum PersonEvent {
    PersonRegistered {
        name: String,
        email: String,
    },
    NameChanged {
        name: String,
    },
    EmailChanged {
        email: String,
    },
    PersonDeactivated {},
    OfferReceived {
        offer_id: String,
        organization_id: String,
        position_id: String,
        expires_at: DateTime<Utc>,
    },
    OfferAccepted {
        offer_id: String,
        organization_id: String,
        position_id: String,
    },
    OfferDeclined {
        offer_id: String,
        organization_id: String,
        position_id: String,
    },
    OfferRescinded {
        offer_id: String,
        reason: String,
    },
    OfferExpired {
        offer_id: String,
    },
    EmploymentStarted {
        offer_id: String,
        organization_id: String,
        position_id: String,
    },
    EmploymentEnded {
        organization_id: String,
        position_id: String,
        reason: String,
    },
}

impl DomainEvent for PersonEvent {}

/// Why a person refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum PersonError {
    #[error("the person is not registered")]
    NotRegistered,
    #[error("the person is already registered")]
    AlreadyRegistered,
    #[error("the person is deactivated")]
    Deactivated,
    #[error("a name must be 1 to 200 printable characters")]
    InvalidName,
    #[error("{0:?} is not a valid email address")]
    InvalidEmail(String),
    #[error("{0:?} is not a valid id")]
    InvalidId(String),
    #[error("no offer {0}")]
    UnknownOffer(String),
    #[error("offer {0} was already recorded with other terms")]
    DuplicateOffer(String),
    #[error("offer {offer_id} is {status}, not pending")]
    OfferNotPending {
        offer_id: String,
        status: &'static str,
    },
    #[error("offer {offer_id} is {status}: it cannot be rescinded")]
    OfferNotOutstanding {
        offer_id: String,
        status: &'static str,
    },
    #[error("offer {0} expired before it was accepted")]
    OfferExpired(String),
    #[error("offer {0} has not expired yet")]
    NotYetExpired(String),
    #[error("offer {0} was not accepted")]
    OfferNotAccepted(String),
    #[error("another offer ({0}) is already accepted")]
    AnotherOfferAccepted(String),
    #[error("the person is already employed")]
    AlreadyEmployed,
    #[error("the person is not employed")]
    NotEmployed,
    #[error("the person is employed: end the employment first")]
    StillEmployed,
}

impl DomainError for PersonError {
    fn code(&self) -> &'static str {
        use PersonError::*;
        match self {
            NotRegistered => "not_registered",
            AlreadyRegistered => "already_registered",
            Deactivated => "deactivated",
            InvalidName => "invalid_name",
            InvalidEmail(_) => "invalid_email",
            InvalidId(_) => "invalid_id",
            UnknownOffer(_) => "unknown_offer",
            DuplicateOffer(_) => "duplicate_offer",
            OfferNotPending { .. } => "offer_not_pending",
            OfferNotOutstanding { .. } => "offer_not_outstanding",
            OfferExpired(_) => "offer_expired",
            NotYetExpired(_) => "not_yet_expired",
            OfferNotAccepted(_) => "offer_not_accepted",
            AnotherOfferAccepted(_) => "another_offer_accepted",
            AlreadyEmployed => "already_employed",
            NotEmployed => "not_employed",
            StillEmployed => "still_employed",
        }
    }

    fn kind(&self) -> RefusalKind {
        match self {
            PersonError::InvalidName | PersonError::InvalidEmail(_) | PersonError::InvalidId(_) => {
                RefusalKind::InvalidValue
            }
            _ => RefusalKind::Rule,
        }
    }
}

/// Where an offer a person received stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum OfferStatus {
    Pending,
    Accepted,
    Declined,
    Rescinded,
    Expired,
    /// Accepted and turned into the current or a past employment.
    Hired,
}

impl OfferStatus {
    fn as_str(self) -> &'static str {
        match self {
            OfferStatus::Pending => "pending",
            OfferStatus::Accepted => "accepted",
            OfferStatus::Declined => "declined",
            OfferStatus::Rescinded => "rescinded",
            OfferStatus::Expired => "expired",
            OfferStatus::Hired => "hired",
        }
    }
}

/// An offer as the person sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedOffer {
    /// Who offered.
    pub organization_id: String,
    /// For which position.
    pub position_id: String,
    /// Deadline.
    pub expires_at: DateTime<Utc>,
    /// Where it stands.
    pub status: OfferStatus,
}

/// A current employment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Employment {
    /// Employer.
    pub organization_id: String,
    /// Position held.
    pub position_id: String,
    /// The offer it came from.
    pub offer_id: String,
}

/// A person's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// Registered at all.
    pub registered: bool,
    /// Deactivated: accepts nothing any more.
    pub deactivated: bool,
    /// Full name.
    pub name: String,
    /// Email, lower-cased.
    pub email: String,
    /// Offers by id.
    pub offers: BTreeMap<String, ReceivedOffer>,
    /// The current employment.
    pub employment: Option<Employment>,
}

type Decision = Result<Vec<PersonEvent>, PersonError>;

impl Person {
    fn offer(&self, offer_id: &str) -> Result<&ReceivedOffer, PersonError> {
        self.offers
            .get(offer_id)
            .ok_or_else(|| PersonError::UnknownOffer(offer_id.to_string()))
    }

    fn active(&self) -> Result<(), PersonError> {
        if !self.registered {
            Err(PersonError::NotRegistered)
        } else if self.deactivated {
            Err(PersonError::Deactivated)
        } else {
            Ok(())
        }
    }

    fn pending(&self, offer_id: &str) -> Result<&ReceivedOffer, PersonError> {
        let offer = self.offer(offer_id)?;
        match offer.status {
            OfferStatus::Pending => Ok(offer),
            status => Err(PersonError::OfferNotPending {
                offer_id: offer_id.to_string(),
                status: status.as_str(),
            }),
        }
    }

    fn register(&self, name: &str, email: &str) -> Decision {
        if self.registered {
            return Err(PersonError::AlreadyRegistered);
        }
        let name = validate::name(name).ok_or(PersonError::InvalidName)?;
        let email =
            validate::email(email).ok_or_else(|| PersonError::InvalidEmail(email.to_string()))?;
        Ok(vec![PersonEvent::PersonRegistered { name, email }])
    }

    fn deactivate(&self) -> Decision {
        if !self.registered {
            return Err(PersonError::NotRegistered);
        }
        if self.deactivated {
            return Ok(vec![]);
        }
        if self.employment.is_some() {
            return Err(PersonError::StillEmployed);
        }
        let mut events: Vec<_> = self
            .offers
            .iter()
            .filter(|(_, o)| o.status == OfferStatus::Pending)
            .map(|(id, o)| PersonEvent::OfferDeclined {
                offer_id: id.clone(),
                organization_id: o.organization_id.clone(),
                position_id: o.position_id.clone(),
            })
            .collect();
        events.push(PersonEvent::PersonDeactivated {});
        Ok(events)
    }

    fn record_offer(
        &self,
        offer_id: &str,
        organization_id: &str,
        position_id: &str,
        expires_at: DateTime<Utc>,
    ) -> Decision {
        self.active()?;
        for id in [offer_id, organization_id, position_id] {
            if !validate::id(id) {
                return Err(PersonError::InvalidId(id.to_string()));
            }
        }
        if let Some(existing) = self.offers.get(offer_id) {
            let same = existing.organization_id == organization_id
                && existing.position_id == position_id
                && existing.expires_at == expires_at;
            return if same {
                Ok(vec![])
            } else {
                Err(PersonError::DuplicateOffer(offer_id.to_string()))
            };
        }
        Ok(vec![PersonEvent::OfferReceived {
            offer_id: offer_id.to_string(),
            organization_id: organization_id.to_string(),
            position_id: position_id.to_string(),
            expires_at,
        }])
    }

    fn accept(&self, offer_id: &str, at: DateTime<Utc>) -> Decision {
        self.active()?;
        let offer = self.pending(offer_id)?;
        if at > offer.expires_at {
            return Err(PersonError::OfferExpired(offer_id.to_string()));
        }
        if self.employment.is_some() {
            return Err(PersonError::AlreadyEmployed);
        }
        if let Some((other, _)) = self
            .offers
            .iter()
            .find(|(_, o)| o.status == OfferStatus::Accepted)
        {
            return Err(PersonError::AnotherOfferAccepted(other.clone()));
        }
        Ok(vec![PersonEvent::OfferAccepted {
            offer_id: offer_id.to_string(),
            organization_id: offer.organization_id.clone(),
            position_id: offer.position_id.clone(),
        }])
    }

    fn decline(&self, offer_id: &str) -> Decision {
        self.active()?;
        let offer = self.offer(offer_id)?;
        if offer.status == OfferStatus::Declined {
            return Ok(vec![]);
        }
        let offer = self.pending(offer_id)?;
        Ok(vec![PersonEvent::OfferDeclined {
            offer_id: offer_id.to_string(),
            organization_id: offer.organization_id.clone(),
            position_id: offer.position_id.clone(),
        }])
    }

    fn rescind(&self, offer_id: &str, reason: &str) -> Decision {
        if !self.registered {
            return Err(PersonError::NotRegistered);
        }
        match self.offer(offer_id)?.status {
            OfferStatus::Rescinded => Ok(vec![]),
            OfferStatus::Pending | OfferStatus::Accepted => Ok(vec![PersonEvent::OfferRescinded {
                offer_id: offer_id.to_string(),
                reason: reason.to_string(),
            }]),
            status => Err(PersonError::OfferNotOutstanding {
                offer_id: offer_id.to_string(),
                status: status.as_str(),
            }),
        }
    }

    fn expire(&self, offer_id: &str, at: DateTime<Utc>) -> Decision {
        if !self.registered {
            return Err(PersonError::NotRegistered);
        }
        let offer = self.offer(offer_id)?;
        if offer.status == OfferStatus::Expired {
            return Ok(vec![]);
        }
        let offer = self.pending(offer_id)?;
        if at < offer.expires_at {
            return Err(PersonError::NotYetExpired(offer_id.to_string()));
        }
        Ok(vec![PersonEvent::OfferExpired {
            offer_id: offer_id.to_string(),
        }])
    }

    fn start_employment(&self, offer_id: &str) -> Decision {
        self.active()?;
        let offer = self.offer(offer_id)?;
        if let Some(e) = &self.employment {
            return if e.offer_id == offer_id {
                Ok(vec![])
            } else {
                Err(PersonError::AlreadyEmployed)
            };
        }
        if offer.status != OfferStatus::Accepted {
            return Err(PersonError::OfferNotAccepted(offer_id.to_string()));
        }
        Ok(vec![PersonEvent::EmploymentStarted {
            offer_id: offer_id.to_string(),
            organization_id: offer.organization_id.clone(),
            position_id: offer.position_id.clone(),
        }])
    }

    fn end_employment(&self, reason: &str) -> Decision {
        if !self.registered {
            return Err(PersonError::NotRegistered);
        }
        let e = self.employment.as_ref().ok_or(PersonError::NotEmployed)?;
        Ok(vec![PersonEvent::EmploymentEnded {
            organization_id: e.organization_id.clone(),
            position_id: e.position_id.clone(),
            reason: reason.to_string(),
        }])
    }

    fn set_offer(&mut self, offer_id: &str, status: OfferStatus) {
        if let Some(o) = self.offers.get_mut(offer_id) {
            o.status = status;
        }
    }
}

impl jetsource::snapshot::Snapshot for Person {}

impl Aggregate for Person {
    const NAME: &'static str = "person";
    const CLOCK: Option<&'static str> = Some("at");
    type Command = PersonCommand;
    type Event = PersonEvent;
    type Error = PersonError;

    fn handle(&self, command: &PersonCommand) -> Decision {
        use PersonCommand::*;
        match command {
            Register { name, email } => self.register(name, email),
            ChangeName { name } => {
                self.active()?;
                let name = validate::name(name).ok_or(PersonError::InvalidName)?;
                Ok(if name == self.name {
                    vec![]
                } else {
                    vec![PersonEvent::NameChanged { name }]
                })
            }
            ChangeEmail { email } => {
                self.active()?;
                let email = validate::email(email)
                    .ok_or_else(|| PersonError::InvalidEmail(email.clone()))?;
                Ok(if email == self.email {
                    vec![]
                } else {
                    vec![PersonEvent::EmailChanged { email }]
                })
            }
            Deactivate {} => self.deactivate(),
            RecordOffer {
                offer_id,
                organization_id,
                position_id,
                expires_at,
            } => self.record_offer(offer_id, organization_id, position_id, *expires_at),
            AcceptOffer { offer_id, at } => self.accept(offer_id, *at),
            DeclineOffer { offer_id } => self.decline(offer_id),
            RescindOffer { offer_id, reason } => self.rescind(offer_id, reason),
            ExpireOffer { offer_id, at } => self.expire(offer_id, *at),
            StartEmployment { offer_id } => self.start_employment(offer_id),
            EndEmployment { reason } => self.end_employment(reason),
        }
    }

    fn apply(&mut self, event: &PersonEvent) {
        use PersonEvent::*;
        match event {
            PersonRegistered { name, email } => {
                self.registered = true;
                self.name = name.clone();
                self.email = email.clone();
            }
            NameChanged { name } => self.name = name.clone(),
            EmailChanged { email } => self.email = email.clone(),
            PersonDeactivated {} => self.deactivated = true,
            OfferReceived {
                offer_id,
                organization_id,
                position_id,
                expires_at,
            } => {
                self.offers.insert(
                    offer_id.clone(),
                    ReceivedOffer {
                        organization_id: organization_id.clone(),
                        position_id: position_id.clone(),
                        expires_at: *expires_at,
                        status: OfferStatus::Pending,
                    },
                );
            }
            OfferAccepted { offer_id, .. } => self.set_offer(offer_id, OfferStatus::Accepted),
            OfferDeclined { offer_id, .. } => self.set_offer(offer_id, OfferStatus::Declined),
            OfferRescinded { offer_id, .. } => self.set_offer(offer_id, OfferStatus::Rescinded),
            OfferExpired { offer_id } => self.set_offer(offer_id, OfferStatus::Expired),
            EmploymentStarted {
                offer_id,
                organization_id,
                position_id,
            } => {
                self.set_offer(offer_id, OfferStatus::Hired);
                self.employment = Some(Employment {
                    organization_id: organization_id.clone(),
                    position_id: position_id.clone(),
                    offer_id: offer_id.clone(),
                });
            }
            EmploymentEnded { .. } => self.employment = None,
        }
    }
}
