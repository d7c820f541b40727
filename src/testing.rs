//! Disposable nats-servers for tests and benchmarks: a random loopback port, a temp
//! store, JetStream on, killed on drop, the tail of the log printed when the test
//! that owns it panics. A server can be killed and restarted on the same store, and
//! three of them can form a cluster.
//!
//! The binary comes from [`crate::nats_server::find_or_provision`];
//! when there is none the harness panics. It never skips: a test that cannot get a
//! server fails.

use crate::nats_server::{find_or_provision, standalone_config, Durability};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| match find_or_provision() {
        Ok(path) => path,
        Err(e) => panic!("the test harness needs a nats-server: {e}"),
    })
}

/// One disposable nats-server.
///
/// ```no_run
/// # async fn demo() {
/// let server = jetsource::testing::TestServer::start();
/// let client = jetsource::connect(&server.url()).await.unwrap();
/// # }
/// ```
#[derive(Debug)]
pub struct TestServer {
    name: String,
    port: u16,
    dir: tempfile::TempDir,
    durability: Durability,
    cluster: Option<ClusterRole>,
    extra: String,
    child: Option<Child>,
    /// Log length when the current process started: readiness is judged after it.
    log_start: usize,
}

#[derive(Debug, Clone)]
struct ClusterRole {
    route_port: u16,
    routes: Vec<u16>,
}

impl TestServer {
    /// Starts a standalone server in `safe` durability (`sync_interval: always`).
    pub fn start() -> TestServer {
        TestServer::start_with(Durability::Safe)
    }

    /// Starts a standalone server in the given durability mode.
    pub fn start_with(durability: Durability) -> TestServer {
        TestServer::start_with_config(durability, "")
    }

    /// Starts a standalone server with extra configuration appended (accounts,
    /// authorization, limits), in the given durability mode.
    pub fn start_with_config(durability: Durability, extra: &str) -> TestServer {
        let mut server = TestServer::new("n1".into(), durability, None);
        server.extra = extra.to_string();
        server.launch();
        server.wait_for_log("Server is ready", Duration::from_secs(20));
        server
    }

    fn new(name: String, durability: Durability, cluster: Option<ClusterRole>) -> TestServer {
        TestServer {
            name,
            port: free_port(),
            dir: tempfile::Builder::new()
                .prefix("jetsource-nats-")
                .tempdir()
                .expect("a temp dir for the server"),
            durability,
            cluster,
            extra: String::new(),
            child: None,
            log_start: 0,
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The durability mode it runs in.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The store directory, kept across [`restart`](Self::restart).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn write_config(&self) -> PathBuf {
        let store = self.store_dir();
        let mut conf = standalone_config(&self.name, self.port, &store, self.durability);
        if let Some(c) = &self.cluster {
            let routes: Vec<String> = c
                .routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            conf.push_str(&format!(
                "cluster {{\n  name: jetsource-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                c.route_port,
                routes.join(", ")
            ));
        }
        conf.push_str(&self.extra);
        let path = self.dir.path().join("server.conf");
        fs::write(&path, conf).expect("write server config");
        path
    }

    fn launch(&mut self) {
        let config = self.write_config();
        self.log_start = fs::metadata(self.log_path())
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        self.child = Some(child);
    }

    /// Waits until the log holds `needle` (counting only text after the last start).
    fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = fs::read(self.log_path()).unwrap_or_default();
            let since_start =
                String::from_utf8_lossy(log.get(self.log_start..).unwrap_or_default());
            if since_start.contains(needle) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "nats-server exited with {status} before `{needle}`:\n{}",
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server did not log `{needle}` within {timeout:?}:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it to go. The store stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store, and waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
        self.wait_for_log("Server is ready", Duration::from_secs(30));
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- nats-server {} ({}) log tail ---\n{}\n---",
                self.name,
                self.url(),
                self.log_tail(40)
            );
        }
        self.stop();
    }
}

/// A cluster of nats-servers on loopback, JetStream clustered, for R3 streams.
///
/// ```no_run
/// let cluster = jetsource::testing::TestCluster::start(3);
/// println!("connect to {}", cluster.urls());
/// ```
#[derive(Debug)]
pub struct TestCluster {
    /// The servers, in start order.
    pub nodes: Vec<TestServer>,
}

impl TestCluster {
    /// Starts `size` servers routed to each other and waits for a JetStream meta leader.
    pub fn start(size: usize) -> TestCluster {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let mut nodes: Vec<TestServer> = (0..size)
            .map(|i| {
                let role = ClusterRole {
                    route_port: route_ports[i],
                    routes: route_ports
                        .iter()
                        .copied()
                        .filter(|p| *p != route_ports[i])
                        .collect(),
                };
                TestServer::new(format!("n{}", i + 1), Durability::Safe, Some(role))
            })
            .collect();
        for node in &mut nodes {
            node.launch();
        }
        for node in &mut nodes {
            node.wait_for_log("Server is ready", Duration::from_secs(30));
        }
        // Every node must know the meta leader before streams can be placed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nodes.iter().all(|n| {
            fs::read_to_string(n.log_path())
                .unwrap_or_default()
                .contains("metadata leader")
        }) {
            assert!(
                Instant::now() < deadline,
                "no JetStream meta leader elected in 30s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TestCluster { nodes }
    }

    /// All client URLs, comma-separated, for a client that fails over.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(TestServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A process of an app's binary under test (`<exe> <args…> --nats-url <url>
/// --log-level warn`, stdout discarded), SIGKILLed on drop.
///
/// ```no_run
/// use jetsource::testing::{AppProcess, TestServer};
/// let server = TestServer::start();
/// // In an integration test of the crate with the binary: env!("CARGO_BIN_EXE_<name>").
/// let mut node = AppProcess::start("target/debug/orders", &server.url(), &["node"]);
/// assert!(node.terminate(std::time::Duration::from_secs(10)).is_some_and(|s| s.success()));
/// ```
#[derive(Debug)]
pub struct AppProcess(pub Child);

impl AppProcess {
    /// Starts `exe` with `args`, connected to the server at `url`.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn start(exe: impl AsRef<std::ffi::OsStr>, url: &str, args: &[&str]) -> AppProcess {
        AppProcess::start_with_env(exe, url, args, &[])
    }

    /// [`start`](Self::start) with environment variables set for the child.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn start_with_env(
        exe: impl AsRef<std::ffi::OsStr>,
        url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> AppProcess {
        let exe = exe.as_ref();
        let child = Command::new(exe)
            .args(args)
            .args(["--nats-url", url, "--log-level", "warn"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {exe:?} {args:?}: {e}"));
        AppProcess(child)
    }

    /// SIGTERM, then waits up to `within` for it to exit: its exit status, or `None`
    /// if it is still running (it is then SIGKILLed on drop).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// kill -9, and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the view in `bucket` has applied stream sequence `seq`.
///
/// # Panics
/// After `within`, naming where the view stands.
pub async fn wait_applied(store: &crate::EventStore, bucket: &str, seq: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let applied = crate::projection::storage::applied(store, bucket)
            .await
            .unwrap_or(0);
        if applied >= seq {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{bucket} stayed at {applied} of {seq}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every row of a view bucket as stored (`{seq, value}`), by key; not the
/// checkpoint stored beside them.
///
/// # Panics
/// When the bucket cannot be read.
pub async fn view_rows(
    store: &crate::EventStore,
    bucket: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    use futures::StreamExt;
    let kv = store
        .jetstream()
        .get_key_value(bucket)
        .await
        .unwrap_or_else(|e| panic!("bucket {bucket}: {e}"));
    let mut keys = kv.keys().await.expect("the bucket's keys");
    let mut out = std::collections::BTreeMap::new();
    while let Some(key) = keys.next().await {
        let key = key.expect("a key");
        if !crate::projection::storage::is_row_key(&key) {
            continue;
        }
        let Some(bytes) = kv.get(&key).await.expect("a row") else {
            continue;
        };
        out.insert(key, serde_json::from_slice(&bytes).expect("a stored row"));
    }
    out
}

/// Takes `projection`'s rows as they are (its processes must be stopped), rebuilds
/// the view from nothing up to stream sequence `last` in this process, and asserts
/// that every row is the same: no view may differ from a rebuild.
///
/// # Panics
/// When a row differs (naming up to five), or the store fails.
pub async fn assert_view_equals_a_rebuild<P: crate::projection::Projection>(
    store: &crate::EventStore,
    projection: P,
    last: u64,
) {
    use crate::projection::{ProjectionRunner, RunnerConfig};
    let name = projection.name().to_string();
    let bucket = format!("view_{name}");
    let survived = view_rows(store, &bucket).await;
    let js = store.jetstream();
    let events = js
        .get_stream(&store.config().stream)
        .await
        .expect("the events stream");
    let _ = events.delete_consumer(&format!("proj_{name}")).await;
    js.delete_key_value(&bucket).await.expect("drop the view");
    let mut fresh = ProjectionRunner::new(store.clone(), projection, RunnerConfig::default())
        .await
        .expect("a fresh runner");
    while fresh.checkpoint() < last {
        fresh.step().await.expect("a rebuild step");
    }
    let rebuilt = view_rows(store, &bucket).await;
    let differing: Vec<_> = rebuilt
        .keys()
        .chain(survived.keys())
        .filter(|k| survived.get(*k) != rebuilt.get(*k))
        .map(|k| format!("{k}: {:?}, rebuilt {:?}", survived.get(k), rebuilt.get(k)))
        .take(5)
        .collect();
    assert!(
        differing.is_empty(),
        "rows of {name} differ from a fresh rebuild: {differing:#?}"
    );
}

/// A TCP port on 127.0.0.1 free right now (for a process's `--metrics-addr`, say).
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `GET http://<addr><path>`: the status code and the body, or an error when
/// nothing answers (a process's metrics and health address, say).
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let (status, body) = jetsource::testing::http_get("127.0.0.1:9464", "/readyz").await?;
/// assert_eq!(status, 200, "{body}");
/// # Ok(()) }
/// ```
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok((status, body.to_string()))
}

/// One span an [`OtlpCollector`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedSpan {
    /// The exporting process's `service.name`.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, empty for a root span.
    pub parent_span_id: String,
}

/// A stand-in OpenTelemetry collector on loopback: takes OTLP/HTTP JSON
/// (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) on `/v1/traces` and keeps the spans.
///
/// ```no_run
/// # async fn demo() {
/// let collector = jetsource::testing::OtlpCollector::start().await;
/// // start a process with --otlp-endpoint collector.endpoint() ...
/// let spans = collector.spans();
/// # }
/// ```
#[derive(Debug)]
pub struct OtlpCollector {
    addr: std::net::SocketAddr,
    spans: std::sync::Arc<std::sync::Mutex<Vec<CollectedSpan>>>,
    exports: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpCollector {
    /// Listens on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> OtlpCollector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let exports = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (kept, counted) = (spans.clone(), exports.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: bytes::Bytes| async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Ok(export) = serde_json::from_slice::<serde_json::Value>(&body) {
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    kept.extend(collected(&export));
                }
                "{}"
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpCollector {
            addr,
            spans,
            exports,
            task,
        }
    }

    /// The URL to give `--otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Export requests received so far, in any encoding (spans are kept from
    /// JSON ones only).
    pub fn exports(&self) -> usize {
        self.exports.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The spans of one OTLP JSON export request.
fn collected(export: &serde_json::Value) -> Vec<CollectedSpan> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .map(|a| text(&a["value"]["stringValue"]))
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                out.push(CollectedSpan {
                    service: service.clone(),
                    name: text(&span["name"]),
                    trace_id: text(&span["traceId"]).to_lowercase(),
                    span_id: text(&span["spanId"]).to_lowercase(),
                    parent_span_id: text(&span["parentSpanId"]).to_lowercase(),
                });
            }
        }
    }
    out
}
