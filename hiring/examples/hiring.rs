//! A hiring client in Rust on the public API: it only sends commands and queries;
//! the node, the projections and the hiring saga do the rest.
//!
//! Run: `jetsource up` in one terminal, then `cargo run --example hiring` (uses
//! `NATS_URL`, default `nats://127.0.0.1:4222`). It registers an organization and a
//! person, extends an offer, waits for the saga to record it, accepts, and waits
//! until the person is employed; it exits non-zero if the flow does not complete.

use hiring::{Organization, OrganizationCommand, Person, PersonCommand};
use jetsource::client::{Client, CommandOptions, SendError};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = Client::new(
        jetsource::connect(&url).await?,
        jetsource::Subjects::default(),
    );
    // Fresh ids, so the example can run again against the same store.
    let run = &uuid::Uuid::now_v7().simple().to_string()[20..];
    let (org, person, offer) = (
        format!("globex-{run}"),
        format!("grace-{run}"),
        format!("offer-{run}"),
    );
    let options = CommandOptions::default();

    let org_commands = [
        OrganizationCommand::Register {
            name: "Globex".into(),
        },
        OrganizationCommand::OpenPosition {
            position_id: "cto".into(),
            title: "Chief Technology Officer".into(),
        },
    ];
    for command in &org_commands {
        let ack = client
            .execute::<Organization>(&org, command, &options)
            .await?;
        println!("{org}: {:?} at seq {}", ack.events, ack.seq);
    }
    let register = PersonCommand::Register {
        name: "Grace Hopper".into(),
        email: format!("{person}@example.org"),
    };
    let ack = client
        .execute::<Person>(&person, &register, &options)
        .await?;
    println!("{person}: {:?} at seq {}", ack.events, ack.seq);

    // An idempotent resend: the same command id runs once.
    let extend = OrganizationCommand::ExtendOffer {
        position_id: "cto".into(),
        person_id: person.clone(),
        offer_id: offer.clone(),
        expires_at: chrono::Utc::now() + chrono::Duration::days(7),
        at: chrono::Utc::now(),
    };
    let once = CommandOptions {
        command_id: Some(format!("extend-{run}")),
        ..Default::default()
    };
    let first = client.execute::<Organization>(&org, &extend, &once).await?;
    let again = client.execute::<Organization>(&org, &extend, &once).await?;
    assert_eq!(
        first, again,
        "a resend with the same command id gets the same ack"
    );
    println!(
        "{org}: offer {offer} extended at seq {} (resent once, stored once)",
        first.seq
    );

    wait_for(
        &client,
        "offers",
        &person,
        "the saga to record the offer",
        |r| r["offers"][&offer]["status"] == "pending",
    )
    .await?;
    println!("{person}: offer recorded by the hiring saga");

    let accept = PersonCommand::AcceptOffer {
        offer_id: offer.clone(),
        at: chrono::Utc::now(),
    };
    let ack = client.execute::<Person>(&person, &accept, &options).await?;
    println!("{person}: {:?} at seq {}", ack.events, ack.seq);

    let hired = wait_for(&client, "person", &person, "the employment to start", |r| {
        r["employer"] == org.as_str()
    })
    .await?;
    println!("{person}: employed: {hired}");
    let members = client
        .query("organization", "members", &json!({"id": org}))
        .await?;
    println!("{org}: members {members}");
    Ok(())
}

/// Polls `qry.<view>.<get|by_person>` until `done` holds (the saga works asynchronously).
async fn wait_for(
    client: &Client,
    view: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value, Box<dyn std::error::Error>> {
    let op = if view == "offers" { "by_person" } else { "get" };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.query(view, op, &json!({"id": id})).await {
            Ok(reply) if done(&reply) => return Ok(reply),
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            return Err(
                format!("waited 30 s for {what}: is `jetsource saga hiring` running?").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn is_not_found(e: &SendError) -> bool {
    matches!(
        e.kind(),
        jetsource::client::SendErrorKind::Rejected { status: 404, .. }
    )
}
