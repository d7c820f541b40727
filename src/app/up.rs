//! `up`: a local nats-server (found or provisioned; loopback; `safe` durability;
//! its monitoring port open; data under the user's data dir) plus one node and
//! every projection and saga of the app, each a child process (this same binary)
//! with a metrics and health address, and the web console, logging to a file
//! (appended to, never truncated). It prints every address. A child that dies is restarted with
//! backoff and the cause printed; Ctrl-C stops them all, the server last. One `up`
//! per data dir: a lock file refuses a second. `--demo` also runs the app's story
//! and exits.

use super::{Outcome, Result};
use crate::nats_server::{self, Durability};
use crate::{node, Subjects};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Client port of the server, on 127.0.0.1 (default 4222; with --demo a free one).
    #[arg(long)]
    port: Option<u16>,
    /// The server's monitoring port (`/varz`, `/jsz`, ...), on 127.0.0.1 (default
    /// 8222, or a free one when that is taken or with --demo).
    #[arg(long)]
    monitor_port: Option<u16>,
    /// First port of the processes' metrics and health addresses on 127.0.0.1: the
    /// node gets it, each projection and saga the next ones (a free one where taken;
    /// with --demo all free ones).
    #[arg(long, default_value_t = 9464)]
    metrics_port: u16,
    /// Port of the web console on 127.0.0.1 (a free one where taken; with --demo
    /// a free one).
    #[arg(long, default_value_t = 8480)]
    console_port: u16,
    /// Where the server keeps its data and every process its log (default
    /// `$XDG_DATA_HOME/jetsource` or `~/.local/share/jetsource`; with --demo a
    /// fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run the app's story end to end (the reference app: the hiring story), print
    /// each step, then stop everything and exit 0.
    #[arg(long)]
    demo: bool,
}

/// The processes `up` started, for an app's [`Demo`](super::Demo) to check on.
#[derive(Debug)]
pub struct Stack {
    running: Vec<Running>,
}

impl Stack {
    /// An error naming the first process that exited, if any did.
    pub fn check(&mut self) -> Result<()> {
        check(&mut self.running)
    }
}

/// One child process, stopped with SIGTERM (then SIGKILL) on drop.
#[derive(Debug)]
struct Running {
    name: String,
    child: Child,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    /// Restarts so far in a row (reset once the child has run for a minute).
    restarts: u32,
    /// Its metrics and health address, if it serves one.
    metrics: Option<String>,
    started: Instant,
}

impl Running {
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop in 10 s: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same command again, logging to the same file.
    fn respawn(&mut self) -> Result<()> {
        self.child = start_child(&self.name, &self.program, &self.args, &self.log)?;
        self.started = Instant::now();
        Ok(())
    }

    /// How long to wait before restart number `restarts + 1`: 1 s doubling to 30 s.
    fn backoff(&self) -> Duration {
        Duration::from_secs((1u64 << self.restarts.min(5)).min(30))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("jetsource"));
    }
    let home =
        std::env::var_os("HOME").ok_or("neither XDG_DATA_HOME nor HOME is set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/jetsource"))
}

/// Hands out loopback ports for the children, never the same one twice: a port
/// found free stays free only until its child binds it, so two picks made before
/// either child starts could otherwise agree (seen: the console and a saga's
/// metrics on one port, and the saga exited "Address already in use").
#[derive(Default)]
struct Ports {
    given: std::collections::HashSet<u16>,
}

impl Ports {
    /// Any port free now and not handed out yet.
    fn free(&mut self) -> Result<u16> {
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            if self.given.insert(port) {
                return Ok(port);
            }
        }
    }

    /// `port` on 127.0.0.1 if it is free now and not handed out yet, else any free one.
    fn or_free(&mut self, port: u16) -> Result<u16> {
        if !self.given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            self.given.insert(port);
            return Ok(port);
        }
        self.free()
    }
}

fn start_child(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Child> {
    let log = fs::OpenOptions::new().create(true).append(true).open(log)?;
    Ok(Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {name} ({}): {e}", program.display()))?)
}

fn spawn(name: &str, program: &Path, args: &[&str], logs: &Path) -> Result<Running> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let log = logs.join(format!("{name}.log"));
    let child = start_child(name, program, &args, &log)?;
    Ok(Running {
        name: name.to_string(),
        child,
        program: program.to_path_buf(),
        args,
        log,
        restarts: 0,
        metrics: None,
        started: Instant::now(),
    })
}

/// Holds the data dir for this `up` until it exits (an advisory lock the kernel
/// drops with the process, kill -9 included): a second `up` on the same dir is
/// refused with the holder's pid instead of sharing one JetStream store.
fn lock_data_dir(data: &Path) -> Result<fs::File> {
    use std::io::{Read, Seek, Write};
    fs::create_dir_all(data)?;
    let path = data.join("up.lock");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let holder = if holder.is_empty() {
            "another process"
        } else {
            holder
        };
        return Err(format!(
            "{} is in use by a running jetsource up ({holder}): stop it first, or pass another --data-dir",
            data.display()
        )
        .into());
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "pid {}", std::process::id())?;
    Ok(file)
}

pub(super) async fn run(app: &super::App, args: Args) -> Result<Outcome> {
    let temp = if args.demo && args.data_dir.is_none() {
        Some(
            tempfile::Builder::new()
                .prefix("jetsource-demo-")
                .tempdir()?,
        )
    } else {
        None
    };
    let data = match (&args.data_dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temp)) => temp.path().to_path_buf(),
        (None, None) => default_data_dir()?,
    };
    let mut ports = Ports::default();
    let port = match args.port {
        Some(port) => port,
        None if args.demo => ports.free()?,
        None => 4222,
    };
    ports.given.insert(port);
    let _lock = lock_data_dir(&data)?;
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        return Err(
            format!("port {port} on 127.0.0.1 is taken (another server?): pass --port").into(),
        );
    }
    let logs = data.join("logs");
    fs::create_dir_all(&logs)?;
    let url = format!("nats://127.0.0.1:{port}");

    let server_bin = nats_server::find_or_provision()?;
    let conf = data.join("nats-server.conf");
    let store_dir = data.join("jetstream");
    fs::write(
        &conf,
        nats_server::standalone_config("jetsource", port, &store_dir, Durability::Safe),
    )?;
    let conf_arg = conf.to_string_lossy().into_owned();
    let monitor = if args.demo {
        ports.free()?
    } else {
        ports.or_free(args.monitor_port.unwrap_or(8222))?
    };
    fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, format!("http: 127.0.0.1:{monitor}\n").as_bytes())
        })?;
    // Children stop in reverse order of start: the server goes last.
    let mut running = vec![spawn(
        "nats-server",
        &server_bin,
        &["-c", &conf_arg],
        &logs,
    )?];
    let client = connect_when_ready(&url, &mut running[0]).await?;

    let me = std::env::current_exe()?;
    let mut next_metrics = args.metrics_port;
    let mut with_url = |name: &str, child_args: &[&str]| -> Result<()> {
        let metrics = if args.demo {
            ports.free()?
        } else {
            let port = ports.or_free(next_metrics)?;
            next_metrics = port.saturating_add(1);
            port
        };
        let metrics = format!("127.0.0.1:{metrics}");
        let mut all: Vec<&str> = child_args.to_vec();
        // The children talk to this server only, whatever natscli context is selected.
        all.extend(["--server", url.as_str(), "--no-context"]);
        all.extend(["--metrics-addr", metrics.as_str()]);
        let mut child = spawn(name, &me, &all, &logs)?;
        child.metrics = Some(metrics);
        running.push(child);
        Ok(())
    };
    with_url("node", &["node"])?;
    for name in app.projection_names() {
        with_url(&format!("project-{name}"), &["project", &name])?;
    }
    for name in app.saga_names() {
        with_url(&format!("saga-{name}"), &["saga", &name])?;
    }
    let console = if args.demo {
        ports.free()?
    } else {
        ports.or_free(args.console_port)?
    };
    let console = format!("127.0.0.1:{console}");
    running.push(spawn(
        "console",
        &me,
        &[
            "console",
            "--listen",
            &console,
            "--server",
            &url,
            "--no-context",
        ],
        &logs,
    )?);
    wait_for_node(&client, &mut running).await?;

    println!("{} is up (durability: safe)", app.name);
    println!(
        "  development mode: no authentication on loopback, every client may send every \
         command and name any actor; production uses dev/nats-production.conf and \
         `node --policy dev/policy.toml` (README, Operations)"
    );
    println!("  nats-server   {url}   data {}", store_dir.display());
    println!("  monitoring    http://127.0.0.1:{monitor}/   (/varz, /jsz, /connz)");
    println!("  console       http://{console}/   (read-only)");
    for r in &running {
        let metrics = match &r.metrics {
            Some(addr) => format!("metrics http://{addr}/metrics  "),
            None => String::new(),
        };
        println!(
            "  {:<26} pid {:<7} {metrics}log {}",
            r.name,
            r.child.id(),
            r.log.display()
        );
    }
    println!(
        "  try: {} send <aggregate>.<Command> '{{\"id\":\"...\"}}' -s {url}",
        app.name
    );

    let mut stack = Stack { running };
    let outcome = match (&app.demo, args.demo) {
        (Some(demo), true) => {
            println!();
            demo(client, &mut stack).await.map(|()| Outcome::Done)
        }
        (None, true) => Err(format!("{} has no demo", app.name).into()),
        (_, false) => {
            println!("Ctrl-C stops everything.");
            supervise(&mut stack.running).await
        }
    };
    println!("stopping…");
    while let Some(mut r) = stack.running.pop() {
        r.stop();
    }
    println!("stopped.");
    outcome
}

/// Waits for Ctrl-C/SIGTERM, restarting any child that dies on its own (after a
/// backoff, with the cause printed), like a supervisor.
async fn supervise(running: &mut [Running]) -> Result<Outcome> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut due: Vec<Option<Instant>> = vec![None; running.len()];
    loop {
        tokio::select! {
            _ = super::wait_for_signal() => return Ok(Outcome::Done),
            _ = tick.tick() => {}
        }
        for (r, due) in running.iter_mut().zip(due.iter_mut()) {
            match due {
                Some(at) if Instant::now() >= *at => {
                    *due = None;
                    match r.respawn() {
                        Ok(()) => println!("{} restarted, pid {}", r.name, r.child.id()),
                        Err(e) => {
                            eprintln!("{} could not be restarted: {e}", r.name);
                            r.restarts += 1;
                            *due = Some(Instant::now() + r.backoff());
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if let Ok(Some(status)) = r.child.try_wait() {
                        if r.started.elapsed() > Duration::from_secs(60) {
                            r.restarts = 0;
                        }
                        let wait = r.backoff();
                        r.restarts += 1;
                        eprintln!(
                            "{} exited ({status}); restarting it in {} s. Its log ends:\n{}",
                            r.name,
                            wait.as_secs(),
                            log_tail(&r.log, 5)
                        );
                        *due = Some(Instant::now() + wait);
                    }
                }
            }
        }
    }
}

/// The last `lines` lines of a log file, indented.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An error naming the first child that exited, with the end of its log (a
/// demo's temporary data dir, logs included, is gone once `up` returns).
fn check(running: &mut [Running]) -> Result<()> {
    for r in running.iter_mut() {
        if let Ok(Some(status)) = r.child.try_wait() {
            return Err(format!(
                "{} exited ({status}); its log ({}) ends:\n{}",
                r.name,
                r.log.display(),
                log_tail(&r.log, 10)
            )
            .into());
        }
    }
    Ok(())
}

async fn connect_when_ready(url: &str, server: &mut Running) -> Result<async_nats::Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("nats-server exited ({status}): see its log").into());
        }
        match crate::connect(url).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn wait_for_node(client: &async_nats::Client, running: &mut [Running]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        check(running)?;
        let wait = Duration::from_millis(500);
        match node::wait_until_serving(client, &Subjects::default(), 1, wait).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ports;

    #[test]
    fn up_never_hands_one_port_to_two_children() {
        let mut ports = Ports::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            assert!(
                seen.insert(ports.free().unwrap()),
                "a port handed out twice"
            );
        }
        // A preferred port already handed out is not handed out again.
        let first = ports.or_free(9464).unwrap();
        assert_ne!(ports.or_free(first).unwrap(), first);
    }
}
