//! The binary's processes as an operator meets them: when a node counts as up, and
//! that SIGTERM stops every long-running process whenever it arrives.

mod support;

use jetsource::testing::{free_port, TestServer};
use serde_json::{json, Value};
use std::time::Duration;
use support::wait_for_nodes;

/// Regression: `jetsource up --demo` waited on `$SRV.PING`, which a node answers
/// before its endpoints are subscribed, and its first command got "no responders".
#[tokio::test]
async fn a_node_counted_as_serving_answers_its_first_command() {
    let server = TestServer::start();
    let client = jetsource::connect(&server.url()).await.unwrap();
    for round in 0..3 {
        let mut node = support::start(&server.url(), &["node"]);
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
    let _node = support::start(&server.url(), &["node"]);
    wait_for_nodes(&client, 1).await;
    let kinds: [&[&str]; 3] = [
        &["saga", "hiring"],
        &["project", "person_directory"],
        &["node"],
    ];
    for args in kinds {
        for delay_ms in [0, 30, 80, 150, 300, 600, 1200] {
            let mut process = support::start(&server.url(), args);
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

/// The pid in the lease on `key`, if a live holder has it.
async fn lease_holder(store: &jetsource::EventStore, key: &str) -> Option<u32> {
    let kv = store.jetstream().get_key_value("leases").await.ok()?;
    let value = kv.get(key).await.ok()??;
    String::from_utf8_lossy(&value)
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Finding: a projection kill -9'd and restarted at once waited for the dead
/// holder's lease (10 s). Now, with an active and a standby process, killing the
/// active one hands its work to the standby within about a second; measured over
/// ten kills, each checked by an event written after the kill reaching the view.
#[tokio::test]
async fn failover_after_kill_9_takes_about_a_second() {
    use hiring::{Person, PersonCommand};
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = support::open_store(&server).await;
    let people = jetsource::Repository::<Person>::new(store.clone(), Default::default());
    let register = |i: usize| {
        let people = &people;
        async move {
            let command = PersonCommand::Register {
                name: format!("P {i}"),
                email: format!("p{i}@example.org"),
            };
            people
                .execute(&format!("p{i}"), &command, &Default::default())
                .await
                .unwrap()
                .seq
        }
    };
    let args = ["project", "person_directory"];
    let mut processes = [
        support::start(&server.url(), &args),
        support::start(&server.url(), &args),
    ];
    let seq = register(0).await;
    support::wait_applied(
        &store,
        "view_person_directory",
        seq,
        Duration::from_secs(20),
    )
    .await;
    let mut failovers = Vec::new();
    for round in 1..=10 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut holder = None;
        while holder.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "nobody holds the lease"
            );
            holder = lease_holder(&store, "proj_person_directory").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let holder = holder.unwrap();
        let active = processes
            .iter()
            .position(|p| p.0.id() == holder)
            .expect("the holder is one of ours");
        processes[active].kill();
        let killed = std::time::Instant::now();
        let seq = register(round).await;
        support::wait_applied(
            &store,
            "view_person_directory",
            seq,
            Duration::from_secs(10),
        )
        .await;
        failovers.push(killed.elapsed());
        // The killed one comes back as the new standby.
        processes[active] = support::start(&server.url(), &args);
    }
    failovers.sort();
    let (median, max) = (
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1],
    );
    println!("failover after kill -9 over 10 kills: median {median:?}, max {max:?}");
    assert!(
        // Measured: median 1.75 s, max 1.79 s; the bound leaves room for a busy CI.
        max < Duration::from_millis(3000),
        "median {median:?}, max {max:?}"
    );
}

/// Finding: SIGSTOP of the active projection for longer than its lease let the
/// standby take over; on SIGCONT the woken one deleted the new holder's lease and
/// the two swapped every second from then on, both writing. Now the woken one
/// stands by, the new holder keeps the role, and the view ends equal to a rebuild.
#[tokio::test]
async fn two_projection_instances_become_active_at_once_after_a_pause() {
    use hiring::{Person, PersonCommand};
    use rustix::process::{kill_process, Pid, Signal};
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = support::open_store(&server).await;
    let people = jetsource::Repository::<Person>::new(store.clone(), Default::default());
    let args = ["project", "person_directory"];
    let processes = [
        support::start(&server.url(), &args),
        support::start(&server.url(), &args),
    ];
    let writer = {
        let people = jetsource::Repository::<Person>::new(store.clone(), Default::default());
        tokio::spawn(async move {
            for i in 0..600 {
                let id = format!("w{i}");
                let register = PersonCommand::Register {
                    name: "W".into(),
                    email: format!("{id}@a.org"),
                };
                people
                    .execute(&id, &register, &Default::default())
                    .await
                    .unwrap();
                let change = PersonCommand::ChangeEmail {
                    email: format!("{id}@b.org"),
                };
                people
                    .execute(&id, &change, &Default::default())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let holder = || lease_holder(&store, "proj_person_directory");
    for round in 0..3 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let paused = loop {
            if let Some(pid) = holder().await {
                break pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no holder"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(processes.iter().any(|p| p.0.id() == paused));
        let pid = Pid::from_raw(paused as i32).unwrap();
        kill_process(pid, Signal::STOP).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await; // twice the lease
        let taken = holder().await;
        kill_process(pid, Signal::CONT).unwrap();
        assert!(
            taken.is_some() && taken != Some(paused),
            "round {round}: the standby took over while the holder was paused ({taken:?})"
        );
        // From now on the role stays where it went: no swapping back and forth.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = holder().await;
            assert!(
                now == taken || now.is_none(),
                "round {round}: the lease moved from {taken:?} to {now:?} with no fault"
            );
        }
    }
    writer.await.unwrap();
    let last = store.last_seq().await.unwrap();
    support::wait_applied(
        &store,
        "view_person_directory",
        last,
        Duration::from_secs(20),
    )
    .await;
    drop(processes);
    support::assert_directory_equals_a_rebuild(&store, last).await;
    drop(people);
}

/// Finding: `jetsource dlq retry` rewound the checkpoint under the running
/// projection, which exited ("checkpoint moved under this runner") and took
/// `jetsource up` down with it. The running projection now takes the retried event
/// over (here it parks it again: it is still unreadable) and goes on.
#[tokio::test]
async fn dlq_retry_stops_the_stack() {
    use jetsource::projection::dlq;
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = support::open_store(&server).await;
    let client = store.client().clone();
    // Not an event: no headers at all.
    client
        .publish("events.person.garbled", "not an event".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut projection = support::start(&server.url(), &["project", "person_directory"]);
    let parked = || async {
        dlq::list(&store)
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.consumer == "proj_person_directory")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(p) = parked().await {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let retry = std::process::Command::new(env!("CARGO_BIN_EXE_jetsource"))
        .args([
            "dlq",
            "retry",
            &first.dlq_seq.to_string(),
            "--nats-url",
            &server.url(),
        ])
        .output()
        .unwrap();
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    let again = loop {
        if let Some(p) = parked().await.filter(|p| p.dlq_seq != first.dlq_seq) {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the retry was not taken up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(again.seq, first.seq);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        matches!(projection.0.try_wait(), Ok(None)),
        "the projection process is still running"
    );
    // And still applying events.
    let people = jetsource::Repository::<hiring::Person>::new(store.clone(), Default::default());
    let command = hiring::PersonCommand::Register {
        name: "After".into(),
        email: "after@example.org".into(),
    };
    let seq = people
        .execute("after", &command, &Default::default())
        .await
        .unwrap()
        .seq;
    support::wait_applied(
        &store,
        "view_person_directory",
        seq,
        Duration::from_secs(10),
    )
    .await;
    projection.kill();
}

/// Issue 9: under sustained load with no fault, the active projection keeps its
/// role (its lease renewals are not starved by the work), and the standby stays idle.
#[tokio::test]
async fn the_active_instance_keeps_its_role_under_sustained_load() {
    use hiring::{Person, PersonCommand};
    let server = TestServer::start_with(jetsource::nats_server::Durability::Fast);
    let store = support::open_store(&server).await;
    let args = ["project", "person_directory"];
    let _processes = [
        support::start(&server.url(), &args),
        support::start(&server.url(), &args),
    ];
    let people = std::sync::Arc::new(jetsource::Repository::<Person>::new(
        store.clone(),
        Default::default(),
    ));
    let until = std::time::Instant::now() + Duration::from_secs(8);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let people = people.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while std::time::Instant::now() < until {
                    let id = format!("load{w}-{i}");
                    let command = PersonCommand::Register {
                        name: "L".into(),
                        email: format!("{id}@x.org"),
                    };
                    people
                        .execute(&id, &command, &Default::default())
                        .await
                        .unwrap();
                    i += 1;
                }
                i
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let holder = loop {
        if let Some(pid) = lease_holder(&store, "proj_person_directory").await {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nobody took the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = lease_holder(&store, "proj_person_directory").await;
        assert_eq!(now, Some(holder), "the role moved under load with no fault");
    }
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    let last = store.last_seq().await.unwrap();
    support::wait_applied(
        &store,
        "view_person_directory",
        last,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        lease_holder(&store, "proj_person_directory").await,
        Some(holder)
    );
    println!("{written} commands in 8 s; the holder kept the lease throughout");
}
