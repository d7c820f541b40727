//! `jetsource send` and `jetsource query`: one request, the reply on stdout.

use super::connection::Connection;
use super::{Outcome, Result};
use crate::store::headers;
use async_nats::HeaderMap;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// `<aggregate>.<Command>`, e.g. `person.Register`.
    command: String,
    /// The body, JSON, with the aggregate `id` inside.
    body: String,
    /// Idempotency key (a retry with the same key runs once).
    #[arg(long)]
    command_id: Option<String>,
    /// Only run if the aggregate is at this version.
    #[arg(long)]
    expected_version: Option<u64>,
    /// Correlation id (defaults to the command id).
    #[arg(long)]
    correlation_id: Option<String>,
    /// Who acts.
    #[arg(long)]
    actor: Option<String>,
    /// The end user acted for (only clients the policy lets delegate).
    #[arg(long)]
    on_behalf_of: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
pub(crate) struct QueryArgs {
    /// `<view>.<op>`, e.g. `person.get`.
    query: String,
    /// The body, JSON.
    body: String,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
struct Common {
    #[command(flatten)]
    connection: Connection,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

pub(crate) async fn run(args: Args) -> Result<Outcome> {
    let mut h = HeaderMap::new();
    let pairs = [
        (headers::COMMAND_ID, &args.command_id),
        (headers::CORRELATION_ID, &args.correlation_id),
        (headers::ACTOR, &args.actor),
        (headers::ON_BEHALF_OF, &args.on_behalf_of),
    ];
    for (name, value) in pairs {
        if let Some(v) = value {
            h.insert(name, v.as_str());
        }
    }
    if let Some(v) = args.expected_version {
        h.insert(
            crate::node::request::EXPECTED_VERSION,
            v.to_string().as_str(),
        );
    }
    request(&args.common, "cmd", &args.command, args.body, h).await
}

pub(crate) async fn query(args: QueryArgs) -> Result<Outcome> {
    request(
        &args.common,
        "qry",
        &args.query,
        args.body,
        HeaderMap::new(),
    )
    .await
}

async fn request(
    common: &Common,
    kind: &str,
    name: &str,
    body: String,
    mut h: HeaderMap,
) -> Result<Outcome> {
    if name.split('.').count() != 2 {
        return Err(format!("{name:?} is not <aggregate>.<name>").into());
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .map_err(|e| format!("the body is not JSON: {e}"))?;
    h.insert(headers::CONTENT_TYPE, "application/json");
    let client = common.connection.connect("jetsource send").await?;
    let subject = format!("{}{kind}.{name}", common.connection.subjects().prefix());
    let request = async_nats::Request::new()
        .headers(h)
        .payload(body.into())
        .timeout(Some(Duration::from_secs(common.timeout)));
    let reply = client
        .send_request(subject.clone(), request)
        .await
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => {
                format!("no jetsource node serves {subject}: is `jetsource node` running?")
            }
            async_nats::RequestErrorKind::TimedOut => {
                format!("no reply on {subject} within {}s", common.timeout)
            }
            _ => e.to_string(),
        })?;
    println!("{}", String::from_utf8_lossy(&reply.payload));
    let rejected = reply.headers.as_ref().is_some_and(|h| {
        h.get(async_nats::service::NATS_SERVICE_ERROR_CODE)
            .is_some()
    });
    Ok(if rejected {
        Outcome::Rejected
    } else {
        Outcome::Done
    })
}
