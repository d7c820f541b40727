//! The `EVENTS` stream: ensured idempotently, never silently changed.

use super::StoreConfig;
use crate::error::Error;
use serde_json::{json, Value};
use std::fmt;

/// What went wrong ensuring the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamErrorKind {
    /// The JetStream API did not answer or answered with an error.
    Request,
    /// A stream of that name exists with a configuration jetsource cannot use.
    Incompatible {
        /// The stream's name.
        stream: String,
        /// One line per differing setting: `name: found X, need Y`.
        differences: Vec<String>,
    },
}

impl fmt::Display for StreamErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamErrorKind::Request => write!(f, "JetStream stream request failed"),
            StreamErrorKind::Incompatible {
                stream,
                differences,
            } => write!(
                f,
                "stream {stream} exists with an incompatible configuration (left unchanged): {}",
                differences.join("; ")
            ),
        }
    }
}

/// Error of [`ensure_stream`](super::EventStore::open).
pub type StreamError = Error<StreamErrorKind>;

/// The configuration DESIGN requires: file storage, atomic batches, direct get, no
/// deletes, no limits of any kind (events are forever), and the duplicate window
/// that idempotency rests on.
pub(crate) fn desired_config(cfg: &StoreConfig) -> Value {
    json!({
        "name": cfg.stream,
        "subjects": [cfg.subjects().all_events()],
        "storage": "file",
        "retention": "limits",
        "discard": "old",
        "num_replicas": cfg.replicas,
        "allow_atomic": true,
        "allow_direct": true,
        "deny_delete": true,
        "deny_purge": false,
        "max_age": 0,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "allow_msg_ttl": false,
        "duplicate_window": cfg.duplicate_window.as_nanos() as u64,
    })
}

/// Lists every setting in which `found` differs from what jetsource needs.
pub(crate) fn differences(found: &Value, desired: &Value) -> Vec<String> {
    const CHECKED: [&str; 12] = [
        "subjects",
        "storage",
        "retention",
        "num_replicas",
        "allow_atomic",
        "allow_direct",
        "deny_delete",
        "max_age",
        "max_msgs",
        "max_bytes",
        "max_msgs_per_subject",
        "allow_msg_ttl",
    ];
    let defaults = json!({"allow_atomic": false, "allow_direct": false, "deny_delete": false,
        "allow_msg_ttl": false, "max_age": 0, "max_msgs": -1, "max_bytes": -1,
        "max_msgs_per_subject": -1, "num_replicas": 1});
    CHECKED
        .iter()
        .filter_map(|key| {
            let want = &desired[key];
            let got = match &found[key] {
                Value::Null => &defaults[key],
                v => v,
            };
            (got != want).then(|| format!("{key}: found {got}, need {want}"))
        })
        .collect()
}

pub(crate) async fn ensure(
    js: &async_nats::jetstream::Context,
    cfg: &StoreConfig,
) -> Result<(), StreamError> {
    let desired = desired_config(cfg);
    let info: Value = js
        .request(format!("STREAM.INFO.{}", cfg.stream), &json!({}))
        .await
        .map_err(|e| StreamError::with_source(StreamErrorKind::Request, e))?;
    let config = match api_error(&info) {
        None => info["config"].clone(),
        Some((10059, _)) => {
            let created: Value = js
                .request(format!("STREAM.CREATE.{}", cfg.stream), &desired)
                .await
                .map_err(|e| StreamError::with_source(StreamErrorKind::Request, e))?;
            match api_error(&created) {
                None => return Ok(()),
                // Lost a race with another process creating it: check what it made.
                Some((10058, _)) => {
                    let info: Value = js
                        .request(format!("STREAM.INFO.{}", cfg.stream), &json!({}))
                        .await
                        .map_err(|e| StreamError::with_source(StreamErrorKind::Request, e))?;
                    info["config"].clone()
                }
                Some((_, description)) => {
                    return Err(StreamError::with_source(
                        StreamErrorKind::Request,
                        description,
                    ))
                }
            }
        }
        Some((_, description)) => {
            return Err(StreamError::with_source(
                StreamErrorKind::Request,
                description,
            ))
        }
    };
    let differences = differences(&config, &desired);
    if differences.is_empty() {
        widen_duplicate_window(js, cfg, config, &desired).await
    } else {
        Err(StreamError::new(StreamErrorKind::Incompatible {
            stream: cfg.stream.clone(),
            differences,
        }))
    }
}

/// A stream made with a shorter duplicate window than idempotency needs gets the
/// longer one (a setting the server changes in place); a longer one is kept.
async fn widen_duplicate_window(
    js: &async_nats::jetstream::Context,
    cfg: &StoreConfig,
    mut config: Value,
    desired: &Value,
) -> Result<(), StreamError> {
    let found = config["duplicate_window"].as_u64().unwrap_or(0);
    let need = desired["duplicate_window"].as_u64().unwrap_or(0);
    if found >= need {
        return Ok(());
    }
    config["duplicate_window"] = json!(need);
    update(js, &cfg.stream, &config)
        .await
        .map_err(|e| StreamError::with_source(StreamErrorKind::Request, e))?;
    tracing::info!(stream = %cfg.stream, from_ns = found, to_ns = need, "duplicate window widened");
    Ok(())
}

/// Replaces stream `name`'s configuration with `config` (`STREAM.UPDATE`), for
/// the settings the server changes in place; the error is the server's words.
pub(crate) async fn update(
    js: &async_nats::jetstream::Context,
    name: &str,
    config: &Value,
) -> Result<(), String> {
    let updated: Value = js
        .request(format!("STREAM.UPDATE.{name}"), config)
        .await
        .map_err(|e| e.to_string())?;
    match api_error(&updated) {
        None => Ok(()),
        Some((_, description)) => Err(description),
    }
}

/// `(err_code, description)` of a JetStream API error response.
pub(crate) fn api_error(v: &Value) -> Option<(u64, String)> {
    let e = v.get("error")?;
    Some((
        e["err_code"].as_u64().unwrap_or(0),
        e["description"]
            .as_str()
            .unwrap_or("unknown error")
            .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_on_the_event_stream_is_a_difference() {
        let cfg = StoreConfig::default();
        let desired = desired_config(&cfg);
        assert!(differences(&desired, &desired).is_empty());
        let mut found = desired.clone();
        found["max_age"] = json!(3_600_000_000_000u64);
        found.as_object_mut().unwrap().remove("allow_atomic");
        let d = differences(&found, &desired);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("allow_atomic: found false")));
        assert!(d.iter().any(|l| l.starts_with("max_age")));
    }
}
