//! Helpers for the reference app's tests: its binary as a child process, its node
//! in this process, and a rebuild check of its directory.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod raw;

use jetsource::testing::{AppProcess, TestServer};
use jetsource::{EventStore, StoreConfig};

pub use jetsource::testing::{view_rows, wait_applied};

/// A `jetsource` child process (the binary under test), SIGKILLed on drop.
pub type Process = AppProcess;

/// `jetsource <args…> --nats-url <url> --log-level warn`.
pub fn start(url: &str, args: &[&str]) -> Process {
    AppProcess::start(env!("CARGO_BIN_EXE_jetsource"), url, args)
}

/// `jetsource <args…> -s <url>` run to its end: its output, whatever its exit code.
pub fn run(url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_jetsource"))
        .args(args)
        .args(["-s", url])
        .output()
        .expect("jetsource runs")
}

/// [`run`], asserting it succeeded: its standard output.
pub fn run_ok(url: &str, args: &[&str]) -> String {
    let out = run(url, args);
    assert!(
        out.status.success(),
        "jetsource {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Registers people `p0`..`p<n-1>` (named `P <i>`, email `p<i>@x.org`).
pub async fn register_people(store: &EventStore, n: usize) {
    let people = jetsource::Repository::<hiring::Person>::new(store.clone(), Default::default());
    for i in 0..n {
        let cmd = hiring::PersonCommand::Register {
            name: format!("P {i}"),
            email: format!("p{i}@x.org"),
        };
        people
            .execute(&format!("p{i}"), &cmd, &jetsource::Metadata::default())
            .await
            .expect("register");
    }
}

pub async fn open_store(server: &TestServer) -> EventStore {
    let client = jetsource::connect(&server.url()).await.expect("connect");
    EventStore::open(client, StoreConfig::default())
        .await
        .expect("open store")
}

/// Waits until `n` nodes serve every endpoint.
pub async fn wait_for_nodes(client: &async_nats::Client, n: usize) {
    let subjects = jetsource::Subjects::default();
    let timeout = std::time::Duration::from_secs(20);
    if let Err(e) = jetsource::node::wait_until_serving(client, &subjects, n, timeout).await {
        panic!("{e}");
    }
}

/// Takes `person_directory`'s rows as they are (its processes must be stopped),
/// rebuilds it up to `last` in this process, and asserts every row is the same.
pub async fn assert_directory_equals_a_rebuild(store: &EventStore, last: u64) {
    jetsource::testing::assert_view_equals_a_rebuild(store, hiring::PersonDirectory, last).await;
}

/// A node of the reference domain (Person, Organization, the directory's
/// queries) on its own connection to `server`.
pub async fn reference_node(
    server: &TestServer,
    config: jetsource::node::NodeConfig,
) -> (async_nats::Client, EventStore, jetsource::node::RunningNode) {
    use hiring::{Organization, Person, PersonDirectory};
    let client = jetsource::connect(&server.url()).await.unwrap();
    let store = EventStore::open(client.clone(), StoreConfig::default())
        .await
        .unwrap();
    let node = jetsource::node::Node::new(store.clone(), config)
        .register::<Person>(Default::default())
        .register::<Organization>(Default::default())
        .view(&PersonDirectory)
        .start()
        .await
        .unwrap();
    (client, store, node)
}

/// Sends `body` to `subject` (a command or query); the reply's JSON.
pub async fn send(
    client: &async_nats::Client,
    subject: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    send_with(client, subject, body, &[]).await
}

/// [`send`] with `headers` (none: a plain request without a header block).
pub async fn send_with(
    client: &async_nats::Client,
    subject: &str,
    body: serde_json::Value,
    headers: &[(&str, &str)],
) -> serde_json::Value {
    let payload = serde_json::to_vec(&body).unwrap().into();
    let reply = if headers.is_empty() {
        client.request(subject.to_string(), payload).await
    } else {
        let mut h = async_nats::HeaderMap::new();
        for (name, value) in headers {
            h.insert(*name, *value);
        }
        client
            .request_with_headers(subject.to_string(), h, payload)
            .await
    };
    serde_json::from_slice(&reply.unwrap().payload).unwrap_or(serde_json::Value::Null)
}

/// Organization `acme` with open position `eng`, and person `ada`: what a hire needs.
pub async fn acme_and_ada(client: &async_nats::Client) {
    use serde_json::json;
    let steps = [
        (
            "cmd.organization.Register",
            json!({"id": "acme", "name": "Acme"}),
        ),
        (
            "cmd.organization.OpenPosition",
            json!({"id": "acme", "position_id": "eng", "title": "Engineer"}),
        ),
        (
            "cmd.person.Register",
            json!({"id": "ada", "name": "Ada", "email": "ada@example.org"}),
        ),
    ];
    for (subject, body) in steps {
        let reply = send(client, subject, body).await;
        assert_eq!(reply["status"], "accepted", "{subject}: {reply}");
    }
}
