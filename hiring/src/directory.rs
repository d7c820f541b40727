//! The `person_directory` projection: people by id and by email.
//!
//! Rows in `view_person_directory`: `person.<id>` holds
//! `{id, name, email, active, employer}`; `email.<hex of the email>` holds `{id}`
//! (KV keys cannot hold `@`, so the email is hex-encoded).
//!
//! Queries: `qry.person.get {"id"}`, `qry.person.by_email {"email"}` and
//! `qry.person.list {"limit", "after"}` (`{"people": [...], "next"}`).

use super::person::PersonEvent;
use jetsource::aggregate::decode_event;
use jetsource::projection::query::{valid_id, Queries, QueryError, Rows};
use jetsource::projection::{ApplyError, Projection, View};
use jetsource::store::RecordedEvent;
use serde::{Deserialize, Serialize};
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
/// assert_eq!(hiring::directory::email_key("A@b.co"), "email.6140622e636f");
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

    fn queries(&self) -> Queries {
        Queries::on("person")
            .query("get", get)
            .query("by_email", by_email)
            .query("list", list)
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
            // Offers change nothing shown here, but the row says which version of
            // the person it reflects, so a client can send it as the expected version.
            _ => person(view, id)?,
        };
        row["version"] = json!(event.version);
        view.put(&key, row);
        Ok(())
    }
}

/// Most rows one `list` page returns.
pub const MAX_PAGE: u64 = 500;

/// The body of `qry.person.get`.
#[derive(Debug, Deserialize)]
struct ById {
    id: String,
}

/// The body of `qry.person.by_email`.
#[derive(Debug, Deserialize)]
struct ByEmail {
    email: String,
}

/// The body of `qry.person.list`: `after` is the previous page's `next` (absent or
/// 0 for the first page).
#[derive(Debug, Default, Deserialize)]
struct List {
    limit: Option<u64>,
    after: Option<u64>,
}

/// A page of `qry.person.list`.
#[derive(Debug, Serialize)]
struct People {
    people: Vec<Value>,
    next: Option<u64>,
}

async fn get(rows: Rows, ById { id }: ById) -> Result<Value, QueryError> {
    let id = valid_id("id", &id)?;
    rows.get(&person_key(id))
        .await?
        .ok_or_else(|| QueryError::not_found(format!("no person {id}")))
}

async fn by_email(rows: Rows, ByEmail { email }: ByEmail) -> Result<Value, QueryError> {
    if email.len() > MAX_EMAIL_BYTES {
        return Err(QueryError::invalid(
            "invalid_email",
            format!(
                "\"email\" is {} bytes (at most {MAX_EMAIL_BYTES})",
                email.len()
            ),
        ));
    }
    let id = rows
        .get(&email_key(&email))
        .await?
        .and_then(|r| r["id"].as_str().map(str::to_string));
    let person = match id {
        Some(id) => rows.get(&person_key(&id)).await?,
        None => None,
    };
    person.ok_or_else(|| QueryError::not_found(format!("no person with email {email}")))
}

/// Pages in the order rows were last written, each costing its own size whatever
/// the directory's.
async fn list(rows: Rows, List { limit, after }: List) -> Result<People, QueryError> {
    let limit = limit.unwrap_or(50).clamp(1, MAX_PAGE) as usize;
    let page = rows.page("person.", after.unwrap_or(0), limit).await?;
    Ok(People {
        people: page.rows.into_iter().map(|(_, v)| v).collect(),
        next: page.next,
    })
}
