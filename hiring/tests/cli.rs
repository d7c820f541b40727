//! The command line as a natscli user meets it: `-s`, the NATS_* variables and
//! contexts, `-H`, `--min-seq`, `--json`, header rows, full subjects.

mod support;

use jetsource::testing::TestServer;
use serde_json::Value;
use support::wait_for_nodes;

/// `jetsource <args…>` with a config dir of its own (no natscli context unless the
/// test writes one) and `env`: exit code, stdout, stderr.
fn jetsource(
    config: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetsource"))
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_speaks_natscli() {
    let server = TestServer::start();
    let url = server.url();
    let client = jetsource::connect(&url).await.unwrap();
    let _node = support::start(&url, &["node"]);
    let _directory = support::start(&url, &["project", "person_directory"]);
    wait_for_nodes(&client, 1).await;
    let config = tempfile::tempdir().unwrap();
    let dir = config.path();
    let ada = r#"{"id":"ada","name":"Ada","email":"ada@example.org"}"#;

    // -s and the full subject; -H sets a header (here the idempotency key).
    let (code, out, err) = jetsource(
        dir,
        &[],
        &[
            "send",
            "cmd.person.Register",
            ada,
            "-s",
            &url,
            "-H",
            "Jetsource-Command-Id:reg-ada",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let ack: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ack["status"], "accepted");
    // NATS_URL alone, and the retry with the same key answers the same ack.
    let (code, out, err) = jetsource(
        dir,
        &[("NATS_URL", &url)],
        &[
            "send",
            "person.Register",
            ada,
            "-H",
            "Jetsource-Command-Id:reg-ada",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["seq"],
        ack["seq"]
    );

    // A selected natscli context supplies the server.
    std::fs::create_dir_all(dir.join("nats/context")).unwrap();
    std::fs::write(
        dir.join("nats/context/local.json"),
        format!(r#"{{"description":"test","url":"{url}"}}"#),
    )
    .unwrap();
    std::fs::write(dir.join("nats/context.txt"), "local\n").unwrap();
    // --min-seq reads the write just made; --json shows the status code.
    let seq = ack["seq"].to_string();
    let (code, out, err) = jetsource(
        dir,
        &[],
        &[
            "query",
            "qry.person.get",
            r#"{"id":"ada"}"#,
            "--min-seq",
            &seq,
            "--json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["status_code"], 200, "{reply}");
    assert_eq!(reply["body"]["name"], "Ada", "{reply}");
    // A rejection: exit 2, its code in --json.
    let (code, out, _) = jetsource(dir, &[], &["send", "person.Register", ada, "--json"]);
    assert_eq!(code, 2, "{out}");
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["status_code"], 409, "{reply}");
    assert_eq!(
        reply["body"]["error"]["code"], "already_registered",
        "{reply}"
    );
    // A named context that does not exist is an error, not a silent default.
    let (code, _, err) = jetsource(dir, &[], &["status", "--context", "nope"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("context \"nope\""), "{err}");

    // Lists have a header row; --json gives arrays.
    let (code, out, err) = jetsource(dir, &[], &["events", "person", "ada"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("SEQ"), "{out}");
    assert!(lines.next().unwrap().contains("PersonRegistered"), "{out}");
    let (_, out, _) = jetsource(dir, &[], &["events", "person", "ada", "--json"]);
    let events: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events[0]["type"], "PersonRegistered", "{events}");
    let (_, out, _) = jetsource(dir, &[], &["dlq", "list"]);
    assert!(out.starts_with("DLQ_SEQ"), "{out}");
    let (_, out, _) = jetsource(dir, &[], &["dlq", "list", "--json"]);
    assert_eq!(out.trim(), "[]");
    let (_, out, _) = jetsource(dir, &[], &["sagas", "list", "hiring"]);
    assert!(out.starts_with("ID"), "{out}");
    let (_, out, _) = jetsource(dir, &[], &["sagas", "list", "hiring", "--json"]);
    assert_eq!(out.trim(), "[]");

    // NATS_TIMEOUT bounds the wait for a reply nobody sends.
    let (code, _, err) = jetsource(
        dir,
        &[("NATS_TIMEOUT", "300ms")],
        &["query", "nothing.here"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no jetsource node serves qry.nothing.here"),
        "{err}"
    );
}
