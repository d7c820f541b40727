//! The `organizations` and `offers` projections and their queries.
//!
//! - `view_organizations`: `organization.<id>` = `{id, name, positions, members}`;
//!   served as `qry.organization.get {"id"}` and `qry.organization.members {"id"}`.
//! - `view_offers`: `person.<person id>` = `{person_id, offers: {<offer id>: {…}}}`;
//!   served as `qry.offers.by_person {"id"}`.

use super::organization::OrganizationEvent;
use super::person::PersonEvent;
use crate::aggregate::decode_event;
use crate::node::views::id_field;
use crate::node::{Rejection, Rows, Status, ViewQueries};
use crate::projection::{ApplyError, Projection, View};
use crate::store::RecordedEvent;
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};

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
            OfferExtended { .. } | OfferWithdrawn { .. } | OfferExpired { .. } => return Ok(()),
        }
        row["version"] = json!(event.version);
        view.put(&key, row);
        Ok(())
    }
}

/// `qry.organization.get` and `qry.organization.members` over [`OrganizationsView`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OrganizationQueries;

impl ViewQueries for OrganizationQueries {
    fn view(&self) -> &'static str {
        "organization"
    }
    fn projection(&self) -> &'static str {
        "organizations"
    }
    fn queries(&self) -> &[&'static str] {
        &["get", "members"]
    }
    fn answer<'a>(
        &'a self,
        rows: &'a Rows,
        query: &'a str,
        fields: Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, Rejection>> {
        Box::pin(async move {
            let id = id_field(&fields, "id")?;
            let row = rows
                .get(&format!("organization.{id}"))
                .await?
                .ok_or_else(|| {
                    Rejection::new(
                        Status::NotFound,
                        "not_found",
                        format!("no organization {id}"),
                    )
                })?;
            if query == "get" {
                let open: Vec<&String> = row["positions"]
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .filter(|(_, v)| v["status"] == "open")
                            .map(|(k, _)| k)
                            .collect()
                    })
                    .unwrap_or_default();
                let mut row = row.clone();
                row["open_positions"] = json!(open);
                return Ok(row);
            }
            let members: Vec<Value> = row["members"]
                .as_object()
                .map(|m| m.iter().map(|(person, position)| json!({"person_id": person, "position_id": position})).collect())
                .unwrap_or_default();
            Ok(json!({"id": id, "members": members}))
        })
    }
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

/// `qry.offers.by_person {"id"}` over [`OffersView`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OfferQueries;

impl ViewQueries for OfferQueries {
    fn view(&self) -> &'static str {
        "offers"
    }
    fn projection(&self) -> &'static str {
        "offers"
    }
    fn queries(&self) -> &[&'static str] {
        &["by_person"]
    }
    fn answer<'a>(
        &'a self,
        rows: &'a Rows,
        _query: &'a str,
        fields: Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, Rejection>> {
        Box::pin(async move {
            let id = id_field(&fields, "id")?;
            Ok(rows
                .get(&format!("person.{id}"))
                .await?
                .unwrap_or_else(|| json!({"person_id": id, "offers": {}})))
        })
    }
}
