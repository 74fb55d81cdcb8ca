//! A JetStream cluster of nats-servers on loopback: three (or more) processes with their own
//! ports, stores and names, routed to each other, each of which can be crashed, stopped and
//! started again on its store. For the tests and the bench; production clusters are deployed
//! with the official NATS Helm chart (docs/deployment.md).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{ClusterSpec, LocalError, LocalNats, ServerSpec, find_or_install, free_port};

/// The cluster's name, as its servers report it.
pub const CLUSTER_NAME: &str = "wharf";

/// A running cluster; every server is killed when it is dropped.
#[derive(Debug)]
pub struct LocalCluster {
    bin: PathBuf,
    dir: PathBuf,
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    spec: ServerSpec,
    /// `None` while the server is down.
    server: Option<LocalNats>,
}

impl LocalCluster {
    /// Starts `size` servers named `n1`, `n2`, … with their stores under `dir`, and waits until
    /// the cluster is healthy (every server routed to the others, JetStream with a leader).
    pub async fn start(dir: &Path, size: usize) -> Result<LocalCluster, LocalError> {
        let bin = find_or_install().await?;
        let port = || free_port().map_err(|e| LocalError::Start(e.to_string()));
        let mut route_ports = Vec::with_capacity(size);
        for _ in 0..size {
            route_ports.push(port()?);
        }
        let mut nodes = Vec::with_capacity(size);
        for (i, route_port) in route_ports.iter().enumerate() {
            let spec = ServerSpec {
                name: Some(format!("n{}", i + 1)),
                port: port()?,
                jetstream: true,
                monitor_port: Some(port()?),
                cluster: Some(ClusterSpec {
                    name: CLUSTER_NAME.into(),
                    port: *route_port,
                    routes: route_ports
                        .iter()
                        .copied()
                        .filter(|p| p != route_port)
                        .collect(),
                }),
                ..ServerSpec::default()
            };
            nodes.push(Node { spec, server: None });
        }
        let mut cluster = LocalCluster {
            bin,
            dir: dir.to_owned(),
            nodes,
        };
        for i in 0..size {
            cluster.start_node(i).await?;
        }
        for i in 0..size {
            cluster.wait_healthy(i).await?;
        }
        Ok(cluster)
    }

    /// Every server's client URL, comma-separated: what `nats_url` is set to.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = (0..self.nodes.len()).map(|i| self.url(i)).collect();
        urls.join(",")
    }

    /// Server `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].spec.port)
    }

    /// Server `i`'s monitoring port (`/healthz`, `/jsz`).
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.nodes[i]
            .spec
            .monitor_port
            .expect("cluster servers are monitored")
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Which server is named `name` (as a stream's `cluster.leader` names it).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.spec.name.as_deref() == Some(name))
    }

    /// Server `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        self.nodes[i].spec.name.as_deref().unwrap_or_default()
    }

    /// Server `i`'s store directory (its log is `nats-server.log` in it).
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.dir.join(self.name(i))
    }

    /// Kills server `i` with SIGKILL, as a crash would.
    pub async fn kill(&mut self, i: usize) {
        if let Some(server) = self.nodes[i].server.take() {
            server.kill().await;
        }
    }

    /// Stops server `i` gracefully (SIGTERM), as a rolling upgrade does.
    pub async fn stop(&mut self, i: usize) {
        if let Some(server) = self.nodes[i].server.take() {
            server.stop().await;
        }
    }

    /// Starts server `i` again on its ports and store, and waits until it is healthy (caught
    /// up with its peers).
    pub async fn restart(&mut self, i: usize) -> Result<(), LocalError> {
        self.start_node(i).await?;
        self.wait_healthy(i).await
    }

    async fn start_node(&mut self, i: usize) -> Result<(), LocalError> {
        let store = self.store_dir(i);
        let server = LocalNats::run(&self.bin, &store, &self.nodes[i].spec).await?;
        self.nodes[i].server = Some(server);
        Ok(())
    }

    /// Waits until server `i`'s `/healthz` says it is ready: routed, JetStream current.
    pub async fn wait_healthy(&self, i: usize) -> Result<(), LocalError> {
        let port = self.monitor_port(i);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = monitor_get(port, "/healthz").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LocalError::Start(format!(
                    "nats-server {} did not become healthy within 60 s; see {}",
                    self.name(i),
                    self.store_dir(i).join("nats-server.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `GET path` on a server's monitoring port: the status code and the body.
pub async fn monitor_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        // HTTP/1.0: the server closes the connection after the body, which ends the read.
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "monitoring timed out"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not HTTP"))?;
    Ok((status, body.to_owned()))
}
