//! One nats-server process: its configuration file, its start, stop and crash.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{LocalError, find_or_install, free_port};

/// A running nats-server child process; killed when dropped.
#[derive(Debug)]
pub struct LocalNats {
    child: tokio::process::Child,
    url: String,
    client_url: String,
    store_dir: PathBuf,
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

/// What one server is: its name, ports, and what it joins. Written out as the server's
/// configuration file ([`ServerSpec::config`]); every address is on loopback.
#[derive(Debug, Clone, Default)]
pub struct ServerSpec {
    /// `server_name`, which a JetStream cluster needs (and reports as a stream's leader).
    pub name: Option<String>,
    /// The client port.
    pub port: u16,
    /// Store messages (JetStream), in the server's store directory.
    pub jetstream: bool,
    /// The JetStream domain, which clients of a leaf node name to reach this server's streams.
    pub domain: Option<String>,
    /// The monitoring port (`/healthz`, `/jsz`, `/varz`), when wanted.
    pub monitor_port: Option<u16>,
    /// Membership of a cluster.
    pub cluster: Option<ClusterSpec>,
    /// Accept leaf node connections on this port.
    pub leaf_port: Option<u16>,
    /// Connect out, as a leaf node, to these hub leaf ports.
    pub leaf_remotes: Vec<u16>,
    pub auth: Option<ServerAuth>,
}

/// A server's place in a cluster: the cluster's name, its own route port, and its peers' route
/// ports.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub port: u16,
    pub routes: Vec<u16>,
}

impl ServerSpec {
    /// A JetStream server on `port`, alone: what `wharf dev` and most tests run.
    pub fn single(port: u16) -> ServerSpec {
        ServerSpec {
            port,
            jetstream: true,
            ..ServerSpec::default()
        }
    }

    /// The configuration file for a server keeping its store (and pid file) in `store_dir`.
    pub fn config(&self, store_dir: &Path) -> String {
        let mut out = String::new();
        if let Some(name) = &self.name {
            out.push_str(&format!("server_name: {name:?}\n"));
        }
        out.push_str(&format!("listen: \"127.0.0.1:{}\"\n", self.port));
        out.push_str(&format!(
            "pid_file: {:?}\n",
            store_dir.join("nats-server.pid").display().to_string()
        ));
        if let Some(port) = self.monitor_port {
            out.push_str(&format!("http: \"127.0.0.1:{port}\"\n"));
        }
        if self.jetstream {
            out.push_str(&format!(
                "jetstream {{\n  store_dir: {:?}\n",
                store_dir.display().to_string()
            ));
            if let Some(domain) = &self.domain {
                out.push_str(&format!("  domain: {domain:?}\n"));
            }
            out.push_str("}\n");
        }
        if let Some(c) = &self.cluster {
            let routes: Vec<String> = c
                .routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            out.push_str(&format!(
                "cluster {{\n  name: {:?}\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                c.name,
                c.port,
                routes.join(", ")
            ));
        }
        if self.leaf_port.is_some() || !self.leaf_remotes.is_empty() {
            out.push_str("leafnodes {\n");
            if let Some(port) = self.leaf_port {
                out.push_str(&format!("  listen: \"127.0.0.1:{port}\"\n"));
            }
            if !self.leaf_remotes.is_empty() {
                let urls: Vec<String> = self
                    .leaf_remotes
                    .iter()
                    .map(|p| format!("\"nats-leaf://127.0.0.1:{p}\""))
                    .collect();
                out.push_str(&format!(
                    "  remotes: [ {{ urls: [{}] }} ]\n",
                    urls.join(", ")
                ));
            }
            out.push_str("}\n");
        }
        if let Some(auth) = &self.auth {
            out.push_str(&auth.config());
        }
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
        let port = free_port().map_err(|e| LocalError::Start(e.to_string()))?;
        let spec = ServerSpec {
            auth: auth.cloned(),
            ..ServerSpec::single(port)
        };
        Self::run(&bin, store_dir, &spec).await
    }

    /// Starts a JetStream server on `port` (e.g. again after a restart, on the same store).
    pub async fn start_on(
        bin: &Path,
        store_dir: &Path,
        port: u16,
    ) -> Result<LocalNats, LocalError> {
        Self::run(bin, store_dir, &ServerSpec::single(port)).await
    }

    /// Starts the server `spec` describes, with its configuration, store, pid file and log
    /// (`nats-server.log`) in `store_dir`, and waits until it takes clients. A server still
    /// running on this store (its owner was killed) is stopped first: two servers must never
    /// write one store.
    pub async fn run(
        bin: &Path,
        store_dir: &Path,
        spec: &ServerSpec,
    ) -> Result<LocalNats, LocalError> {
        let failed = |e: std::io::Error| LocalError::Start(e.to_string());
        std::fs::create_dir_all(store_dir).map_err(failed)?;
        stop_stale(store_dir).await;
        let config = store_dir.join("nats.conf");
        std::fs::write(&config, spec.config(store_dir)).map_err(failed)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(store_dir.join("nats-server.log"))
            .map_err(failed)?;
        let child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(failed)?)
            .stderr(log)
            .kill_on_drop(true)
            // Not in the starter's process group: Ctrl-C in a terminal signals that whole group,
            // and the server must outlast the processes that still have work to store on it
            // (the starter stops it last).
            .process_group(0)
            .spawn()
            .map_err(|e| LocalError::Start(format!("{}: {e}", bin.display())))?;
        let port = spec.port;
        let client_url = format!("nats://127.0.0.1:{port}");
        let url = match &spec.auth {
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
            store_dir: store_dir.to_owned(),
        };
        server.wait_open(port).await?;
        Ok(server)
    }

    /// Waits until the server listens for clients, failing if it exits first.
    async fn wait_open(&mut self, port: u16) -> Result<(), LocalError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LocalError::Start(format!(
                    "nats-server exited with {status}; see {}",
                    self.store_dir.join("nats-server.log").display()
                )));
            }
            if Instant::now() > deadline {
                return Err(LocalError::Start(
                    "nats-server did not open its port".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
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

    /// Kills the server outright (SIGKILL), as a crash would, and waits until it is gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Percent-encodes what a URL's user or password cannot hold as it is.
fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The nats-server still running on the store in `store_dir`, by the pid file it keeps there:
/// trusted only while that process is a nats-server whose configuration lies in `store_dir`
/// (a pid, once its server has gone, may be any process's, another store's server included).
pub fn left_running(store_dir: &Path) -> Option<nix::unistd::Pid> {
    let pid = std::fs::read_to_string(store_dir.join("nats-server.pid"))
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    let ours =
        cmdline.contains("nats-server") && cmdline.contains(store_dir.join("nats.conf").to_str()?);
    ours.then(|| nix::unistd::Pid::from_raw(pid))
}

/// Stops the nats-server left running on the store in `store_dir`, if there is one.
async fn stop_stale(store_dir: &Path) {
    let Some(pid) = left_running(store_dir) else {
        return;
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_says_what_the_server_joins() {
        let dir = Path::new("/data/n1");
        let node = ServerSpec {
            name: Some("n1".into()),
            monitor_port: Some(8222),
            cluster: Some(ClusterSpec {
                name: "wharf".into(),
                port: 6222,
                routes: vec![6223, 6224],
            }),
            domain: Some("hub".into()),
            leaf_port: Some(7422),
            ..ServerSpec::single(4222)
        };
        let config = node.config(dir);
        for line in [
            "server_name: \"n1\"",
            "listen: \"127.0.0.1:4222\"",
            "http: \"127.0.0.1:8222\"",
            "store_dir: \"/data/n1\"",
            "domain: \"hub\"",
            "routes: [\"nats-route://127.0.0.1:6223\", \"nats-route://127.0.0.1:6224\"]",
            "listen: \"127.0.0.1:7422\"",
        ] {
            assert!(config.contains(line), "{line} in\n{config}");
        }
        let leaf = ServerSpec {
            leaf_remotes: vec![7422],
            ..ServerSpec::default()
        };
        let config = leaf.config(dir);
        assert!(config.contains("remotes: [ { urls: [\"nats-leaf://127.0.0.1:7422\"] } ]"));
        assert!(
            !config.contains("jetstream"),
            "a leaf without a store:\n{config}"
        );
    }
}
