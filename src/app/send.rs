//! `jetsource send` and `jetsource query`: one request, the reply on stdout, as
//! `nats req` would send it.

use super::connection::Connection;
use super::{Outcome, Result};
use crate::store::headers;
use async_nats::HeaderMap;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// `cmd.<aggregate>.<Command>` or `<aggregate>.<Command>`, e.g. `person.Register`.
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
    /// Who acts (only jetsource's own account may say).
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
    /// `qry.<view>.<query>` or `<view>.<query>`, e.g. `person.get`.
    query: String,
    /// The body, JSON.
    #[arg(default_value = "{}")]
    body: String,
    /// Wait (up to the node's limit) until the view has applied this stream
    /// sequence: the `seq` of a command's ack reads your own write.
    #[arg(long)]
    min_seq: Option<u64>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
struct Common {
    #[command(flatten)]
    connection: Connection,
    /// A header to send, `Name:Value` (repeatable), e.g. `-H traceparent:00-…`.
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Print the reply as one JSON document: status code, headers and body.
    #[arg(long)]
    json: bool,
}

fn parse_header(text: &str) -> std::result::Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not Name:Value"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("{name:?} is not a header name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
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
    let mut h = HeaderMap::new();
    if let Some(seq) = args.min_seq {
        h.insert(crate::node::request::MIN_SEQ, seq.to_string().as_str());
    }
    request(&args.common, "qry", &args.query, args.body, h).await
}

/// `<a>.<b>` from `<a>.<b>`, `<kind>.<a>.<b>` or `<prefix><kind>.<a>.<b>`.
fn short_name<'a>(name: &'a str, kind: &str, prefix: &str) -> Result<&'a str> {
    let short = name.strip_prefix(prefix).unwrap_or(name);
    let short = short
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(short);
    let parts: Vec<&str> = short.split('.').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        let example = if kind == "cmd" {
            "person.Register"
        } else {
            "person.get"
        };
        return Err(format!(
            "{name:?} is not {kind}.<aggregate>.<name> or <aggregate>.<name> (e.g. {example})"
        )
        .into());
    }
    Ok(short)
}

async fn request(
    common: &Common,
    kind: &str,
    name: &str,
    body: String,
    mut h: HeaderMap,
) -> Result<Outcome> {
    let prefix = common.connection.subjects().prefix().to_string();
    let name = short_name(name, kind, &prefix)?;
    serde_json::from_str::<serde_json::Value>(&body)
        .map_err(|e| format!("the body is not JSON: {e}"))?;
    h.insert(headers::CONTENT_TYPE, "application/json");
    for (name, value) in &common.headers {
        h.insert(name.as_str(), value.as_str());
    }
    let client = common.connection.connect("jetsource send").await?;
    let subject = format!("{prefix}{kind}.{name}");
    let timeout = common.connection.timeout;
    let request = async_nats::Request::new()
        .headers(h)
        .payload(body.into())
        .timeout(Some(timeout));
    let reply = client
        .send_request(subject.clone(), request)
        .await
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => {
                format!("no jetsource node serves {subject}: is `jetsource node` running?")
            }
            async_nats::RequestErrorKind::TimedOut => {
                format!("no reply on {subject} within {timeout:?}")
            }
            _ => e.to_string(),
        })?;
    let code = reply.headers.as_ref().and_then(|h| {
        h.get(async_nats::service::NATS_SERVICE_ERROR_CODE)
            .and_then(|v| v.as_str().parse::<u16>().ok())
    });
    if common.json {
        println!("{}", reply_json(&reply, code));
    } else {
        println!("{}", String::from_utf8_lossy(&reply.payload));
    }
    Ok(if code.is_some() {
        Outcome::Rejected
    } else {
        Outcome::Done
    })
}

/// `{"status_code":200,"headers":{…},"body":…}` (the body as JSON when it is).
fn reply_json(reply: &async_nats::Message, code: Option<u16>) -> serde_json::Value {
    let headers = reply
        .headers
        .as_ref()
        .map_or_else(|| serde_json::json!({}), super::headers_json);
    let body: serde_json::Value = serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|_| String::from_utf8_lossy(&reply.payload).into());
    serde_json::json!({"status_code": code.unwrap_or(200), "headers": headers, "body": body})
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn full_subjects_and_short_names_both_name_a_command() {
        assert_eq!(
            short_name("person.Register", "cmd", "").unwrap(),
            "person.Register"
        );
        assert_eq!(
            short_name("cmd.person.Register", "cmd", "").unwrap(),
            "person.Register"
        );
        assert_eq!(
            short_name("acme.cmd.person.Register", "cmd", "acme.").unwrap(),
            "person.Register"
        );
        assert_eq!(
            short_name("qry.person.get", "qry", "").unwrap(),
            "person.get"
        );
        assert!(short_name("cmd.person", "cmd", "").is_err());
        assert!(short_name("person", "cmd", "").is_err());
        assert!(short_name("a.b.c.d", "cmd", "").is_err());
    }
}
