//! `jetsource status`: the service's nodes and the event store at a glance.

use super::connection::Connection;
use super::{Outcome, Result};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    connection: Connection,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: Args) -> Result<Outcome> {
    let client = args.connection.connect("jetsource status").await?;
    let info = client.server_info();
    // Every node answers $SRV.STATS: gather the replies for a moment.
    let nodes: Vec<serde_json::Value> =
        crate::node::service_replies(&client, "STATS", Duration::from_millis(500))
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter_map(|r| serde_json::from_slice(r).ok())
            .collect();
    let consumers: serde_json::Value = match client
        .request(
            format!("{}qry.system.status", args.connection.subjects().prefix()),
            "{}".into(),
        )
        .await
    {
        Ok(reply) => serde_json::from_slice::<serde_json::Value>(&reply.payload)
            .unwrap_or_default()["consumers"]
            .clone(),
        Err(_) => serde_json::Value::Null,
    };
    let js = async_nats::jetstream::new(client.clone());
    let stream: serde_json::Value = js
        .request("STREAM.INFO.EVENTS".to_string(), &serde_json::json!({}))
        .await
        .unwrap_or(serde_json::Value::Null);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"server": info.version, "nodes": nodes, "events": stream["state"]})
        );
        return Ok(Outcome::Done);
    }
    println!(
        "nats-server {} at {}",
        info.version, args.connection.nats_url
    );
    let state = &stream["state"];
    if state.is_null() {
        println!("stream EVENTS: not created yet");
    } else {
        println!(
            "stream EVENTS: {} events, {} bytes, last sequence {}, {} aggregates",
            state["messages"], state["bytes"], state["last_seq"], state["num_subjects"]
        );
    }
    println!(
        "{} node(s) in service {}",
        nodes.len(),
        crate::node::SERVICE_NAME
    );
    for node in &nodes {
        let endpoints = node["endpoints"].as_array().cloned().unwrap_or_default();
        let sum = |field: &str| {
            endpoints
                .iter()
                .map(|e| e[field].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        println!(
            "  node {} (v{}, up since {}): {} requests, {} errors",
            node["id"].as_str().unwrap_or("?"),
            node["version"].as_str().unwrap_or("?"),
            node["started"].as_str().unwrap_or("?"),
            sum("num_requests"),
            sum("num_errors"),
        );
    }
    for c in consumers.as_array().into_iter().flatten() {
        println!(
            "  consumer {}: checkpoint {} of {}, lag {} events ({:.1}s), {} redelivered, {} parked",
            c["consumer"].as_str().unwrap_or("?"),
            c["checkpoint"],
            c["stream_last_seq"],
            c["lag_events"],
            c["lag_seconds"].as_f64().unwrap_or(0.0),
            c["redelivered"],
            c["parked"],
        );
    }
    Ok(Outcome::Done)
}
