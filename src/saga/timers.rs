//! Durable deadlines as JetStream message schedules (ADR-51), in stream `TIMERS`.
//!
//! Setting deadline `expiry` of hiring instance `o1` stores one message on
//! `timers.hiring.o1.expiry` with `Nats-Schedule: @at <time>` and
//! `Nats-Schedule-Target: timers.fired.hiring.o1.expiry`. The server publishes the
//! target at that time, on its own clock, and removes the schedule; a deadline that
//! passes while the server is down fires when it is back. Setting it again replaces
//! it (one schedule per subject); cancelling purges the subject. The saga runner
//! reads `timers.fired.<saga>.>` with the durable consumer `saga_<name>_timers` and
//! deletes each fired message once handled.

use crate::consumer::{js_err, JetStreamError};
use crate::store::EventStore;
use async_nats::jetstream::{self, consumer::pull};
use chrono::{DateTime, SecondsFormat, Utc};

/// The stream holding schedules and fired deadlines.
pub const STREAM: &str = "TIMERS";

fn schedule_subject(store: &EventStore, saga: &str, instance: &str, name: &str) -> String {
    format!(
        "{}timers.{saga}.{instance}.{name}",
        store.subjects().prefix()
    )
}

fn fired_subject(store: &EventStore, saga: &str, instance: &str, name: &str) -> String {
    format!(
        "{}timers.fired.{saga}.{instance}.{name}",
        store.subjects().prefix()
    )
}

/// Ensures stream `TIMERS` (`timers.>`, message schedules allowed).
pub(crate) async fn ensure(
    store: &EventStore,
) -> Result<jetstream::stream::Stream, JetStreamError> {
    store
        .jetstream()
        .get_or_create_stream(jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{}timers.>", store.subjects().prefix())],
            storage: jetstream::stream::StorageType::File,
            num_replicas: store.config().replicas,
            allow_message_schedules: true,
            ..Default::default()
        })
        .await
        .map_err(js_err)
}

/// Sets (or moves) deadline `name` of `saga`'s `instance` to `at`.
pub(crate) async fn set(
    store: &EventStore,
    saga: &str,
    instance: &str,
    name: &str,
    at: DateTime<Utc>,
) -> Result<(), JetStreamError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "Nats-Schedule",
        format!("@at {}", at.to_rfc3339_opts(SecondsFormat::Millis, true)).as_str(),
    );
    headers.insert(
        "Nats-Schedule-Target",
        fired_subject(store, saga, instance, name).as_str(),
    );
    let body = serde_json::json!({"saga": saga, "instance": instance, "deadline": name, "at": at});
    store
        .jetstream()
        .publish_with_headers(
            schedule_subject(store, saga, instance, name),
            headers,
            body.to_string().into(),
        )
        .await
        .map_err(js_err)?
        .await
        .map_err(js_err)?;
    Ok(())
}

/// Cancels deadline `name` of `saga`'s `instance` (nothing happens if it is not set).
pub(crate) async fn cancel(
    stream: &jetstream::stream::Stream,
    store: &EventStore,
    saga: &str,
    instance: &str,
    name: &str,
) -> Result<(), JetStreamError> {
    stream
        .purge()
        .filter(schedule_subject(store, saga, instance, name))
        .await
        .map_err(js_err)?;
    Ok(())
}

/// The consumer of `saga`'s fired deadlines.
pub(crate) async fn consumer(
    stream: &jetstream::stream::Stream,
    store: &EventStore,
    saga: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, JetStreamError> {
    let name = format!("saga_{saga}_timers");
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: format!("{}timers.fired.{saga}.>", store.subjects().prefix()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: std::time::Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await
        .map_err(js_err)
}

/// `(instance, deadline)` from a fired subject.
pub(crate) fn parse_fired<'a>(
    store: &EventStore,
    saga: &str,
    subject: &'a str,
) -> Option<(&'a str, &'a str)> {
    let rest = subject
        .strip_prefix(store.subjects().prefix())?
        .strip_prefix("timers.fired.")?
        .strip_prefix(saga)?
        .strip_prefix('.')?;
    let (instance, name) = rest.split_once('.')?;
    (!name.contains('.')).then_some((instance, name))
}
