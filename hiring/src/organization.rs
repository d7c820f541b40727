//! An organization: its positions, the offers it extends, its members.

use super::validate;
use chrono::{DateTime, Utc};
use jetsource::aggregate::{Aggregate, DomainError, DomainEvent, RefusalKind, Upcaster};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an organization can be asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrganizationCommand {
    /// `cmd.organization.Register {"id","name"}`
    Register {
        /// Its name.
        name: String,
    },
    /// `cmd.organization.OpenPosition {"id","position_id","title"}`
    OpenPosition {
        /// The position.
        position_id: String,
        /// Its title.
        title: String,
    },
    /// `cmd.organization.ClosePosition {"id","position_id"}`: outstanding offers for
    /// it are withdrawn with it.
    ClosePosition {
        /// The position.
        position_id: String,
    },
    /// `cmd.organization.ExtendOffer {"id","position_id","person_id","offer_id","expires_at"}`
    ExtendOffer {
        /// For which open position.
        position_id: String,
        /// To whom.
        person_id: String,
        /// The new offer's id.
        offer_id: String,
        /// Deadline, RFC 3339, in the future.
        expires_at: DateTime<Utc>,
        /// When (stamped by the node).
        at: DateTime<Utc>,
    },
    /// `cmd.organization.WithdrawOffer {"id","offer_id","reason"}`
    WithdrawOffer {
        /// The offer.
        offer_id: String,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// `cmd.organization.ExpireOffer`: the deadline passed.
    ExpireOffer {
        /// The offer.
        offer_id: String,
        /// When (stamped by the node).
        at: DateTime<Utc>,
    },
    /// `cmd.organization.Hire {"id","offer_id"}`: fills the offer's position and
    /// makes the person a member, atomically; other offers for it are withdrawn.
    Hire {
        /// The offer the person accepted.
        offer_id: String,
    },
    /// `cmd.organization.RemoveMember {"id","person_id","reason"}`: the position opens again.
    RemoveMember {
        /// The member.
        person_id: String,
        /// Why.
        #[serde(default)]
        reason: String,
    },
}

/// What happened to an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
#[allow(missing_docs)]
pub enum OrganizationEvent {
    OrganizationRegistered {
        name: String,
    },
    PositionOpened {
        position_id: String,
        title: String,
    },
    PositionClosed {
        position_id: String,
    },
    OfferExtended {
        offer_id: String,
        position_id: String,
        person_id: String,
        expires_at: DateTime<Utc>,
    },
    OfferWithdrawn {
        offer_id: String,
        position_id: String,
        person_id: String,
        reason: String,
    },
    /// Stored as `OfferExpired` before (see [`OrganizationEvent::upcasters`]).
    OfferLapsed {
        offer_id: String,
        position_id: String,
        person_id: String,
    },
    PositionFilled {
        position_id: String,
        person_id: String,
        offer_id: String,
    },
    MemberJoined {
        person_id: String,
        position_id: String,
    },
    MemberRemoved {
        person_id: String,
        position_id: String,
        reason: String,
    },
}

/// The organization's side of an expired offer was called `OfferExpired`, the same
/// name as the person's side. A type name now means one thing across the domain
/// (what a query or filter by type needs), so it is `OfferLapsed`; the events
/// stored under the old name are read under the new one.
impl DomainEvent for OrganizationEvent {
    fn upcasters() -> &'static [Upcaster] {
        const UPCASTERS: &[Upcaster] = &[Upcaster::rename("OfferExpired", 1, "OfferLapsed", 1)];
        UPCASTERS
    }
}

/// Why an organization refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum OrganizationError {
    #[error("the organization is not registered")]
    NotRegistered,
    #[error("the organization is already registered")]
    AlreadyRegistered,
    #[error("a name or title must be 1 to 200 printable characters")]
    InvalidName,
    #[error("{0:?} is not a valid id")]
    InvalidId(String),
    #[error("no position {0}")]
    UnknownPosition(String),
    #[error("position {0} already exists")]
    DuplicatePosition(String),
    #[error("position {position_id} is {status}, not open")]
    PositionNotOpen {
        position_id: String,
        status: &'static str,
    },
    #[error("position {0} is filled: remove the member first")]
    PositionFilled(String),
    #[error("no offer {0}")]
    UnknownOffer(String),
    #[error("offer {0} already exists")]
    DuplicateOffer(String),
    #[error("person {person_id} already has offer {offer_id} outstanding for this position")]
    OfferAlreadyOutstanding { person_id: String, offer_id: String },
    #[error("offer {offer_id} is {status}, not outstanding")]
    OfferNotOutstanding {
        offer_id: String,
        status: &'static str,
    },
    #[error("an offer must expire in the future")]
    ExpiryNotInFuture,
    #[error("offer {0} has not expired yet")]
    NotYetExpired(String),
    #[error("person {0} is already a member")]
    AlreadyMember(String),
    #[error("person {0} is not a member")]
    NotMember(String),
}

impl DomainError for OrganizationError {
    fn code(&self) -> &'static str {
        use OrganizationError::*;
        match self {
            NotRegistered => "not_registered",
            AlreadyRegistered => "already_registered",
            InvalidName => "invalid_name",
            InvalidId(_) => "invalid_id",
            UnknownPosition(_) => "unknown_position",
            DuplicatePosition(_) => "duplicate_position",
            PositionNotOpen { .. } => "position_not_open",
            PositionFilled(_) => "position_filled",
            UnknownOffer(_) => "unknown_offer",
            DuplicateOffer(_) => "duplicate_offer",
            OfferAlreadyOutstanding { .. } => "offer_already_outstanding",
            OfferNotOutstanding { .. } => "offer_not_outstanding",
            ExpiryNotInFuture => "expiry_not_in_future",
            NotYetExpired(_) => "not_yet_expired",
            AlreadyMember(_) => "already_member",
            NotMember(_) => "not_member",
        }
    }

    fn kind(&self) -> RefusalKind {
        use OrganizationError::*;
        match self {
            InvalidName | InvalidId(_) | ExpiryNotInFuture => RefusalKind::InvalidValue,
            _ => RefusalKind::Rule,
        }
    }
}

/// Where a position stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
#[allow(missing_docs)]
pub enum PositionStatus {
    Open,
    Closed,
    Filled { person_id: String },
}

impl PositionStatus {
    fn as_str(&self) -> &'static str {
        match self {
            PositionStatus::Open => "open",
            PositionStatus::Closed => "closed",
            PositionStatus::Filled { .. } => "filled",
        }
    }
}

/// A position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Its title.
    pub title: String,
    /// Where it stands.
    pub status: PositionStatus,
}

/// Where an extended offer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum OfferStatus {
    Extended,
    Withdrawn,
    Expired,
    Hired,
}

impl OfferStatus {
    fn as_str(self) -> &'static str {
        match self {
            OfferStatus::Extended => "extended",
            OfferStatus::Withdrawn => "withdrawn",
            OfferStatus::Expired => "expired",
            OfferStatus::Hired => "hired",
        }
    }
}

/// An offer as the organization sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendedOffer {
    /// For which position.
    pub position_id: String,
    /// To whom.
    pub person_id: String,
    /// Deadline.
    pub expires_at: DateTime<Utc>,
    /// Where it stands.
    pub status: OfferStatus,
}

/// An organization's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// Registered at all.
    pub registered: bool,
    /// Its name.
    pub name: String,
    /// Positions by id.
    pub positions: BTreeMap<String, Position>,
    /// Offers by id.
    pub offers: BTreeMap<String, ExtendedOffer>,
    /// Members: person id -> position id.
    pub members: BTreeMap<String, String>,
}

type Decision = Result<Vec<OrganizationEvent>, OrganizationError>;

fn check_id(id: &str) -> Result<(), OrganizationError> {
    if validate::id(id) {
        Ok(())
    } else {
        Err(OrganizationError::InvalidId(id.to_string()))
    }
}

impl Organization {
    fn registered(&self) -> Result<(), OrganizationError> {
        if self.registered {
            Ok(())
        } else {
            Err(OrganizationError::NotRegistered)
        }
    }

    fn position(&self, position_id: &str) -> Result<&Position, OrganizationError> {
        self.positions
            .get(position_id)
            .ok_or_else(|| OrganizationError::UnknownPosition(position_id.to_string()))
    }

    fn open_position(&self, position_id: &str) -> Result<&Position, OrganizationError> {
        let p = self.position(position_id)?;
        match p.status {
            PositionStatus::Open => Ok(p),
            ref s => Err(OrganizationError::PositionNotOpen {
                position_id: position_id.to_string(),
                status: s.as_str(),
            }),
        }
    }

    fn offer(&self, offer_id: &str) -> Result<&ExtendedOffer, OrganizationError> {
        self.offers
            .get(offer_id)
            .ok_or_else(|| OrganizationError::UnknownOffer(offer_id.to_string()))
    }

    fn outstanding(&self, offer_id: &str) -> Result<&ExtendedOffer, OrganizationError> {
        let offer = self.offer(offer_id)?;
        match offer.status {
            OfferStatus::Extended => Ok(offer),
            s => Err(OrganizationError::OfferNotOutstanding {
                offer_id: offer_id.to_string(),
                status: s.as_str(),
            }),
        }
    }

    /// Withdraws every outstanding offer for `position_id` except `keep`.
    fn withdraw_others(
        &self,
        position_id: &str,
        keep: Option<&str>,
        reason: &str,
    ) -> Vec<OrganizationEvent> {
        self.offers
            .iter()
            .filter(|(id, o)| {
                o.position_id == position_id
                    && o.status == OfferStatus::Extended
                    && Some(id.as_str()) != keep
            })
            .map(|(id, o)| OrganizationEvent::OfferWithdrawn {
                offer_id: id.clone(),
                position_id: position_id.to_string(),
                person_id: o.person_id.clone(),
                reason: reason.to_string(),
            })
            .collect()
    }

    fn extend_offer(
        &self,
        position_id: &str,
        person_id: &str,
        offer_id: &str,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Decision {
        self.registered()?;
        check_id(person_id)?;
        check_id(offer_id)?;
        self.open_position(position_id)?;
        if self.offers.contains_key(offer_id) {
            return Err(OrganizationError::DuplicateOffer(offer_id.to_string()));
        }
        if expires_at <= at {
            return Err(OrganizationError::ExpiryNotInFuture);
        }
        if self.members.contains_key(person_id) {
            return Err(OrganizationError::AlreadyMember(person_id.to_string()));
        }
        if let Some((existing, _)) = self.offers.iter().find(|(_, o)| {
            o.position_id == position_id
                && o.person_id == person_id
                && o.status == OfferStatus::Extended
        }) {
            return Err(OrganizationError::OfferAlreadyOutstanding {
                person_id: person_id.to_string(),
                offer_id: existing.clone(),
            });
        }
        Ok(vec![OrganizationEvent::OfferExtended {
            offer_id: offer_id.to_string(),
            position_id: position_id.to_string(),
            person_id: person_id.to_string(),
            expires_at,
        }])
    }

    fn hire(&self, offer_id: &str) -> Decision {
        self.registered()?;
        let offer = self.offer(offer_id)?;
        if offer.status == OfferStatus::Hired {
            return Ok(vec![]);
        }
        let offer = self.outstanding(offer_id)?;
        self.open_position(&offer.position_id)?;
        if self.members.contains_key(&offer.person_id) {
            return Err(OrganizationError::AlreadyMember(offer.person_id.clone()));
        }
        let mut events = vec![
            OrganizationEvent::PositionFilled {
                position_id: offer.position_id.clone(),
                person_id: offer.person_id.clone(),
                offer_id: offer_id.to_string(),
            },
            OrganizationEvent::MemberJoined {
                person_id: offer.person_id.clone(),
                position_id: offer.position_id.clone(),
            },
        ];
        events.extend(self.withdraw_others(&offer.position_id, Some(offer_id), "position filled"));
        Ok(events)
    }

    fn set_offer(&mut self, offer_id: &str, status: OfferStatus) {
        if let Some(o) = self.offers.get_mut(offer_id) {
            o.status = status;
        }
    }

    fn set_position(&mut self, position_id: &str, status: PositionStatus) {
        if let Some(p) = self.positions.get_mut(position_id) {
            p.status = status;
        }
    }
}

impl jetsource::snapshot::Snapshot for Organization {}

impl Aggregate for Organization {
    const NAME: &'static str = "organization";
    const CLOCK: Option<&'static str> = Some("at");
    type Command = OrganizationCommand;
    type Event = OrganizationEvent;
    type Error = OrganizationError;

    fn handle(&self, command: &OrganizationCommand) -> Decision {
        use OrganizationCommand::*;
        use OrganizationError as E;
        match command {
            Register { name } => {
                if self.registered {
                    return Err(E::AlreadyRegistered);
                }
                let name = validate::name(name).ok_or(E::InvalidName)?;
                Ok(vec![OrganizationEvent::OrganizationRegistered { name }])
            }
            OpenPosition { position_id, title } => {
                self.registered()?;
                check_id(position_id)?;
                let title = validate::name(title).ok_or(E::InvalidName)?;
                if self.positions.contains_key(position_id) {
                    return Err(E::DuplicatePosition(position_id.clone()));
                }
                Ok(vec![OrganizationEvent::PositionOpened {
                    position_id: position_id.clone(),
                    title,
                }])
            }
            ClosePosition { position_id } => {
                self.registered()?;
                match &self.position(position_id)?.status {
                    PositionStatus::Closed => Ok(vec![]),
                    PositionStatus::Filled { .. } => Err(E::PositionFilled(position_id.clone())),
                    PositionStatus::Open => {
                        let mut events = self.withdraw_others(position_id, None, "position closed");
                        events.push(OrganizationEvent::PositionClosed {
                            position_id: position_id.clone(),
                        });
                        Ok(events)
                    }
                }
            }
            ExtendOffer {
                position_id,
                person_id,
                offer_id,
                expires_at,
                at,
            } => self.extend_offer(position_id, person_id, offer_id, *expires_at, *at),
            WithdrawOffer { offer_id, reason } => {
                self.registered()?;
                if self.offer(offer_id)?.status == OfferStatus::Withdrawn {
                    return Ok(vec![]);
                }
                let offer = self.outstanding(offer_id)?;
                Ok(vec![OrganizationEvent::OfferWithdrawn {
                    offer_id: offer_id.clone(),
                    position_id: offer.position_id.clone(),
                    person_id: offer.person_id.clone(),
                    reason: reason.clone(),
                }])
            }
            ExpireOffer { offer_id, at } => {
                self.registered()?;
                if self.offer(offer_id)?.status == OfferStatus::Expired {
                    return Ok(vec![]);
                }
                let offer = self.outstanding(offer_id)?;
                if *at < offer.expires_at {
                    return Err(E::NotYetExpired(offer_id.clone()));
                }
                Ok(vec![OrganizationEvent::OfferLapsed {
                    offer_id: offer_id.clone(),
                    position_id: offer.position_id.clone(),
                    person_id: offer.person_id.clone(),
                }])
            }
            Hire { offer_id } => self.hire(offer_id),
            RemoveMember { person_id, reason } => {
                self.registered()?;
                let position_id = self
                    .members
                    .get(person_id)
                    .ok_or_else(|| E::NotMember(person_id.clone()))?;
                Ok(vec![OrganizationEvent::MemberRemoved {
                    person_id: person_id.clone(),
                    position_id: position_id.clone(),
                    reason: reason.clone(),
                }])
            }
        }
    }

    fn apply(&mut self, event: &OrganizationEvent) {
        use OrganizationEvent::*;
        match event {
            OrganizationRegistered { name } => {
                self.registered = true;
                self.name = name.clone();
            }
            PositionOpened { position_id, title } => {
                self.positions.insert(
                    position_id.clone(),
                    Position {
                        title: title.clone(),
                        status: PositionStatus::Open,
                    },
                );
            }
            PositionClosed { position_id } => {
                self.set_position(position_id, PositionStatus::Closed)
            }
            OfferExtended {
                offer_id,
                position_id,
                person_id,
                expires_at,
            } => {
                self.offers.insert(
                    offer_id.clone(),
                    ExtendedOffer {
                        position_id: position_id.clone(),
                        person_id: person_id.clone(),
                        expires_at: *expires_at,
                        status: OfferStatus::Extended,
                    },
                );
            }
            OfferWithdrawn { offer_id, .. } => self.set_offer(offer_id, OfferStatus::Withdrawn),
            OfferLapsed { offer_id, .. } => self.set_offer(offer_id, OfferStatus::Expired),
            PositionFilled {
                position_id,
                person_id,
                offer_id,
            } => {
                self.set_offer(offer_id, OfferStatus::Hired);
                self.set_position(
                    position_id,
                    PositionStatus::Filled {
                        person_id: person_id.clone(),
                    },
                );
            }
            MemberJoined {
                person_id,
                position_id,
            } => {
                self.members.insert(person_id.clone(), position_id.clone());
            }
            MemberRemoved {
                person_id,
                position_id,
                ..
            } => {
                self.members.remove(person_id);
                self.set_position(position_id, PositionStatus::Open);
            }
        }
    }
}
