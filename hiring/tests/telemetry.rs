//! What an operator watches: each process's Prometheus metrics, `/healthz` and
//! `/readyz`, and the node's `$SRV.STATS`.

mod support;

use jetsource::testing::{free_port, http_get, TestServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{send, wait_for_nodes};

/// Polls `GET addr/path` until `check` holds on (status, body), or panics after 20 s.
async fn wait_http(addr: &str, path: &str, check: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = http_get(addr, path).await;
        if let Ok((status, body)) = &last {
            if check(*status, body) {
                return body.clone();
            }
        }
        assert!(Instant::now() < deadline, "{addr}{path}: {last:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample `name{labels}` in a Prometheus text page (labels as
/// rendered, e.g. `aggregate="person",command="Register",status="200"`).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn every_process_exports_metrics_and_health_and_srv_stats_counts_errors() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let (node_at, project_at, saga_at) = (addr(free_port()), addr(free_port()), addr(free_port()));
    let _node = support::start(&server.url(), &["node", "--metrics-addr", &node_at]);
    let _project = support::start(
        &server.url(),
        &["project", "person_directory", "--metrics-addr", &project_at],
    );
    let _saga = support::start(
        &server.url(),
        &["saga", "hiring", "--metrics-addr", &saga_at],
    );
    wait_for_nodes(&client, 1).await;
    for at in [&node_at, &project_at, &saga_at] {
        wait_http(at, "/readyz", |status, _| status == 200).await;
        let (status, body) = http_get(at, "/healthz").await.unwrap();
        assert_eq!(status, 200, "{body}");
    }

    let ada = json!({"id": "ada", "name": "Ada", "email": "ada@example.org"});
    assert_eq!(
        send(&client, "cmd.person.Register", ada.clone()).await["status"],
        "accepted"
    );
    assert_eq!(
        send(&client, "cmd.person.Register", ada).await["error"]["code"],
        "already_registered"
    );
    let reply = client
        .request("cmd.person.Register", "not json".into())
        .await
        .unwrap();
    assert!(
        reply.headers.is_some(),
        "a rejection carries the service error headers"
    );
    send(
        &client,
        "cmd.organization.Register",
        json!({"id": "acme", "name": "Acme"}),
    )
    .await;
    send(
        &client,
        "cmd.organization.OpenPosition",
        json!({"id": "acme", "position_id": "eng", "title": "Engineer"}),
    )
    .await;
    let offer = json!({"id": "acme", "position_id": "eng", "person_id": "ada", "offer_id": "o1", "expires_at": "2099-01-01T00:00:00Z"});
    assert_eq!(
        send(&client, "cmd.organization.ExtendOffer", offer).await["status"],
        "accepted"
    );

    // The node: commands by aggregate, command and status, with latencies.
    let page = wait_http(&node_at, "/metrics", |_, page| {
        page.contains(
            "jetsource_commands_total{aggregate=\"person\",command=\"Register\",status=\"400\"}",
        )
    })
    .await;
    let ok = r#"jetsource_commands_total{aggregate="person",command="Register",status="200"}"#;
    let conflict =
        r#"jetsource_commands_total{aggregate="person",command="Register",status="409"}"#;
    assert_eq!(sample(&page, ok), Some(1.0), "{page}");
    assert_eq!(sample(&page, conflict), Some(1.0), "{page}");
    assert!(
        page.contains(
            "jetsource_command_duration_seconds_bucket{aggregate=\"person\",command=\"Register\""
        ),
        "{page}"
    );
    assert!(
        sample(&page, "jetsource_appends_total").is_some_and(|n| n >= 4.0),
        "{page}"
    );
    assert!(
        page.contains("jetsource_append_publish_seconds_count"),
        "{page}"
    );

    // $SRV.STATS counts the rejections as errors.
    let stats = jetsource::node::service_replies(&client, "STATS", Duration::from_millis(500))
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(&stats[0]).unwrap();
    let register = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subject"] == "cmd.person.Register")
        .unwrap();
    assert_eq!(register["num_requests"], 3, "{register}");
    assert_eq!(register["num_errors"], 2, "{register}");

    // The projection: active, events applied, its lag and checkpoint.
    let page = wait_http(&project_at, "/metrics", |_, page| {
        page.contains("jetsource_consumer_lag_events{consumer=\"proj_person_directory\"} 0")
    })
    .await;
    assert_eq!(
        sample(
            &page,
            r#"jetsource_consumer_active{consumer="proj_person_directory"}"#
        ),
        Some(1.0),
        "{page}"
    );
    assert!(
        sample(
            &page,
            r#"jetsource_consumer_events_applied_total{consumer="proj_person_directory"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{page}"
    );
    assert!(
        sample(
            &page,
            r#"jetsource_consumer_checkpoint{consumer="proj_person_directory"}"#
        )
        .is_some_and(|n| n >= 5.0),
        "{page}"
    );

    // The saga: active, and its instance counted by stage with its deadline.
    let page = wait_http(&saga_at, "/metrics", |_, page| {
        page.contains(r#"jetsource_saga_instances{saga="hiring",stage="recorded"} 1"#)
    })
    .await;
    assert_eq!(
        sample(
            &page,
            r#"jetsource_consumer_active{consumer="saga_hiring"}"#
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, r#"jetsource_saga_pending_deadlines{saga="hiring"}"#),
        Some(1.0),
        "{page}"
    );

    // Without its server a process is alive but not ready.
    drop(server);
    wait_http(&node_at, "/readyz", |status, body| {
        status == 503 && body.contains("\"nats_connected\":false")
    })
    .await;
    let (status, _) = http_get(&node_at, "/healthz").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_standby_instance_is_ready_and_says_so() {
    let server = TestServer::start();
    let (first_at, second_at) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _first = support::start(
        &server.url(),
        &["project", "person_directory", "--metrics-addr", &first_at],
    );
    wait_http(&first_at, "/readyz", |status, body| {
        status == 200 && body.contains("\"active\"")
    })
    .await;
    let _second = support::start(
        &server.url(),
        &["project", "person_directory", "--metrics-addr", &second_at],
    );
    let body = wait_http(&second_at, "/readyz", |status, _| status == 200).await;
    assert!(body.contains("\"role\":\"standby\""), "{body}");
    let page = wait_http(&second_at, "/metrics", |_, page| {
        page.contains("jetsource_consumer_active")
    })
    .await;
    assert_eq!(
        sample(
            &page,
            r#"jetsource_consumer_active{consumer="proj_person_directory"}"#
        ),
        Some(0.0),
        "{page}"
    );
}

/// `jetsource status <args…>`: its exit code and stdout.
fn status(url: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetsource"))
        .arg("status")
        .args(args)
        .args(["--nats-url", url])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn status_check_fails_once_no_instance_runs_a_projection() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let _node = support::start(&server.url(), &["node"]);
    wait_for_nodes(&client, 1).await;
    let ada = json!({"id": "ada", "name": "Ada", "email": "ada@example.org"});
    assert_eq!(
        send(&client, "cmd.person.Register", ada).await["status"],
        "accepted"
    );
    let mut project = support::start(&server.url(), &["project", "person_directory"]);

    // Healthy: one node, the projection active and caught up.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report: Value = loop {
        let (code, out) = status(&server.url(), &["--check", "--json"]);
        if code == 0 {
            break serde_json::from_str(&out).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "status --check stayed at {code}: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(report["stream"]["name"], "EVENTS", "{report}");
    assert_eq!(report["stream"]["last_seq"], 1, "{report}");
    assert_eq!(report["nodes"].as_array().unwrap().len(), 1, "{report}");
    let directory = &report["consumers"][0];
    assert_eq!(directory["consumer"], "proj_person_directory", "{report}");
    assert_eq!(directory["checkpoint"], 1, "{report}");
    assert_eq!(directory["lag_events"], 0, "{report}");
    assert_eq!(directory["parked"], 0, "{report}");
    assert!(directory["active"].is_string(), "{report}");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{report}"
    );

    // kill -9: once its lease expires, nothing runs the projection.
    project.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let (code, out) = status(&server.url(), &["--check"]);
        if code == 2 {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "status --check stayed at {code}: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        out.contains("CRITICAL no instance of proj_person_directory holds its lease"),
        "{out}"
    );
    // Without --check the same state is no failure.
    assert_eq!(status(&server.url(), &[]).0, 0);
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn one_trace_follows_a_hire_from_the_first_command_to_the_employment() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let collector = jetsource::testing::OtlpCollector::start().await;
    let endpoint = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let exe = env!("CARGO_BIN_EXE_jetsource");
    let start = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--otlp-endpoint", &endpoint]);
        jetsource::testing::AppProcess::start_with_env(exe, &server.url(), &all, &env)
    };
    let _node = start(&["node"]);
    let _offers = start(&["project", "offers"]);
    let _saga = start(&["saga", "hiring"]);
    wait_for_nodes(&client, 1).await;
    support::acme_and_ada(&client).await;

    // The client's trace: one span per step of its flow, both in trace TRACE.
    let offer = json!({"id": "acme", "position_id": "eng", "person_id": "ada", "offer_id": "o1", "expires_at": "2099-01-01T00:00:00Z"});
    let extend = format!("00-{TRACE}-00f067aa0ba90201-01");
    let reply = support::send_with(
        &client,
        "cmd.organization.ExtendOffer",
        offer,
        &[("traceparent", &extend), ("tracestate", "client=1")],
    )
    .await;
    assert_eq!(reply["status"], "accepted", "{reply}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = support::send_with(
            &client,
            "cmd.person.AcceptOffer",
            json!({"id": "ada", "offer_id": "o1"}),
            &[("traceparent", &format!("00-{TRACE}-00f067aa0ba90202-01"))],
        )
        .await;
        if reply["status"] == "accepted" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the offer never reached ada: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The employment's event carries the trace on.
    let store = support::open_store(&server).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let employed = loop {
        let events = store.read_aggregate("person", "ada", 0).await.unwrap();
        if let Some(e) = events.iter().find(|e| e.event_type == "EmploymentStarted") {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "ada was never employed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let traceparent = employed.metadata.traceparent.clone().unwrap_or_default();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE}-")),
        "{traceparent:?}"
    );
    assert_eq!(
        employed.metadata.tracestate.as_deref(),
        None,
        "the accept sent no tracestate"
    );

    let org = store
        .read_aggregate("organization", "acme", 0)
        .await
        .unwrap();
    let extended = org
        .iter()
        .find(|e| e.event_type == "OfferExtended")
        .unwrap();
    assert_eq!(extended.metadata.tracestate.as_deref(), Some("client=1"));

    // Every process exported its part of that one trace, each span parented on the
    // span the work came from.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans: Vec<_> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == TRACE)
            .collect();
        let ids: std::collections::HashSet<&str> =
            spans.iter().map(|s| s.span_id.as_str()).collect();
        let client_spans = ["00f067aa0ba90201", "00f067aa0ba90202"];
        let orphans = spans.iter().filter(|s| {
            !ids.contains(s.parent_span_id.as_str())
                && !client_spans.contains(&s.parent_span_id.as_str())
        });
        // Node spans whose parent is a saga span: the commands the saga sent
        // (RecordOffer, Hire, StartEmployment).
        let saga_commands = spans
            .iter()
            .filter(|s| s.service == "jetsource node")
            .filter(|s| {
                spans
                    .iter()
                    .any(|p| p.span_id == s.parent_span_id && p.service == "jetsource saga hiring")
            })
            .count();
        let projected = spans
            .iter()
            .filter(|s| s.service == "jetsource project offers")
            .count();
        if saga_commands >= 3 && projected >= 2 && orphans.count() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans of trace {TRACE} so far: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client's sampler decides (flag `01`): an unsampled trace costs no span, but
/// its context still rides on the events, so a later sampled hop keeps the trace.
#[tokio::test]
async fn an_unsampled_trace_is_carried_onto_the_events_but_records_no_span() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let collector = jetsource::testing::OtlpCollector::start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let _node = jetsource::testing::AppProcess::start_with_env(
        env!("CARGO_BIN_EXE_jetsource"),
        &server.url(),
        &["node", "--otlp-endpoint", &collector.endpoint()],
        &env,
    );
    wait_for_nodes(&client, 1).await;
    let unsampled = "11111111111111111111111111111111";
    let sampled = "22222222222222222222222222222222";
    for (id, trace, flags) in [("ann", unsampled, "00"), ("bob", sampled, "01")] {
        let traceparent = format!("00-{trace}-00f067aa0ba90201-{flags}");
        let register = json!({"id": id, "name": id, "email": format!("{id}@example.org")});
        let reply = support::send_with(
            &client,
            "cmd.person.Register",
            register,
            &[("traceparent", &traceparent)],
        )
        .await;
        assert_eq!(reply["status"], "accepted", "{reply}");
    }

    // The sampled command's span arrives; the unsampled one never made one.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !collector.spans().iter().any(|s| s.trace_id == sampled) {
        assert!(Instant::now() < deadline, "no span of the sampled trace");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = collector.spans();
    assert!(
        spans.iter().all(|s| s.trace_id != unsampled),
        "the unsampled trace recorded spans: {spans:#?}"
    );

    // The unsampled context rides on unchanged (no span of ours to name as parent).
    let store = support::open_store(&server).await;
    let ann = store.read_aggregate("person", "ann", 0).await.unwrap();
    assert_eq!(
        ann[0].metadata.traceparent.as_deref(),
        Some(format!("00-{unsampled}-00f067aa0ba90201-00").as_str())
    );
    let bob = store.read_aggregate("person", "bob", 0).await.unwrap();
    let onward = bob[0].metadata.traceparent.clone().unwrap_or_default();
    assert!(
        onward.starts_with(&format!("00-{sampled}-")) && !onward.contains("00f067aa0ba90201"),
        "the sampled event names the node's span as its parent: {onward:?}"
    );
}

#[tokio::test]
async fn custom_metadata_headers_reach_the_events_and_bad_trace_headers_are_refused() {
    let server = TestServer::start();
    let (client, store, _node) = support::reference_node(&server, Default::default()).await;
    let ada = json!({"id": "ada", "name": "Ada", "email": "ada@example.org"});
    let reply = support::send_with(
        &client,
        "cmd.person.Register",
        ada,
        &[
            ("Jetsource-Meta-Source", "web"),
            ("Jetsource-Meta-Campaign", "spring"),
        ],
    )
    .await;
    assert_eq!(reply["status"], "accepted", "{reply}");
    let events = store.read_aggregate("person", "ada", 0).await.unwrap();
    let custom = &events[0].metadata.custom;
    assert_eq!(
        custom.get("Source").map(String::as_str),
        Some("web"),
        "{custom:?}"
    );
    assert_eq!(
        custom.get("Campaign").map(String::as_str),
        Some("spring"),
        "{custom:?}"
    );

    let bob = json!({"id": "bob", "name": "Bob", "email": "bob@example.org"});
    let bad = [
        ("traceparent", "00-not-a-trace-01"),
        (
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ),
        ("Jetsource-Meta-Bad.Key", "x"),
    ];
    for (name, value) in bad {
        let reply = support::send_with(
            &client,
            "cmd.person.Register",
            bob.clone(),
            &[(name, value)],
        )
        .await;
        assert_eq!(
            reply["error"]["code"], "invalid_header",
            "{name}: {value}: {reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(name), "{message}");
    }
    let many: Vec<(String, String)> = (0..17)
        .map(|i| (format!("Jetsource-Meta-K{i}"), "v".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let reply = support::send_with(&client, "cmd.person.Register", bob, &many).await;
    assert_eq!(reply["error"]["code"], "invalid_header", "{reply}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    use std::io::BufRead;
    let server = TestServer::start();
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_jetsource"))
        .args([
            "node",
            "--log-format",
            "json",
            "--log-level",
            "info",
            "-s",
            &server.url(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(node.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let entry: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            entry["timestamp"].is_string() && entry["level"].is_string(),
            "{entry}"
        );
        let message = entry["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        seen.push(message.clone());
        if message == "jetsource node ready" {
            break;
        }
    }
    let _ = node.kill();
    let _ = node.wait();
    assert!(seen.iter().any(|m| m == "node serving"), "{seen:?}");
}
