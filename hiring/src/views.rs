//! The `organizations` and `offers` projections and their queries.
//!
//! - `view_organizations`: `organization.<id>` = `{id, name, version}`, one row per
//!   position and one per member beside it (see [`OrganizationsView`]); served as
//!   `qry.organization.get {"id"}`, and paged as `qry.organization.positions` and
//!   `qry.organization.members` `{"id", "limit", "after"}`.
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

/// Organizations with their positions and members, one row each, so an event
/// writes a row of its own size however many positions the organization has:
/// `organization.<id>` = `{id, name, version}`,
/// `organization.<id>.position.<position id>` = `{position_id, title, status, person_id?}`,
/// `organization.<id>.member.<person id>` = `{person_id, position_id}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrganizationsView;

fn organization_key(id: &str) -> String {
    format!("organization.{id}")
}

fn position_key(id: &str, position_id: &str) -> String {
    format!("organization.{id}.position.{position_id}")
}

fn member_key(id: &str, person_id: &str) -> String {
    format!("organization.{id}.member.{person_id}")
}

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
            .query("positions", positions)
            .query("members", members)
    }

    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError> {
        use OrganizationEvent::*;
        let id = event.aggregate_id.as_str();
        let key = organization_key(id);
        let e = decode_event::<OrganizationEvent>(event).map_err(failed)?;
        let mut row = match &e {
            OrganizationRegistered { name } => json!({"id": id, "name": name}),
            _ => view.get(&key)?.cloned().ok_or_else(|| {
                failed(format!(
                    "organization {id} changed before it was registered"
                ))
            })?,
        };
        match e {
            OrganizationRegistered { .. } => {}
            PositionOpened { position_id, title } => view.put(
                &position_key(id, &position_id),
                json!({"position_id": position_id, "title": title, "status": "open"}),
            ),
            PositionClosed { position_id } => {
                update_position(view, id, &position_id, |p| p["status"] = json!("closed"))?
            }
            PositionFilled {
                position_id,
                person_id,
                ..
            } => update_position(view, id, &position_id, |p| {
                p["status"] = json!("filled");
                p["person_id"] = json!(person_id);
            })?,
            MemberJoined {
                person_id,
                position_id,
            } => view.put(
                &member_key(id, &person_id),
                json!({"person_id": person_id, "position_id": position_id}),
            ),
            MemberRemoved {
                person_id,
                position_id,
                ..
            } => {
                view.delete(&member_key(id, &person_id));
                update_position(view, id, &position_id, |p| {
                    p["status"] = json!("open");
                    if let Some(p) = p.as_object_mut() {
                        p.remove("person_id");
                    }
                })?;
            }
            // Nothing shown changes, but the row's version follows the aggregate's.
            OfferExtended { .. } | OfferWithdrawn { .. } | OfferLapsed { .. } => {}
        }
        row["version"] = json!(event.version);
        view.put(&key, row);
        Ok(())
    }
}

/// Changes a position's row, which the event that opened it wrote.
fn update_position(
    view: &mut View,
    id: &str,
    position_id: &str,
    change: impl FnOnce(&mut Value),
) -> Result<(), ApplyError> {
    let key = position_key(id, position_id);
    let mut position = view.get(&key)?.cloned().ok_or_else(|| {
        failed(format!(
            "position {position_id} of organization {id} changed before it was opened"
        ))
    })?;
    change(&mut position);
    view.put(&key, position);
    Ok(())
}

/// Most positions or members one page returns.
pub const MAX_PAGE: u64 = 500;

/// The body of the queries by id.
#[derive(Debug, Deserialize)]
struct ById {
    id: String,
}

/// The body of `qry.organization.positions` and `qry.organization.members`:
/// `after` is the previous page's `next` (absent or 0 for the first page).
#[derive(Debug, Deserialize)]
struct PageOf {
    id: String,
    limit: Option<u64>,
    after: Option<u64>,
}

async fn organization(rows: &Rows, id: &str) -> Result<Value, QueryError> {
    rows.get(&organization_key(id))
        .await?
        .ok_or_else(|| QueryError::not_found(format!("no organization {id}")))
}

/// One page of `organization.<id>.<kind>.` rows and the cursor after it.
async fn page_of(
    rows: &Rows,
    id: &str,
    kind: &str,
    limit: Option<u64>,
    after: Option<u64>,
) -> Result<(Vec<Value>, Option<u64>), QueryError> {
    let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE) as usize;
    let prefix = format!("organization.{id}.{kind}.");
    let page = rows.page(&prefix, after.unwrap_or(0), limit).await?;
    Ok((page.rows.into_iter().map(|(_, v)| v).collect(), page.next))
}

/// `qry.organization.get`: the organization with the first page of its positions
/// (by id, and the open ones listed) and of its members (person id -> position id);
/// `positions_next` / `members_next` say where `qry.organization.positions` /
/// `members` go on when there are more.
async fn get_organization(rows: Rows, ById { id }: ById) -> Result<Value, QueryError> {
    let id = valid_id("id", &id)?;
    let mut row = organization(&rows, id).await?;
    let (positions, positions_next) = page_of(&rows, id, "position", None, None).await?;
    let (members, members_next) = page_of(&rows, id, "member", None, None).await?;
    let mut open: Vec<&str> = positions
        .iter()
        .filter(|p| p["status"] == "open")
        .filter_map(|p| p["position_id"].as_str())
        .collect();
    open.sort_unstable();
    row["open_positions"] = json!(open);
    let by_id =
        |rows: &[Value], key: &str, value: fn(&Value) -> Value| -> serde_json::Map<String, Value> {
            rows.iter()
                .filter_map(|r| Some((r[key].as_str()?.to_string(), value(r))))
                .collect()
        };
    row["positions"] = json!(by_id(&positions, "position_id", |p| {
        let mut p = p.clone();
        if let Some(p) = p.as_object_mut() {
            p.remove("position_id");
        }
        p
    }));
    row["members"] = json!(by_id(&members, "person_id", |m| m["position_id"].clone()));
    row["positions_next"] = json!(positions_next);
    row["members_next"] = json!(members_next);
    Ok(row)
}

/// `qry.organization.positions`: a page of positions, `{id, positions: [...], next}`.
async fn positions(rows: Rows, PageOf { id, limit, after }: PageOf) -> Result<Value, QueryError> {
    let id = valid_id("id", &id)?;
    organization(&rows, id).await?;
    let (positions, next) = page_of(&rows, id, "position", limit, after).await?;
    Ok(json!({"id": id, "positions": positions, "next": next}))
}

/// `qry.organization.members`: a page of members,
/// `{id, members: [{person_id, position_id}], next}`.
async fn members(rows: Rows, PageOf { id, limit, after }: PageOf) -> Result<Value, QueryError> {
    let id = valid_id("id", &id)?;
    organization(&rows, id).await?;
    let (members, next) = page_of(&rows, id, "member", limit, after).await?;
    Ok(json!({"id": id, "members": members, "next": next}))
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
                OrganizationEvent::OfferLapsed {
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
