//! Hostile clients speaking the raw NATS protocol: no frame, header, subject or
//! body may disconnect the node or lose another client's reply.

mod support;

use jetsource::node::NodeConfig;
use jetsource::testing::TestServer;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::raw::{Frame, Raw};

fn register(id: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","name":"N","email":"{id}@example.org"}}"#).into_bytes()
}

/// One `HPUB` frame: the header block exactly as given.
fn hpub(subject: &[u8], reply: &[u8], header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut frame = b"HPUB ".to_vec();
    frame.extend_from_slice(subject);
    frame.push(b' ');
    frame.extend_from_slice(reply);
    frame.extend_from_slice(
        format!(" {} {}\r\n", header.len(), header.len() + body.len()).as_bytes(),
    );
    frame.extend_from_slice(header);
    frame.extend_from_slice(body);
    frame.extend_from_slice(b"\r\n");
    frame
}

/// The status code of a reply (`None`: accepted).
fn status(frame: &Frame) -> Option<u16> {
    let header = String::from_utf8_lossy(&frame.header);
    header
        .lines()
        .find_map(|l| l.strip_prefix("Nats-Service-Error-Code:"))
        .map(|c| c.trim().parse().unwrap())
}

#[tokio::test]
async fn malformed_header_blocks_get_a_reply_and_keep_the_node_connected() {
    let server = TestServer::start();
    let (node_client, store, _node) = support::reference_node(&server, NodeConfig::default()).await;
    let connects = node_client.statistics().connects.load(Ordering::Relaxed);

    // Bystanders asking all along: every one must be answered.
    let bystander = jetsource::connect(&server.url()).await.unwrap();
    let asking = tokio::spawn(async move {
        let mut answered = 0;
        for i in 0..200 {
            let body = format!(r#"{{"id":"nobody-{i}"}}"#);
            let ask = bystander.request("qry.person.get", body.into());
            if tokio::time::timeout(Duration::from_secs(5), ask)
                .await
                .is_ok()
            {
                answered += 1;
            }
        }
        answered
    });

    let long = format!("Jetsource-Correlation-Id: {}\r\n", "c".repeat(60_000));
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        (
            "a line without a colon",
            b"NATS/1.0\r\nNoColonHere\r\n\r\n".to_vec(),
            None,
        ),
        (
            "an actor that is not UTF-8",
            b"NATS/1.0\r\nJetsource-Actor: \xff\xfe\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "a header name that is not UTF-8",
            b"NATS/1.0\r\n\xff\xfe: x\r\n\r\n".to_vec(),
            None,
        ),
        (
            "a bare CR inside a value",
            b"NATS/1.0\r\nJetsource-Correlation-Id: a\rb\r\n\r\n".to_vec(),
            None,
        ),
        (
            "no version line",
            b"HTTP/1.1\r\nX: y\r\n\r\n".to_vec(),
            None,
        ),
        (
            "a status that is not a number",
            b"NATS/1.0 abc\r\n\r\n".to_vec(),
            None,
        ),
        (
            "a 60 KB header value",
            format!("NATS/1.0\r\n{long}\r\n").into_bytes(),
            Some(400),
        ),
        (
            "a command id with a NUL",
            b"NATS/1.0\r\nJetsource-Command-Id: a\x00b\r\n\r\n".to_vec(),
            Some(400),
        ),
    ];
    let mut raw = Raw::connect(server.port()).await;
    raw.send(b"SUB _INBOX.raw.> 1\r\n").await;
    for (i, (what, header, _)) in cases.iter().enumerate() {
        let id = format!("raw-{i}");
        let reply = format!("_INBOX.raw.{i}");
        raw.send(&hpub(
            b"cmd.person.Register",
            reply.as_bytes(),
            header,
            &register(&id),
        ))
        .await;
        let frame = raw.next_message(Duration::from_secs(5)).await;
        let frame = frame.unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(frame.subject, reply.as_bytes(), "{what}");
        assert_eq!(
            status(&frame),
            cases[i].2,
            "{what}: {:?}",
            String::from_utf8_lossy(&frame.payload)
        );
    }
    // A body that is not UTF-8, and replies the node cannot read as text.
    raw.send(&hpub(
        b"cmd.person.Register",
        b"_INBOX.raw.body",
        b"NATS/1.0\r\n\r\n",
        b"{\"id\":\"\xff\"}",
    ))
    .await;
    let frame = raw
        .next_message(Duration::from_secs(5))
        .await
        .expect("a reply to a bad body");
    assert_eq!(status(&frame), Some(400));
    raw.send(b"PUB cmd.person.Register _INBOX.raw.\xff\xfe 2\r\n{}\r\n")
        .await;
    raw.send(&hpub(
        b"qry.person.get",
        b"_INBOX.raw.\xc3",
        b"NATS/1.0\r\n\r\n",
        b"{\"id\":\"x\"}",
    ))
    .await;
    raw.send(b"PUB qry.person.get _INBOX.raw.* 10\r\n{\"id\":\"x\"}\r\n")
        .await;
    raw.drain(Duration::from_millis(500)).await;

    assert_eq!(
        asking.await.unwrap(),
        200,
        "every bystander's query answered"
    );
    assert_eq!(
        node_client.statistics().connects.load(Ordering::Relaxed),
        connects,
        "the node never reconnected"
    );
    // Lenient reading stored only what was a valid command.
    for (i, (what, _, expected)) in cases.iter().enumerate() {
        let events = store
            .read_aggregate("person", &format!("raw-{i}"), 0)
            .await
            .unwrap();
        let stored = if expected.is_none() { 1 } else { 0 };
        assert_eq!(events.len(), stored, "{what}");
    }
}

/// One command or query template: subject and a valid body.
fn templates() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let t = "2030-01-01T00:00:00Z";
    vec![
        (
            "cmd.person.Register",
            json!({"id": "p1", "name": "Ada", "email": "ada@example.org"}),
        ),
        (
            "cmd.person.ChangeName",
            json!({"id": "p1", "name": "Ada L"}),
        ),
        (
            "cmd.person.ChangeEmail",
            json!({"id": "p1", "email": "a@example.org"}),
        ),
        ("cmd.person.Deactivate", json!({"id": "p1"})),
        (
            "cmd.person.RecordOffer",
            json!({"id": "p1", "offer_id": "o1", "organization_id": "acme", "position_id": "eng", "expires_at": t}),
        ),
        (
            "cmd.person.AcceptOffer",
            json!({"id": "p1", "offer_id": "o1"}),
        ),
        (
            "cmd.person.DeclineOffer",
            json!({"id": "p1", "offer_id": "o1"}),
        ),
        (
            "cmd.person.EndEmployment",
            json!({"id": "p1", "reason": "r"}),
        ),
        (
            "cmd.organization.Register",
            json!({"id": "acme", "name": "Acme"}),
        ),
        (
            "cmd.organization.OpenPosition",
            json!({"id": "acme", "position_id": "eng", "title": "Engineer"}),
        ),
        (
            "cmd.organization.ExtendOffer",
            json!({"id": "acme", "position_id": "eng", "person_id": "p1", "offer_id": "o1", "expires_at": t}),
        ),
        (
            "cmd.organization.Hire",
            json!({"id": "acme", "offer_id": "o1"}),
        ),
        ("qry.person.get", json!({"id": "p1"})),
        ("qry.person.by_email", json!({"email": "ada@example.org"})),
        ("qry.person.list", json!({"limit": 10})),
        (
            "qry.person.history",
            json!({"id": "p1", "after": 0, "limit": 10}),
        ),
        ("qry.person.at", json!({"id": "p1", "version": 1})),
        ("qry.organization.get", json!({"id": "acme"})),
        ("qry.organization.history", json!({"id": "acme"})),
        ("qry.system.status", json!({})),
    ]
}

/// A hostile value in place of a field's: wrong types, odd strings, huge ones.
fn hostile_value(rng: &mut fastrand::Rng) -> serde_json::Value {
    use serde_json::json;
    match rng.u8(..12) {
        0 => json!(null),
        1 => json!(rng.i64(..)),
        2 => json!(-1),
        3 => json!([1, "two", null]),
        4 => json!({"nested": {"deeper": [true]}}),
        5 => json!("x".repeat(rng.usize(..70_000))),
        6 => json!("a b:c.d*>"),
        7 => json!("\u{0}\u{1f}\u{7f}"),
        8 => json!("żółć-日本-🙂"),
        9 => json!(""),
        10 => json!(1e308),
        _ => json!(format!("id-{}", rng.u32(..1000))),
    }
}

/// A valid template, mutated in one to three structure-aware ways.
fn hostile_request(rng: &mut fastrand::Rng) -> (String, async_nats::HeaderMap, Vec<u8>) {
    let templates = templates();
    let (subject, mut body) = templates[rng.usize(..templates.len())].clone();
    let mut subject = subject.to_string();
    let mut headers = async_nats::HeaderMap::new();
    let mut raw_body = None;
    for _ in 0..rng.usize(1..=3) {
        if !body.is_object() {
            break;
        }
        match rng.u8(..10) {
            0 | 1 => {
                let fields: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
                if let Some(field) = fields.get(rng.usize(..fields.len().max(1))) {
                    body[field] = hostile_value(rng);
                }
            }
            2 => {
                let field =
                    ["id", "extra", "email", "limit", "after", "version", "at"][rng.usize(..7)];
                body[field] = hostile_value(rng);
            }
            3 => {
                if let Some(fields) = body.as_object_mut() {
                    let keys: Vec<String> = fields.keys().cloned().collect();
                    if !keys.is_empty() {
                        fields.remove(&keys[rng.usize(..keys.len())]);
                    }
                }
            }
            4 => {
                let text = body.to_string();
                let cut = rng.usize(..=text.len());
                raw_body = Some(text.as_bytes()[..cut].to_vec());
            }
            5 => raw_body = Some((0..rng.usize(..64)).map(|_| rng.u8(..)).collect()),
            6 => {
                let name = [
                    "Jetsource-Command-Id",
                    "Jetsource-Expected-Version",
                    "Jetsource-Correlation-Id",
                    "Jetsource-Actor",
                    "Jetsource-On-Behalf-Of",
                    "Jetsource-Min-Seq",
                    "Content-Type",
                    "Nats-Request-Info",
                ][rng.usize(..8)];
                let value = match rng.u8(..6) {
                    0 => "x".repeat(rng.usize(..10_000)),
                    1 => "-1".to_string(),
                    2 => "99999999999999999999999".to_string(),
                    3 => "application/cbor".to_string(),
                    4 => r#"{"acc":"EVIL","user":"x"}"#.to_string(),
                    _ => format!("v-{}", rng.u32(..)),
                };
                headers.insert(name, value.as_str());
            }
            7 => {
                let tokens = [
                    "cmd",
                    "qry",
                    "person",
                    "organization",
                    "Register",
                    "get",
                    "*",
                    ">",
                    "",
                    "x".repeat(300).leak(),
                ];
                let n = rng.usize(1..5);
                subject = (0..n)
                    .map(|_| tokens[rng.usize(..tokens.len())])
                    .collect::<Vec<_>>()
                    .join(".");
            }
            8 => body = serde_json::json!([body]),
            _ => {
                body["id"] = serde_json::json!(format!("f{}", rng.u16(..)));
            }
        }
    }
    let payload = raw_body.unwrap_or_else(|| body.to_string().into_bytes());
    (subject, headers, payload)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn seeded_fuzz_of_subjects_headers_bodies_and_frames() {
    use futures::StreamExt;
    let seed = std::env::var("JETSOURCE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261202u64);
    let cases = 3000;
    let server = TestServer::start();
    let (node_client, store, _node) = support::reference_node(&server, NodeConfig::default()).await;
    let connects = node_client.statistics().connects.load(Ordering::Relaxed);
    let client = jetsource::connect(&server.url()).await.unwrap();
    let rss_before = rss_bytes();

    let mut rng = fastrand::Rng::with_seed(seed);
    let requests: Vec<_> = (0..cases).map(|_| hostile_request(&mut rng)).collect();
    let outcomes = futures::stream::iter(requests.into_iter().enumerate())
        .map(|(i, (subject, headers, payload))| {
            let client = client.clone();
            async move {
                let ask = client.send_request(
                    subject.clone(),
                    async_nats::Request::new()
                        .headers(headers)
                        .payload(payload.into())
                        .timeout(Some(Duration::from_secs(10))),
                );
                (i, subject, ask.await)
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;

    let mut accepted_seqs = std::collections::BTreeSet::new();
    let mut answered = 0;
    for (i, subject, outcome) in outcomes {
        let reply = match outcome {
            Ok(reply) => reply,
            // A subject no node serves (mutated) has no responders; nothing else may fail.
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => continue,
            Err(e)
                if subject.contains('*')
                    || subject.contains('>')
                    || subject.split('.').any(str::is_empty) =>
            {
                let _ = e;
                continue;
            }
            Err(e) => panic!("case {i} (seed {seed}) {subject}: {e}"),
        };
        answered += 1;
        let body: serde_json::Value = serde_json::from_slice(&reply.payload)
            .unwrap_or_else(|e| panic!("case {i} (seed {seed}) {subject}: reply not JSON: {e}"));
        let code = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR_CODE))
            .map(|c| c.as_str().parse::<u16>().unwrap());
        match code {
            None if subject.starts_with("cmd.") => {
                assert_eq!(body["status"], "accepted", "case {i}: {body}");
                let seq = body["seq"].as_u64().unwrap();
                let n = body["events"].as_array().unwrap().len() as u64;
                accepted_seqs.extend(seq + 1 - n..=seq);
            }
            None => assert!(body.is_object(), "case {i}: {body}"),
            Some(code) => {
                assert!(
                    matches!(code, 400 | 403 | 404 | 409 | 422),
                    "case {i} (seed {seed}) {subject}: {code} for a client's mistake: {body}"
                );
                assert_eq!(body["status"], "rejected", "case {i}: {body}");
                assert!(!body["error"]["code"].as_str().unwrap().is_empty());
            }
        }
    }
    eprintln!(
        "fuzz seed {seed}: {cases} cases, {answered} answered, {} events accepted",
        accepted_seqs.len()
    );
    assert!(
        answered > cases / 2,
        "most cases reach the node: {answered}"
    );

    // Raw frames with broken header blocks, interleaved with the above's state.
    let mut raw = Raw::connect(server.port()).await;
    raw.send(b"SUB _INBOX.fuzz.> 1\r\n").await;
    for i in 0..300 {
        let mut header = b"NATS/1.0\r\n".to_vec();
        for _ in 0..rng.usize(..4) {
            let line: Vec<u8> = (0..rng.usize(..40))
                .map(|_| rng.u8(..))
                .filter(|b| *b != b'\r' && *b != b'\n')
                .collect();
            header.extend_from_slice(&line);
            header.extend_from_slice(b"\r\n");
        }
        header.extend_from_slice(b"\r\n");
        let (subject, _) = &templates()[rng.usize(..templates().len())];
        let body = register(&format!("raw-fuzz-{i}"));
        raw.send(&hpub(
            subject.as_bytes(),
            format!("_INBOX.fuzz.{i}").as_bytes(),
            &header,
            &body,
        ))
        .await;
    }
    let mut frames = Vec::new();
    while let Some(frame) = raw.next_message(Duration::from_secs(2)).await {
        frames.push(frame);
    }
    eprintln!("{} raw frames answered", frames.len());
    for frame in &frames {
        let body: serde_json::Value = serde_json::from_slice(&frame.payload).expect("a JSON reply");
        assert!(body.is_object());
        if let Some(code) = status(frame) {
            assert!(
                matches!(code, 400 | 403 | 404 | 409 | 422),
                "{code}: {body}"
            );
        } else if body["status"] == "accepted" {
            let seq = body["seq"].as_u64().unwrap();
            let n = body["events"].as_array().unwrap().len() as u64;
            accepted_seqs.extend(seq + 1 - n..=seq);
        }
    }

    assert_eq!(
        node_client.statistics().connects.load(Ordering::Relaxed),
        connects,
        "the node never reconnected (seed {seed})"
    );
    // Nothing stored but by accepted commands, and all of it readable.
    let stored: Vec<u64> = store
        .read_all(0)
        .map(|e| e.expect("every stored event is readable").seq)
        .collect()
        .await;
    let stored: std::collections::BTreeSet<u64> = stored.into_iter().collect();
    assert_eq!(
        stored, accepted_seqs,
        "stored events are exactly the acked ones (seed {seed})"
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 256 << 20, "memory grew by {} MB", grown >> 20);
}
