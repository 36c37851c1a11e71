//! Startup time and idle footprint of the real `maxai up` binary.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::Full;

use crate::load::{http_call, http_connect};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const IDLE: Duration = Duration::from_secs(1);

/// The workspace this bench was built from (to build and find `maxai`, and for git).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `explicit`, or `maxai` built with this bench's own profile next to this executable. Cargo
/// is asked every time (a no-op when fresh) so a stale binary is never measured. Err is the
/// reason to skip.
pub fn maxai_binary(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{} does not exist", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no executable folder")?;
    let bin = dir.join("maxai");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "maxai-platform", "--bin", "maxai"])
        .current_dir(workspace_root())
        .stdout(Stdio::null());
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let built = cmd.status().map(|s| s.success()).unwrap_or(false);
    match (built, bin.is_file()) {
        (true, true) => Ok(bin),
        (false, true) => {
            eprintln!("warning: could not rebuild maxai; measuring the existing binary");
            Ok(bin)
        }
        (_, false) => Err(format!(
            "{} is missing and could not be built",
            bin.display()
        )),
    }
}

/// Kills the child however this scope is left.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// One start: milliseconds from spawn to the first `GET /readyz` 200, and VmRSS in KiB after
/// a second of idleness.
pub async fn start_once(bin: &Path) -> anyhow::Result<(f64, u64)> {
    let data = tempfile::tempdir()?;
    let (grpc, http, metrics) = (free_port()?, free_port()?, free_port()?);
    let started = Instant::now();
    // A clean environment: no DATABASE_URL/REDIS_URL or MAXAI_* of the caller leaks in.
    let mut child = Running(
        Command::new(bin)
            .arg("up")
            .env_clear()
            .env("MAXAI_SERVER__GRPC_ADDR", grpc.to_string())
            .env("MAXAI_SERVER__HTTP_ADDR", http.to_string())
            .env("MAXAI_SERVER__METRICS_ADDR", metrics.to_string())
            .env("MAXAI_STORAGE__DATA_DIR", data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    loop {
        if let Some(status) = child.0.try_wait()? {
            anyhow::bail!("maxai up exited early: {status}");
        }
        // The listener is bound before the services start, so an early request may wait.
        if let Ok(true) = tokio::time::timeout(Duration::from_secs(2), ready(http)).await {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < READY_TIMEOUT,
            "not ready within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready_ms = started.elapsed().as_secs_f64() * 1e3;
    tokio::time::sleep(IDLE).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id()))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc status"))?;
    Ok((ready_ms, rss_kib))
}

async fn ready(addr: SocketAddr) -> bool {
    let Ok(mut conn) = http_connect(addr).await else {
        return false;
    };
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = http::Uri::from_static("/readyz");
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("127.0.0.1"));
    matches!(http_call(&mut conn, req).await, Ok((s, _)) if s.is_success())
}

/// The floor of any start: spawning the same binary to print its version and exit.
pub fn version_once(bin: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new(bin)
        .arg("--version")
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "maxai --version: {status}");
    Ok(started.elapsed().as_secs_f64() * 1e3)
}
