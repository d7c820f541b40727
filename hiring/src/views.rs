//! The `organizations` and `offers` projections and their queries.
//!
//! - `view_organizations`: `organization.<id>` = `{id, name, positions, members}`;
//!   served as `qry.organization.get {"id"}` and `qry.organization.members {"id"}`.
//! - `view_offers`: `person.<person id>` = `{person_id, offers: {<offer id>: {…}}}`;
//!   served as `qry.offers.by_person {"id"}`.

use super::organization::OrganizationEvent;
use super::person::PersonEvent;
use jetsource::aggregate::decode_event;
use jetsource::projection::query::{valid_id, Queries, QueryError, Rows};
use jetsource::projection::{ApplyError, Projection, View};
use jetsource::store::RecordedEvent;
use serde::Deserialize;
use serde_json::{json, Value};

fn failed(e: impl std::fmt::Display) -> ApplyError {
    ApplyError::Failed(e.to_string())
}

/// Organizations with their positions and members.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrganizationsView;

impl Projection for OrganizationsView {
    fn name(&self) -> &str {
        "organizations"
    }

    fn aggregates(&self) -> &[&'static str] {
        &["organization"]
    }

    fn queries(&self) -> Queries {
        Queries::on("organization")
            .query("get", get_organization)
            .query("members", members)
    }

    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError> {
        use OrganizationEvent::*;
        let id = event.aggregate_id.as_str();
        let key = format!("organization.{id}");
        let e = decode_event::<OrganizationEvent>(event).map_err(failed)?;
        let mut row = match &e {
            OrganizationRegistered { name } => {
                json!({"id": id, "name": name, "positions": {}, "members": {}})
            }
            _ => view.get(&key)?.cloned().ok_or_else(|| {
                failed(format!(
                    "organization {id} changed before it was registered"
                ))
            })?,
        };
        match e {
            OrganizationRegistered { .. } => {}
            PositionOpened { position_id, title } => {
                row["positions"][position_id] = json!({"title": title, "status": "open"});
            }
            PositionClosed { position_id } => {
                row["positions"][position_id]["status"] = json!("closed")
            }
            PositionFilled {
                position_id,
                person_id,
                ..
            } => {
                row["positions"][&position_id]["status"] = json!("filled");
                row["positions"][&position_id]["person_id"] = json!(person_id);
            }
            MemberJoined {
                person_id,
                position_id,
            } => row["members"][person_id] = json!(position_id),
            MemberRemoved {
                person_id,
                position_id,
                ..
            } => {
                if let Some(m) = row["members"].as_object_mut() {
                    m.remove(&person_id);
                }
                row["positions"][&position_id]["status"] = json!("open");
                if let Some(p) = row["positions"][&position_id].as_object_mut() {
                    p.remove("person_id");
                }
            }
            // Nothing shown changes, but the row's version follows the aggregate's.
            OfferExtended { .. } | OfferWithdrawn { .. } | OfferExpired { .. } => {}
        }
        row["version"] = json!(event.version);
        view.put(&key, row);
        Ok(())
    }
}

/// The body of the queries by id.
#[derive(Debug, Deserialize)]
struct ById {
    id: String,
}

async fn organization(rows: &Rows, id: &str) -> Result<Value, QueryError> {
    let id = valid_id("id", id)?;
    rows.get(&format!("organization.{id}"))
        .await?
        .ok_or_else(|| QueryError::not_found(format!("no organization {id}")))
}

/// `qry.organization.get`: the row plus its open positions.
async fn get_organization(rows: Rows, ById { id }: ById) -> Result<Value, QueryError> {
    let mut row = organization(&rows, &id).await?;
    let open: Vec<String> = row["positions"]
        .as_object()
        .map(|p| {
            p.iter()
                .filter(|(_, v)| v["status"] == "open")
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    row["open_positions"] = json!(open);
    Ok(row)
}

/// `qry.organization.members`.
async fn members(rows: Rows, ById { id }: ById) -> Result<Value, QueryError> {
    let row = organization(&rows, &id).await?;
    let members: Vec<Value> = row["members"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(person, position)| json!({"person_id": person, "position_id": position}))
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({"id": id, "members": members}))
}

/// Every offer a person received, with where it stands, from both sides.
#[derive(Debug, Clone, Copy, Default)]
pub struct OffersView;

impl Projection for OffersView {
    fn name(&self) -> &str {
        "offers"
    }

    fn aggregates(&self) -> &[&'static str] {
        &["organization", "person"]
    }

    fn queries(&self) -> Queries {
        Queries::on("offers").query("by_person", by_person)
    }

    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError> {
        let (person_id, offer_id, change) = match event.aggregate.as_str() {
            "organization" => match decode_event::<OrganizationEvent>(event).map_err(failed)? {
                OrganizationEvent::OfferExtended {
                    offer_id,
                    position_id,
                    person_id,
                    expires_at,
                } => {
                    let offer = json!({"organization_id": event.aggregate_id, "position_id": position_id,
                        "expires_at": expires_at, "status": "extended"});
                    (person_id, offer_id, offer)
                }
                OrganizationEvent::OfferWithdrawn {
                    offer_id,
                    person_id,
                    ..
                } => (person_id, offer_id, json!({"status": "withdrawn"})),
                OrganizationEvent::OfferExpired {
                    offer_id,
                    person_id,
                    ..
                } => (person_id, offer_id, json!({"status": "expired"})),
                OrganizationEvent::PositionFilled {
                    offer_id,
                    person_id,
                    ..
                } => (person_id, offer_id, json!({"status": "hired"})),
                _ => return Ok(()),
            },
            _ => {
                let person_id = event.aggregate_id.clone();
                match decode_event::<PersonEvent>(event).map_err(failed)? {
                    PersonEvent::OfferReceived { offer_id, .. } => {
                        (person_id, offer_id, json!({"status": "pending"}))
                    }
                    PersonEvent::OfferAccepted { offer_id, .. } => {
                        (person_id, offer_id, json!({"status": "accepted"}))
                    }
                    PersonEvent::OfferDeclined { offer_id, .. } => {
                        (person_id, offer_id, json!({"status": "declined"}))
                    }
                    PersonEvent::OfferRescinded { offer_id, .. } => {
                        (person_id, offer_id, json!({"status": "rescinded"}))
                    }
                    PersonEvent::OfferExpired { offer_id } => {
                        (person_id, offer_id, json!({"status": "expired"}))
                    }
                    _ => return Ok(()),
                }
            }
        };
        let key = format!("person.{person_id}");
        let mut row = view
            .get(&key)?
            .cloned()
            .unwrap_or_else(|| json!({"person_id": person_id, "offers": {}}));
        let offer = &mut row["offers"][&offer_id];
        if offer.is_null() {
            *offer = json!({});
        }
        for (k, v) in change.as_object().expect("an object") {
            offer[k] = v.clone();
        }
        view.put(&key, row);
        Ok(())
    }
}

/// `qry.offers.by_person`: a person's offers, empty for a person without any.
async fn by_person(rows: Rows, ById { id }: ById) -> Result<Value, QueryError> {
    let id = valid_id("id", &id)?;
    Ok(rows
        .get(&format!("person.{id}"))
        .await?
        .unwrap_or_else(|| json!({"person_id": id, "offers": {}})))
}
