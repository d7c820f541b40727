//! The `person_directory` projection: people by id and by email.
//!
//! Rows in `view_person_directory`: `person.<id>` holds
//! `{id, name, email, active, employer}`; `email.<hex of the email>` holds `{id}`
//! (KV keys cannot hold `@`, so the email is hex-encoded).

use super::person::PersonEvent;
use crate::aggregate::decode_event;
use crate::projection::{ApplyError, Projection, View};
use crate::store::RecordedEvent;
use serde_json::{json, Value};

/// People by id and by email.
#[derive(Debug, Clone, Copy, Default)]
pub struct PersonDirectory;

/// Longest email a query looks up (RFC 5321's limit on a path).
const MAX_EMAIL_BYTES: usize = 254;

/// The row key of a person.
pub fn person_key(id: &str) -> String {
    format!("person.{id}")
}

/// The row key of an email address (lower-cased, hex-encoded).
///
/// ```
/// assert_eq!(jetsource::domain::directory::email_key("A@b.co"), "email.6140622e636f");
/// ```
pub fn email_key(email: &str) -> String {
    let hex: String = email
        .to_lowercase()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("email.{hex}")
}

fn person(view: &View, id: &str) -> Result<Value, ApplyError> {
    view.get(&person_key(id))?
        .cloned()
        .ok_or_else(|| ApplyError::Failed(format!("person {id} changed before it was registered")))
}

impl Projection for PersonDirectory {
    fn name(&self) -> &str {
        "person_directory"
    }

    fn aggregates(&self) -> &[&'static str] {
        &["person"]
    }

    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError> {
        let id = event.aggregate_id.as_str();
        let e =
            decode_event::<PersonEvent>(event).map_err(|m| ApplyError::Failed(m.to_string()))?;
        let key = person_key(id);
        let mut row = match &e {
            PersonEvent::PersonRegistered { name, email } => {
                view.put(&email_key(email), json!({"id": id}));
                json!({"id": id, "name": name, "email": email, "active": true, "employer": null})
            }
            PersonEvent::NameChanged { name } => {
                let mut row = person(view, id)?;
                row["name"] = json!(name);
                row
            }
            PersonEvent::EmailChanged { email } => {
                let mut row = person(view, id)?;
                if let Some(old) = row["email"].as_str() {
                    let old_key = email_key(old);
                    let owned = view.get(&old_key)?.is_some_and(|r| r["id"] == id);
                    if owned {
                        view.delete(&old_key);
                    }
                }
                view.put(&email_key(email), json!({"id": id}));
                row["email"] = json!(email);
                row
            }
            PersonEvent::PersonDeactivated {} => {
                let mut row = person(view, id)?;
                row["active"] = json!(false);
                row
            }
            PersonEvent::EmploymentStarted {
                organization_id, ..
            } => {
                let mut row = person(view, id)?;
                row["employer"] = json!(organization_id);
                row
            }
            PersonEvent::EmploymentEnded { .. } => {
                let mut row = person(view, id)?;
                row["employer"] = Value::Null;
                row
            }
            _ => return Ok(()),
        };
        row["version"] = json!(event.version);
        view.put(&key, row);
        Ok(())
    }
}

/// The directory's queries: `qry.person.get {"id"}`, `qry.person.by_email
/// {"email"}` and `qry.person.list {"limit", "after"}` (pages in the order rows
/// were last written, each costing its own size whatever the directory's; `after`
/// is the `next` cursor of the previous page, absent or 0 for the first).
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectoryQueries;

/// Most rows one `list` page returns.
pub const MAX_PAGE: usize = 500;

impl crate::node::ViewQueries for DirectoryQueries {
    fn view(&self) -> &'static str {
        "person"
    }

    fn projection(&self) -> &'static str {
        "person_directory"
    }

    fn queries(&self) -> &[&'static str] {
        &["get", "by_email", "list"]
    }

    fn answer<'a>(
        &'a self,
        rows: &'a crate::node::Rows,
        query: &'a str,
        fields: serde_json::Map<String, Value>,
    ) -> futures::future::BoxFuture<'a, Result<Value, crate::node::Rejection>> {
        use crate::node::views::string_field;
        use crate::node::{Rejection, Status};
        Box::pin(async move {
            if query == "get" {
                let id = crate::node::views::id_field(&fields, "id")?;
                return rows.get(&person_key(id)).await?.ok_or_else(|| {
                    Rejection::new(Status::NotFound, "not_found", format!("no person {id}"))
                });
            }
            if query == "by_email" {
                let email = string_field(&fields, "email")?;
                if email.len() > MAX_EMAIL_BYTES {
                    return Err(Rejection::new(
                        Status::Invalid,
                        "invalid_email",
                        format!(
                            "\"email\" is {} bytes (at most {MAX_EMAIL_BYTES})",
                            email.len()
                        ),
                    ));
                }
                let id = rows
                    .get(&email_key(email))
                    .await?
                    .and_then(|r| r["id"].as_str().map(str::to_string));
                let person = match id {
                    Some(id) => rows.get(&person_key(&id)).await?,
                    None => None,
                };
                return person.ok_or_else(|| {
                    Rejection::new(
                        Status::NotFound,
                        "not_found",
                        format!("no person with email {email}"),
                    )
                });
            }
            let number = |name: &str, default: u64| match fields.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_u64().ok_or_else(|| {
                    Rejection::new(
                        Status::Malformed,
                        "malformed",
                        format!("\"{name}\" must be a non-negative integer (a page's \"next\")"),
                    )
                }),
            };
            let limit = (number("limit", 50)? as usize).clamp(1, MAX_PAGE);
            let after = number("after", 0)?;
            let page = rows.page("person.", after, limit).await?;
            let people: Vec<Value> = page.rows.into_iter().map(|(_, v)| v).collect();
            let next = page.next;
            Ok(json!({"people": people, "next": next}))
        })
    }
}
