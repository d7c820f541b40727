//! Every metric jetsource records. Names and labels are part of the operator's
//! contract (`dev/grafana/` and `dev/prometheus/` use them).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `jetsource_commands_total` | counter | `aggregate`, `command`, `status` |
//! | `jetsource_command_duration_seconds` | histogram | `aggregate`, `command` |
//! | `jetsource_queries_total` | counter | `view`, `query`, `status` |
//! | `jetsource_query_duration_seconds` | histogram | `view`, `query` |
//! | `jetsource_min_seq_waits_total` | counter | `view`, `outcome` (`reached`, `timed_out`) |
//! | `jetsource_min_seq_wait_seconds` | histogram | `view` |
//! | `jetsource_appends_total` | counter | |
//! | `jetsource_append_publishes_total` | counter | (one per single publish or atomic batch) |
//! | `jetsource_append_batch_events` | histogram | (events per publish) |
//! | `jetsource_append_publish_seconds` | histogram | |
//! | `jetsource_group_commit_batch_appends` | histogram | (appends sharing one atomic batch) |
//! | `jetsource_group_commit_splits_total` | counter | (batches split to isolate a conflict) |
//! | `jetsource_consumer_events_applied_total` | counter | `consumer` |
//! | `jetsource_consumer_redeliveries_total` | counter | `consumer` |
//! | `jetsource_consumer_parked_total` | counter | `consumer` (events this process parked) |
//! | `jetsource_consumer_parked` | gauge | `consumer` (events in `DLQ` now) |
//! | `jetsource_consumer_lag_events` | gauge | `consumer` |
//! | `jetsource_consumer_lag_seconds` | gauge | `consumer` |
//! | `jetsource_consumer_checkpoint` | gauge | `consumer` |
//! | `jetsource_consumer_active` | gauge | `consumer` (1 active, 0 standby) |
//! | `jetsource_saga_instances` | gauge | `saga`, `stage` (`finished:<outcome>` once finished) |
//! | `jetsource_saga_pending_deadlines` | gauge | `saga` |
//!
//! Every process also reports `jetsource_process_info{process}` = 1.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics::{SharedString, Unit};
use std::time::Duration;

/// Names the metrics and says what they mean (shown as `# HELP`).
pub(super) fn describe() {
    describe_counter!("jetsource_commands_total", "Commands answered, by status");
    describe_histogram!(
        "jetsource_command_duration_seconds",
        Unit::Seconds,
        "Time from a command's arrival to its reply"
    );
    describe_counter!("jetsource_queries_total", "Queries answered, by status");
    describe_histogram!(
        "jetsource_query_duration_seconds",
        Unit::Seconds,
        "Time from a query's arrival to its reply"
    );
    describe_counter!(
        "jetsource_min_seq_waits_total",
        "Queries that waited for their view to reach Jetsource-Min-Seq"
    );
    describe_histogram!(
        "jetsource_min_seq_wait_seconds",
        Unit::Seconds,
        "How long a query waited for Jetsource-Min-Seq"
    );
    describe_counter!("jetsource_appends_total", "Aggregate appends stored");
    describe_counter!(
        "jetsource_append_publishes_total",
        "Publishes to the event stream (a single event or one atomic batch)"
    );
    describe_histogram!(
        "jetsource_append_batch_events",
        "Events per publish to the event stream"
    );
    describe_histogram!(
        "jetsource_append_publish_seconds",
        Unit::Seconds,
        "Time from a publish to its ack"
    );
    describe_histogram!(
        "jetsource_group_commit_batch_appends",
        "Appends of different aggregates sharing one atomic batch"
    );
    describe_counter!(
        "jetsource_group_commit_splits_total",
        "Group-commit batches split to isolate a conflicting append"
    );
    describe_counter!(
        "jetsource_consumer_events_applied_total",
        "Events a projection or saga handled"
    );
    describe_counter!(
        "jetsource_consumer_redeliveries_total",
        "Deliveries beyond an event's first"
    );
    describe_counter!(
        "jetsource_consumer_parked_total",
        "Events this process parked in DLQ"
    );
    describe_gauge!("jetsource_consumer_parked", "Events of the consumer in DLQ");
    describe_gauge!(
        "jetsource_consumer_lag_events",
        "Events of the stream the consumer has not handled"
    );
    describe_gauge!(
        "jetsource_consumer_lag_seconds",
        Unit::Seconds,
        "How far the oldest unhandled event lies behind the newest"
    );
    describe_gauge!(
        "jetsource_consumer_checkpoint",
        "Last stream sequence the consumer fully handled"
    );
    describe_gauge!(
        "jetsource_consumer_active",
        "1 while this process holds the consumer's lease, 0 while standing by"
    );
    describe_gauge!("jetsource_saga_instances", "Saga instances by stage");
    describe_gauge!(
        "jetsource_saga_pending_deadlines",
        "Deadlines set by running instances and not yet passed"
    );
    describe_gauge!("jetsource_process_info", "1, labelled with the process");
}

/// The `status` label: `200`, or the rejection's code.
fn status_label(status: Option<crate::node::Status>) -> (usize, &'static str) {
    use crate::node::Status::*;
    match status {
        None => (0, "200"),
        Some(Malformed) => (1, "400"),
        Some(Forbidden) => (2, "403"),
        Some(NotFound) => (3, "404"),
        Some(Conflict) => (4, "409"),
        Some(Invalid) => (5, "422"),
        Some(Internal) => (6, "500"),
        Some(Unavailable) => (7, "503"),
    }
}

/// One endpoint's request metrics, registered once (a lookup per request would
/// cost more than the counting): a counter per status, made when first seen,
/// and a latency histogram. Made after the recorder is installed, or they record
/// nothing.
#[derive(Debug)]
pub(crate) struct Requests {
    total: &'static str,
    /// `[(label, value); 2]`: aggregate and command, or view and query.
    labels: [(&'static str, &'static str); 2],
    counters: [std::sync::OnceLock<metrics::Counter>; 8],
    duration: metrics::Histogram,
}

impl Requests {
    /// A command endpoint's.
    pub(crate) fn command(aggregate: &'static str, command: &'static str) -> Requests {
        Requests {
            total: "jetsource_commands_total",
            labels: [("aggregate", aggregate), ("command", command)],
            counters: Default::default(),
            duration: histogram!("jetsource_command_duration_seconds", "aggregate" => aggregate, "command" => command),
        }
    }

    /// A query endpoint's.
    pub(crate) fn query(view: &'static str, query: &'static str) -> Requests {
        Requests {
            total: "jetsource_queries_total",
            labels: [("view", view), ("query", query)],
            counters: Default::default(),
            duration: histogram!("jetsource_query_duration_seconds", "view" => view, "query" => query),
        }
    }

    /// One request answered with `status` (`None`: accepted) after `took`.
    pub(crate) fn record(&self, status: Option<crate::node::Status>, took: Duration) {
        let (index, code) = status_label(status);
        let [(a, a_value), (b, b_value)] = self.labels;
        self.counters[index]
            .get_or_init(|| counter!(self.total, a => a_value, b => b_value, "status" => code))
            .increment(1);
        self.duration.record(took);
    }
}

/// A query waited `took` for its view to reach its Min-Seq.
pub(crate) fn min_seq_wait(view: &'static str, reached: bool, took: Duration) {
    let outcome = if reached { "reached" } else { "timed_out" };
    counter!("jetsource_min_seq_waits_total", "view" => view, "outcome" => outcome).increment(1);
    histogram!("jetsource_min_seq_wait_seconds", "view" => view).record(took);
}

/// What an event store records about its appends, registered when it opens.
#[derive(Debug, Clone)]
pub(crate) struct Appends {
    appends: metrics::Counter,
    publishes: metrics::Counter,
    events: metrics::Histogram,
    publish_seconds: metrics::Histogram,
    group_commit: metrics::Histogram,
    splits: metrics::Counter,
}

impl Appends {
    pub(crate) fn new() -> Appends {
        Appends {
            appends: counter!("jetsource_appends_total"),
            publishes: counter!("jetsource_append_publishes_total"),
            events: histogram!("jetsource_append_batch_events"),
            publish_seconds: histogram!("jetsource_append_publish_seconds"),
            group_commit: histogram!("jetsource_group_commit_batch_appends"),
            splits: counter!("jetsource_group_commit_splits_total"),
        }
    }

    /// One publish of `events` events to the event stream, acked after `took`.
    pub(crate) fn publish(&self, events: usize, took: Duration) {
        self.publishes.increment(1);
        self.events.record(events as f64);
        self.publish_seconds.record(took);
    }

    /// `n` appends stored.
    pub(crate) fn appends(&self, n: u64) {
        self.appends.increment(n);
    }

    /// A group-commit batch of `appends` appends was sent.
    pub(crate) fn group_commit(&self, appends: usize) {
        self.group_commit.record(appends as f64);
    }

    /// A group-commit batch was split.
    pub(crate) fn split(&self) {
        self.splits.increment(1);
    }
}

/// What one consumer (a projection or a saga) reports as it goes.
#[derive(Debug, Clone)]
pub(crate) struct Consumer {
    applied: metrics::Counter,
    redelivered: metrics::Counter,
}

impl Consumer {
    pub(crate) fn new(consumer: &str) -> Consumer {
        let name = SharedString::from(consumer.to_string());
        Consumer {
            applied: counter!("jetsource_consumer_events_applied_total", "consumer" => name.clone()),
            redelivered: counter!("jetsource_consumer_redeliveries_total", "consumer" => name),
        }
    }

    /// `n` events handled.
    pub(crate) fn applied(&self, n: usize) {
        self.applied.increment(n as u64);
    }

    /// Of the messages fetched, those delivered before.
    pub(crate) fn fetched(&self, messages: &[async_nats::jetstream::Message]) {
        let again = messages
            .iter()
            .filter(|m| m.info().is_ok_and(|i| i.delivered > 1))
            .count();
        if again > 0 {
            self.redelivered.increment(again as u64);
        }
    }
}

/// `consumer` parked one event.
pub(crate) fn parked(consumer: &str) {
    counter!("jetsource_consumer_parked_total", "consumer" => consumer.to_string()).increment(1);
}

/// A consumer's standing, from [`status::consumers`](crate::projection::status::consumers).
pub fn consumer_status(status: &crate::projection::status::ConsumerStatus) {
    let name = SharedString::from(status.consumer.clone());
    gauge!("jetsource_consumer_lag_events", "consumer" => name.clone())
        .set(status.lag_events as f64);
    gauge!("jetsource_consumer_lag_seconds", "consumer" => name.clone()).set(status.lag_seconds);
    gauge!("jetsource_consumer_parked", "consumer" => name.clone()).set(status.parked as f64);
    gauge!("jetsource_consumer_checkpoint", "consumer" => name).set(status.checkpoint as f64);
}

/// Whether this process runs `consumer` (holds its lease) or stands by.
pub fn consumer_active(consumer: &str, active: bool) {
    gauge!("jetsource_consumer_active", "consumer" => consumer.to_string()).set(if active {
        1.0
    } else {
        0.0
    });
}

/// A saga's instances counted by stage, and the deadlines its running ones wait for.
pub fn saga_census(saga: &str, by_stage: &std::collections::BTreeMap<String, u64>, deadlines: u64) {
    for (stage, n) in by_stage {
        gauge!("jetsource_saga_instances", "saga" => saga.to_string(), "stage" => stage.clone())
            .set(*n as f64);
    }
    gauge!("jetsource_saga_pending_deadlines", "saga" => saga.to_string()).set(deadlines as f64);
}

/// Marks the process (`node`, `project`, `saga`) in its metrics.
pub fn process(process: &str) {
    gauge!("jetsource_process_info", "process" => process.to_string()).set(1.0);
}
