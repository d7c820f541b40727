//! The binary's processes as an operator meets them: when a node counts as up, and
//! that SIGTERM stops every long-running process whenever it arrives.

mod support;

use jetsource::testing::TestServer;
use serde_json::{json, Value};
use std::time::Duration;
use support::{wait_for_nodes, Process};

/// Regression: `jetsource up --demo` waited on `$SRV.PING`, which a node answers
/// before its endpoints are subscribed, and its first command got "no responders".
#[tokio::test]
async fn a_node_counted_as_serving_answers_its_first_command() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    for round in 0..3 {
        let mut node = Process::start(&server.url(), &["node"]);
        wait_for_nodes(&client, 1).await;
        let body = json!({"id": format!("org{round}"), "name": "Org"});
        let reply = client
            .request(
                "cmd.organization.Register",
                serde_json::to_vec(&body).unwrap().into(),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: the first command: {e}"));
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["status"], "accepted", "round {round}: {reply}");
        node.kill();
        // Let the server notice the dead connection before the next round counts.
        wait_for_no_nodes(&client).await;
    }
}

/// Regression: a SIGTERM that landed between two waits for it was dropped (tokio
/// keeps the handler installed and discards signals nobody waits for), so `jetsource
/// up` had to SIGKILL the saga after 10 s.
#[tokio::test]
async fn sigterm_at_any_moment_of_startup_stops_the_process() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    let _node = Process::start(&server.url(), &["node"]);
    wait_for_nodes(&client, 1).await;
    let kinds: [&[&str]; 3] = [
        &["saga", "hiring"],
        &["project", "person_directory"],
        &["node"],
    ];
    for args in kinds {
        for delay_ms in [0, 30, 80, 150, 300, 600, 1200] {
            let mut process = Process::start(&server.url(), args);
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let status = process.terminate(Duration::from_secs(5));
            assert!(
                status.is_some(),
                "jetsource {args:?} still running 5 s after a SIGTERM sent {delay_ms} ms after its start"
            );
        }
    }
}

async fn wait_for_no_nodes(client: &async_nats::Client) {
    for _ in 0..100 {
        let subjects = jetsource::Subjects::default();
        let none = Duration::from_millis(1);
        // `wait_until_serving` for 1 node failing within 1 ms means none answered.
        if jetsource::node::wait_until_serving(client, &subjects, 1, none)
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a killed node still answers $SRV.INFO");
}

/// `jetsource up` on `dir` and `port`, its stdout lines collected as they come.
struct Up {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Up {
    fn start(dir: &std::path::Path, port: u16) -> Up {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jetsource"))
            .args(["up", "--port", &port.to_string(), "--data-dir"])
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start jetsource up");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Up { child, lines }
    }

    /// Waits until a line containing `text` was printed; returns it.
    fn wait_for(&self, text: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no line with {text:?} in {within:?}: {:?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.child.wait().unwrap()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Findings: a second `jetsource up` on the same data dir started a second server
/// on the same store and truncated the logs; a child that died stopped the stack.
/// Now the second `up` is refused naming the first, logs are appended, and a
/// killed child is restarted while the stack runs on.
#[tokio::test]
async fn two_ups_on_one_data_dir_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut up = Up::start(dir.path(), port);
    up.wait_for("jetsource is up", Duration::from_secs(60));
    let node_log = dir.path().join("logs/node.log");
    let log_before = std::fs::read_to_string(&node_log).unwrap();

    let second = std::process::Command::new(env!("CARGO_BIN_EXE_jetsource"))
        .args(["up", "--port", &free_port().to_string(), "--data-dir"])
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", up.child.id())),
        "the refusal names the running up: {stderr}"
    );
    let log_after = std::fs::read_to_string(&node_log).unwrap();
    assert!(
        log_after.starts_with(&log_before),
        "the node's log was not truncated"
    );

    // kill -9 the node: up restarts it and the stack serves again.
    let line = up.wait_for("  node ", Duration::from_secs(1));
    let pid: i32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    up.wait_for("node restarted", Duration::from_secs(20));
    let client = jetsource::connect(&format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    wait_for_nodes(&client, 1).await;
    let reply = client
        .request(
            "cmd.organization.Register",
            serde_json::to_vec(&json!({"id": "after", "name": "Org"}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["status"], "accepted", "{reply}");
    let log = std::fs::read_to_string(&node_log).unwrap();
    assert!(
        log.starts_with(&log_before),
        "the restarted node appends to its log"
    );
    assert_eq!(up.stop().code(), Some(0));
    up.wait_for("stopped.", Duration::from_secs(1));
}
