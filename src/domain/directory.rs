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
