//! `jetsource up`: a local nats-server (found or provisioned; loopback; `safe`
//! durability; data under the user's data dir) plus one node, the three projections
//! and the hiring saga, each a child process logging to a file. Ctrl-C stops them
//! all, the server last. `--demo` also runs the hiring story and exits.

use crate::{Outcome, Result};
use jetsource::nats_server::{self, Durability};
use jetsource::{node, Subjects};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Client port of the server, on 127.0.0.1 (default 4222; with --demo a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Where the server keeps its data and every process its log (default
    /// `$XDG_DATA_HOME/jetsource` or `~/.local/share/jetsource`; with --demo a
    /// fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run the hiring story end to end, print each step and the final views, then
    /// stop everything and exit 0.
    #[arg(long)]
    demo: bool,
}

/// One child process, stopped with SIGTERM (then SIGKILL) on drop.
pub(crate) struct Running {
    name: String,
    child: Child,
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

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(name: &str, program: &Path, args: &[&str], logs: &Path) -> Result<Running> {
    let log = fs::File::create(logs.join(format!("{name}.log")))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {name} ({}): {e}", program.display()))?;
    Ok(Running {
        name: name.to_string(),
        child,
    })
}

pub(crate) async fn run(args: Args) -> Result<Outcome> {
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
    let port = match args.port {
        Some(port) => port,
        None if args.demo => free_port()?,
        None => 4222,
    };
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
    // Children stop in reverse order of start: the server goes last.
    let mut running = vec![spawn(
        "nats-server",
        &server_bin,
        &["-c", &conf_arg],
        &logs,
    )?];
    let client = connect_when_ready(&url, &mut running[0]).await?;

    let me = std::env::current_exe()?;
    let mut with_url = |name: &str, args: &[&str]| -> Result<()> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--nats-url", url.as_str()]);
        running.push(spawn(name, &me, &all, &logs)?);
        Ok(())
    };
    with_url("node", &["node"])?;
    with_url("project-person_directory", &["project", "person_directory"])?;
    with_url("project-organizations", &["project", "organizations"])?;
    with_url("project-offers", &["project", "offers"])?;
    with_url("saga-hiring", &["saga", "hiring"])?;
    wait_for_node(&client, &mut running).await?;

    println!("jetsource is up (durability: safe)");
    println!("  nats-server   {url}   data {}", store_dir.display());
    for r in &running {
        println!(
            "  {:<26} pid {:<7} log {}",
            r.name,
            r.child.id(),
            logs.join(format!("{}.log", r.name)).display()
        );
    }
    println!("  try: jetsource send organization.Register '{{\"id\":\"acme\",\"name\":\"Acme\"}}' --nats-url {url}");

    let outcome = if args.demo {
        println!();
        crate::demo::run(client, &mut running).await
    } else {
        println!("Ctrl-C stops everything.");
        supervise(&mut running).await
    };
    println!("stopping…");
    while let Some(mut r) = running.pop() {
        r.stop();
    }
    println!("stopped.");
    outcome
}

/// Waits for Ctrl-C/SIGTERM; a child that dies on its own is an error.
async fn supervise(running: &mut [Running]) -> Result<Outcome> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = crate::wait_for_signal() => return Ok(Outcome::Done),
            _ = tick.tick() => check(running)?,
        }
    }
}

/// An error naming the first child that exited.
pub(crate) fn check(running: &mut [Running]) -> Result<()> {
    for r in running.iter_mut() {
        if let Ok(Some(status)) = r.child.try_wait() {
            return Err(format!("{} exited ({status}): see its log", r.name).into());
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
        match jetsource::connect(url).await {
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
