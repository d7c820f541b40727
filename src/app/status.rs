//! `jetsource status`: the server, the event stream, the service's nodes and every
//! projection and saga consumer at a glance; `--check` turns it into a health
//! check for scripts and monitors.

use super::connection::Connection;
use super::{Outcome, Result};
use crate::projection::status::ConsumerStatus;
use serde::Serialize;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    connection: Connection,
    /// Print JSON (the same facts as the text).
    #[arg(long)]
    json: bool,
    /// Check the thresholds below: exit 0 when every check passes, 2 when one
    /// fails (each failure printed), 1 when the status cannot be read at all.
    #[arg(long)]
    check: bool,
    /// Most events a consumer may be behind.
    #[arg(long, default_value_t = 10_000)]
    max_lag: u64,
    /// Most seconds a consumer may be behind.
    #[arg(long, default_value_t = 60.0)]
    max_lag_seconds: f64,
    /// Most events a consumer may have parked in DLQ.
    #[arg(long, default_value_t = 0)]
    max_parked: u64,
    /// Fewest nodes serving.
    #[arg(long, default_value_t = 1)]
    min_nodes: usize,
}

/// Everything `status` reports.
#[derive(Debug, Serialize)]
struct Report {
    server: Server,
    stream: Stream,
    nodes: Vec<Node>,
    consumers: Vec<ConsumerStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Vec<Check>>,
}

#[derive(Debug, Serialize)]
struct Server {
    version: String,
    url: String,
}

/// The event stream, by its configured name.
#[derive(Debug, Serialize)]
struct Stream {
    name: String,
    exists: bool,
    events: u64,
    bytes: u64,
    first_seq: u64,
    last_seq: u64,
    aggregates: u64,
    last_event_at: Option<String>,
}

/// One node's answer to `$SRV.STATS`, summed over its endpoints.
#[derive(Debug, Serialize)]
struct Node {
    id: String,
    version: String,
    started: String,
    requests: u64,
    errors: u64,
}

/// One threshold, passed or not.
#[derive(Debug, Serialize)]
struct Check {
    check: String,
    ok: bool,
    detail: String,
}

pub(crate) async fn run(args: Args) -> Result<Outcome> {
    let client = args.connection.connect("jetsource status").await?;
    let config = args.connection.store_config();
    let mut report = report(&client, &config, args.connection.url(), None).await?;
    if args.check {
        report.checks = Some(checks(&report, &args));
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    let failed = report.checks.iter().flatten().any(|c| !c.ok);
    Ok(if failed {
        Outcome::Rejected
    } else {
        Outcome::Done
    })
}

/// What `status --json` prints (without checks), for the console.
pub(crate) async fn gather(store: &crate::EventStore) -> Result<serde_json::Value> {
    let report = report(store.client(), store.config(), String::new(), Some(store)).await?;
    Ok(serde_json::to_value(report)?)
}

/// The report over `client`; the consumers through `store` if open already.
async fn report(
    client: &async_nats::Client,
    config: &crate::StoreConfig,
    url: String,
    store: Option<&crate::EventStore>,
) -> Result<Report> {
    let server = Server {
        version: client.server_info().version,
        url,
    };
    let stream = stream(client, config).await;
    // Every node answers $SRV.STATS: gather the replies for a moment.
    let nodes = crate::node::service_replies(client, "STATS", Duration::from_millis(500))
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|r| serde_json::from_slice(r).ok())
        .map(|stats: serde_json::Value| node(&stats))
        .collect();
    // Opened only once it exists: opening creates the stream, and `status` must not.
    let consumers = match (stream.exists, store) {
        (false, _) => Vec::new(),
        (true, Some(store)) => crate::projection::status::consumers(store).await?,
        (true, None) => {
            let store = crate::EventStore::open(client.clone(), config.clone()).await?;
            crate::projection::status::consumers(&store).await?
        }
    };
    Ok(Report {
        server,
        stream,
        nodes,
        consumers,
        checks: None,
    })
}

async fn stream(client: &async_nats::Client, config: &crate::StoreConfig) -> Stream {
    let name = config.stream.clone();
    let js = async_nats::jetstream::new(client.clone());
    let info = match js.get_stream(&name).await {
        Ok(mut stream) => stream.info().await.ok().map(|i| i.state.clone()),
        Err(_) => None,
    };
    match info {
        Some(state) => Stream {
            name,
            exists: true,
            events: state.messages,
            bytes: state.bytes,
            first_seq: state.first_sequence,
            last_seq: state.last_sequence,
            aggregates: state.subjects_count,
            last_event_at: (state.messages > 0)
                .then(|| state.last_timestamp.to_string())
                .filter(|_| state.last_sequence > 0),
        },
        None => Stream {
            name,
            exists: false,
            events: 0,
            bytes: 0,
            first_seq: 0,
            last_seq: 0,
            aggregates: 0,
            last_event_at: None,
        },
    }
}

fn node(stats: &serde_json::Value) -> Node {
    let endpoints = stats["endpoints"].as_array().cloned().unwrap_or_default();
    let sum = |field: &str| {
        endpoints
            .iter()
            .map(|e| e[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let text = |field: &str| stats[field].as_str().unwrap_or("?").to_string();
    Node {
        id: text("id"),
        version: text("version"),
        started: text("started"),
        requests: sum("num_requests"),
        errors: sum("num_errors"),
    }
}

fn checks(report: &Report, args: &Args) -> Vec<Check> {
    let mut checks = vec![Check {
        check: "nodes".into(),
        ok: report.nodes.len() >= args.min_nodes,
        detail: format!(
            "{} node(s) serving, at least {} wanted",
            report.nodes.len(),
            args.min_nodes
        ),
    }];
    for c in report.consumers.iter().filter(|c| !c.retired) {
        let name = &c.consumer;
        checks.push(Check {
            check: format!("{name} active"),
            ok: c.active.is_some(),
            detail: match &c.active {
                Some(holder) => format!("{name} is run by {holder}"),
                None => format!("no instance of {name} holds its lease: nothing runs it"),
            },
        });
        checks.push(Check {
            check: format!("{name} lag"),
            ok: c.lag_events <= args.max_lag && c.lag_seconds <= args.max_lag_seconds,
            detail: format!(
                "{name} is {} events ({:.1} s) behind; at most {} events ({} s) allowed",
                c.lag_events, c.lag_seconds, args.max_lag, args.max_lag_seconds
            ),
        });
        checks.push(Check {
            check: format!("{name} stream"),
            ok: c.stream_changed.is_none(),
            detail: match &c.stream_changed {
                None => format!("{name}'s checkpoint fits the event stream"),
                Some(why) => format!("{name}: {why}; {}", stream_advice(name)),
            },
        });
        checks.push(Check {
            check: format!("{name} parked"),
            ok: c.parked <= args.max_parked,
            detail: format!(
                "{name} has {} event(s) parked in DLQ; at most {} allowed (see `dlq list`)",
                c.parked, args.max_parked
            ),
        });
    }
    checks
}

/// What to do about a consumer whose checkpoint no longer fits the stream.
fn stream_advice(consumer: &str) -> String {
    match consumer.strip_prefix("proj_") {
        Some(view) => {
            let name = match view.rsplit_once("_v") {
                Some((name, v)) if v.parse::<u32>().is_ok() => name,
                _ => view,
            };
            format!("it applies nothing until rebuilt (`jetsource project {name} --rebuild`)")
        }
        None => "it refuses to start: its instances were made from events the stream no longer has"
            .into(),
    }
}

fn print_text(report: &Report) {
    println!(
        "nats-server {} at {}",
        report.server.version, report.server.url
    );
    let s = &report.stream;
    if s.exists {
        println!(
            "stream {}: {} events, {} bytes, last sequence {}, {} aggregates",
            s.name, s.events, s.bytes, s.last_seq, s.aggregates
        );
    } else {
        println!("stream {}: not created yet", s.name);
    }
    println!(
        "{} node(s) in service {}",
        report.nodes.len(),
        crate::node::SERVICE_NAME
    );
    for n in &report.nodes {
        println!(
            "  node {} (v{}, up since {}): {} requests, {} errors",
            n.id, n.version, n.started, n.requests, n.errors
        );
    }
    for c in &report.consumers {
        let role = match (&c.active, c.retired) {
            (_, true) => "retired version".to_string(),
            (Some(holder), false) => format!("active {holder}"),
            (None, false) => "NO ACTIVE INSTANCE".to_string(),
        };
        println!(
            "  consumer {}: checkpoint {} of {}, lag {} events ({:.1}s), {} redelivered, {} parked, {role}",
            c.consumer, c.checkpoint, c.stream_last_seq, c.lag_events, c.lag_seconds, c.redelivered, c.parked,
        );
        if let Some(why) = &c.stream_changed {
            println!("    STREAM CHANGED: {why}; {}", stream_advice(&c.consumer));
        }
    }
    for c in report.checks.iter().flatten() {
        println!(
            "{} {}",
            if c.ok { "OK      " } else { "CRITICAL" },
            c.detail
        );
    }
}
