//! The Wharf test kit: real parts, started per test, stopped when the test ends.
//!
//! [`Wharf::start`] gives a test its own nats-server (free port, own store directory), its own
//! Postgres database (cloned from a migrated template in the cluster named by
//! `WHARF_TEST_DATABASE_URL`, which `./test.sh` starts), and a gateway, recorder and workers
//! in-process, each stoppable on its own. MCP servers are real processes: the bundled demo server
//! is the `wharf` binary itself (`wharf mcp-demo`). Nothing is shared between tests, so they run
//! in parallel.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wharf_bus::{Bus, Topology};
use wharf_contract::{TaskStatus, TaskView};
use wharf_local::LocalNats;
use wharf_store::Store;
use wharf_worker::{McpServerConfig, McpTransport, WorkerConfig};

pub use anyhow;

/// Polls `check` every 25 ms until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the gateway at `api` (`http://host:port`) lists `tool`.
pub async fn wait_for_tool_at(http: &reqwest::Client, api: &str, tool: &str) {
    eventually(
        &format!("tool {tool} in the catalog"),
        Duration::from_secs(30),
        || async {
            let tools: Value = http
                .get(format!("{api}/api/v1/tools"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            tools["tools"]
                .as_array()?
                .iter()
                .any(|t| t["name"] == tool)
                .then_some(())
        },
    )
    .await;
}

/// The `wharf` binary of this build (the demo MCP server and the separate-process modes).
pub fn wharf_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WHARF_BIN") {
        return PathBuf::from(bin);
    }
    // target/<profile>/deps/it-<hash> -> target/<profile>/wharf
    let exe = std::env::current_exe().expect("the test binary has a path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("wharf"))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p wharf` (./test.sh does)",
        bin.display()
    );
    bin
}

/// The demo MCP server as a stdio child process. `log` receives its JSON-lines log.
pub fn demo_server(name: &str, log: Option<&std::path::Path>) -> McpServerConfig {
    let mut env = std::collections::BTreeMap::new();
    if let Some(log) = log {
        env.insert("WHARF_DEMO_LOG".into(), log.display().to_string());
    }
    McpServerConfig {
        name: name.into(),
        transport: McpTransport::Stdio {
            command: wharf_bin().display().to_string(),
            args: vec!["mcp-demo".into()],
            env,
            cwd: None,
        },
        retry_tool_errors: false,
    }
}

/// A fresh Postgres database for one test, cloned from a migrated template.
pub async fn fresh_database() -> String {
    let admin = std::env::var("WHARF_TEST_DATABASE_URL").expect(
        "WHARF_TEST_DATABASE_URL must name a Postgres server (./test.sh starts one and sets it)",
    );
    let db = Database::connect(&admin)
        .await
        .expect("connect to the test postgres");
    // One test process creates the template; the others wait on the lock, then clone it.
    db.execute_unprepared("SELECT pg_advisory_lock(727274)")
        .await
        .unwrap();
    let exists = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT 1 FROM pg_database WHERE datname = 'wharf_template'",
        ))
        .await
        .unwrap()
        .is_some();
    if !exists {
        db.execute_unprepared("CREATE DATABASE wharf_template")
            .await
            .unwrap();
        let store = Store::connect(&with_db(&admin, "wharf_template"))
            .await
            .expect("migrate the template database");
        store.connection().clone().close().await.unwrap();
    }
    let name = format!("wharf_test_{}", Uuid::now_v7().simple());
    db.execute_unprepared(&format!("CREATE DATABASE {name} TEMPLATE wharf_template"))
        .await
        .unwrap();
    db.execute_unprepared("SELECT pg_advisory_unlock(727274)")
        .await
        .unwrap();
    db.close().await.unwrap();
    with_db(&admin, &name)
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database url ends in /<db>");
    format!("{base}/{db}")
}

/// How a test platform is put together.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers started in-process.
    pub workers: usize,
    /// Per queue.
    pub concurrency: usize,
    /// Queues the workers take tasks from.
    pub queues: Vec<String>,
    /// MCP servers; the demo server (logging to [`Wharf::demo_log`]) when empty.
    pub servers: Vec<McpServerConfig>,
    pub topology: Topology,
    /// How long a stopping worker lets its tasks finish before handing them back.
    pub shutdown_grace: Duration,
    /// What the workers take from the MCP registry of the runtime configuration.
    pub registry: wharf_worker::RegistryPolicy,
    /// The gateway's configuration (its `listen` is replaced by a free loopback port). Open by
    /// default: requests without credentials act as an admin of the `default` tenant.
    pub gateway: wharf_gateway::GatewayConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 1,
            concurrency: 64,
            queues: vec!["default".into()],
            servers: Vec::new(),
            topology: Topology {
                ack_wait: Duration::from_secs(10),
                ..Topology::default()
            },
            shutdown_grace: Duration::from_secs(5),
            registry: wharf_worker::RegistryPolicy::default(),
            gateway: wharf_gateway::GatewayConfig::default(),
        }
    }
}

/// A part of the platform running in the test process.
pub struct Part {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Part {
    fn spawn<F>(name: &'static str, f: impl FnOnce(CancellationToken) -> F) -> Part
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let fut = f(stop.clone());
        let handle = tokio::spawn(async move {
            if let Err(e) = fut.await {
                panic!("{name} failed: {e:#}");
            }
        });
        Part { stop, handle }
    }

    /// Kills the part outright, as a crash would: nothing is drained or acknowledged.
    pub async fn abort(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }

    /// Stops the part and waits until it has.
    pub async fn stop(self) {
        self.stop.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.handle).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("part did not finish: {e}"),
            Err(_) => panic!("part did not stop within 30 s"),
        }
    }
}

/// One test's platform.
pub struct Wharf {
    pub dir: TempDir,
    pub nats: LocalNats,
    pub bus: Bus,
    pub store: Store,
    pub database_url: String,
    /// `http://127.0.0.1:<port>`
    pub api: String,
    pub http: reqwest::Client,
    pub options: Options,
    pub gateway: Option<Part>,
    pub recorder: Option<Part>,
    pub workers: Vec<Part>,
}

impl Wharf {
    /// Starts everything with the default options and waits until the demo tools are listed.
    pub async fn start() -> Wharf {
        let w = Wharf::start_with(Options::default()).await;
        w.wait_for_tool("demo.echo").await;
        w
    }

    pub async fn start_with(options: Options) -> Wharf {
        wharf_telemetry::install_crypto();
        wharf_telemetry::init_logging(
            wharf_telemetry::LogFormat::Pretty,
            "warn,wharf_worker=info,wharf_recorder=info",
            "wharf-test",
        );
        let dir = tempfile::tempdir().unwrap();
        // With the gateway answering the auth callout, the server requires it of everyone but
        // the platform's own user.
        let auth = options.gateway.nats_auth.as_ref().map(|n| {
            let keys = n.keys().unwrap();
            wharf_local::ServerAuth {
                user: "wharf".into(),
                password: uuid::Uuid::now_v7().simple().to_string(),
                callout_issuer: Some(keys.issuer_public().to_owned()),
                callout_xkey: keys.xkey_public(),
            }
        });
        let nats = LocalNats::start_with(&dir.path().join("nats"), auth.as_ref())
            .await
            .unwrap();
        let bus = Bus::connect(nats.url(), "wharf-test", options.topology.clone())
            .await
            .unwrap();
        bus.ensure_topology().await.unwrap();
        let database_url = fresh_database().await;
        let store = Store::connect(&database_url).await.unwrap();
        let mut w = Wharf {
            dir,
            nats,
            bus,
            store,
            database_url,
            api: String::new(),
            http: http(),
            options,
            gateway: None,
            recorder: None,
            workers: Vec::new(),
        };
        w.start_recorder();
        for _ in 0..w.options.workers {
            w.add_worker();
        }
        w.start_gateway().await;
        w
    }

    /// Where the demo server writes what it saw.
    pub fn demo_log(&self) -> PathBuf {
        self.dir.path().join("demo.log")
    }

    pub fn start_recorder(&mut self) {
        let recorder = wharf_recorder::Recorder::new(self.bus.clone(), self.store.clone());
        self.recorder = Some(Part::spawn("recorder", |stop| async move {
            recorder.run_until_stopped(stop).await?;
            Ok(())
        }));
    }

    pub fn add_worker(&mut self) {
        let servers = if self.options.servers.is_empty() {
            vec![demo_server("demo", Some(&self.demo_log()))]
        } else {
            self.options.servers.clone()
        };
        let config = WorkerConfig {
            id: format!("test-worker-{}", self.workers.len()),
            queues: self.options.queues.clone(),
            concurrency: self.options.concurrency,
            servers,
            shutdown_grace: self.options.shutdown_grace,
            registry: self.options.registry.clone(),
        };
        let worker = wharf_worker::Worker::new(config, self.bus.clone()).unwrap();
        self.workers.push(Part::spawn("worker", |stop| async move {
            worker.run_until_stopped(stop).await?;
            Ok(())
        }));
    }

    pub async fn start_gateway(&mut self) {
        let config = wharf_gateway::GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..self.options.gateway.clone()
        };
        let gateway = wharf_gateway::Gateway::build(config, self.bus.clone(), self.store.clone())
            .await
            .unwrap();
        self.api = format!("http://{}", gateway.local_addr());
        self.gateway = Some(Part::spawn("gateway", |stop| async move {
            gateway.run_until_stopped(stop).await?;
            Ok(())
        }));
    }

    /// Starts another gateway on the same NATS and database (as a second instance behind a
    /// load balancer would be); returns its `http://127.0.0.1:<port>` and the running part.
    pub async fn another_gateway(&self) -> (String, Part) {
        self.gateway_with(wharf_gateway::GatewayConfig::default())
            .await
    }

    /// Like [`Wharf::another_gateway`], with `config` (its `listen` is replaced by a free port).
    pub async fn gateway_with(&self, config: wharf_gateway::GatewayConfig) -> (String, Part) {
        let config = wharf_gateway::GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        let gateway = wharf_gateway::Gateway::build(config, self.bus.clone(), self.store.clone())
            .await
            .unwrap();
        let api = format!("http://{}", gateway.local_addr());
        let part = Part::spawn("gateway", |stop| async move {
            gateway.run_until_stopped(stop).await?;
            Ok(())
        });
        (api, part)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// A new session named `name` (`POST /api/v1/sessions`): its id.
    pub async fn session(&self, name: &str) -> String {
        let r = self
            .http
            .post(self.url("/api/v1/sessions"))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "create a session");
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// A new API key of `tenant` with `role`, stored directly (as `wharf bootstrap-key` does):
    /// its secret.
    pub async fn key(&self, tenant: &str, role: &str) -> String {
        let (info, secret, hash) = wharf_gateway::auth::mint_key(
            format!("test-{role}"),
            tenant.into(),
            role.into(),
            "test".into(),
            None,
        );
        self.store.create_key(&info, &hash).await.unwrap();
        secret
    }

    /// An HTTP client that sends `credential` (an API key or token) with every request.
    pub fn client_as(credential: &str) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {credential}").parse().unwrap(),
        );
        wharf_telemetry::install_crypto();
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    }

    /// Waits until the gateway lists `tool`.
    pub async fn wait_for_tool(&self, tool: &str) {
        wait_for_tool_at(&self.http, &self.api, tool).await;
    }

    /// `POST /api/v1/tasks` with a JSON body: status and JSON answer.
    pub async fn submit(&self, body: Value) -> (reqwest::StatusCode, Value) {
        let r = self
            .http
            .post(self.url("/api/v1/tasks"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Submits and returns the new task's id, asserting the 202.
    pub async fn submit_ok(&self, body: Value) -> Uuid {
        let (status, answer) = self.submit(body).await;
        assert_eq!(status, 202, "submit answered {answer}");
        answer["id"].as_str().unwrap().parse().unwrap()
    }

    /// `GET /api/v1/tasks/{id}`
    pub async fn get_task(&self, id: Uuid) -> TaskView {
        let r = self
            .http
            .get(self.url(&format!("/api/v1/tasks/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET task {id}");
        r.json().await.unwrap()
    }

    /// `POST /api/v1/tasks/{id}/cancel`: the answer's status.
    pub async fn cancel(&self, id: Uuid) -> reqwest::StatusCode {
        self.http
            .post(self.url(&format!("/api/v1/tasks/{id}/cancel")))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// The kinds of the task's recorded events, in order.
    pub async fn event_kinds(&self, id: Uuid) -> Vec<String> {
        self.store
            .events(id)
            .await
            .unwrap()
            .iter()
            .map(|(_, e)| e.kind_name().to_owned())
            .collect()
    }

    /// Messages stored in stream `name` now.
    /// The sequence of the last message stored in stream `name`: it grows with every message
    /// stored and never shrinks as messages are acknowledged or expire, so two readings show
    /// whether anything was stored between them.
    pub async fn stream_last_sequence(&self, name: &str) -> u64 {
        let mut stream = self.bus.jetstream().get_stream(name).await.unwrap();
        stream.info().await.unwrap().state.last_sequence
    }

    pub async fn stream_messages(&self, name: &str) -> u64 {
        let mut stream = self.bus.jetstream().get_stream(name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// The stream sequences of the task's recorded events, in order.
    pub async fn event_seqs(&self, id: Uuid) -> Vec<u64> {
        self.store
            .events(id)
            .await
            .unwrap()
            .iter()
            .map(|(seq, _)| *seq)
            .collect()
    }

    /// Waits until the demo MCP server logged that it saw `task`'s call cancelled.
    pub async fn wait_demo_cancelled(&self, task: Uuid) {
        eventually(
            "the demo server logging the cancellation",
            Duration::from_secs(10),
            || async {
                self.demo_log_for(task)
                    .iter()
                    .any(|l| l["event"] == "cancelled")
                    .then_some(())
            },
        )
        .await;
    }

    /// Waits until the task's row in the database has `status`, and returns it.
    pub async fn wait_recorded(&self, id: Uuid, status: TaskStatus) -> TaskView {
        eventually(
            &format!("task {id} recorded as {}", status.as_str()),
            Duration::from_secs(30),
            || async {
                let view = self.store.task(id).await.unwrap()?;
                (view.status == status).then_some(view)
            },
        )
        .await
    }

    /// Lines of the demo server's log that mention `task`.
    pub fn demo_log_for(&self, task: Uuid) -> Vec<Value> {
        let text = std::fs::read_to_string(self.demo_log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["task_id"] == task.to_string())
            .collect()
    }

    /// The gateway's `/metrics` scrape.
    pub async fn metrics(&self) -> String {
        let r = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().await.unwrap()
    }

    /// A `wharf` process (e.g. `worker`, `recorder`) on this platform's NATS and database,
    /// quiet, killed when dropped. Add environment to `cmd` before spawning it.
    pub fn process(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(wharf_bin());
        cmd.args(args)
            .env("WHARF_NATS_URL", self.nats.url())
            .env("WHARF_DATABASE_URL", &self.database_url)
            .env_remove("WHARF_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Stops every in-process part, then the nats-server.
    pub async fn shutdown(mut self) {
        if let Some(g) = self.gateway.take() {
            g.stop().await;
        }
        for w in self.workers.drain(..) {
            w.stop().await;
        }
        if let Some(r) = self.recorder.take() {
            r.stop().await;
        }
    }
}

/// Where the third-party MCP servers of `tests/node` are installed (`npm ci` in `./test.sh`).
pub fn node_server(package_path: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("node/node_modules")
        .join(package_path);
    assert!(
        path.exists(),
        "{} is missing: run `npm ci --prefix tests/node` (./test.sh does)",
        path.display()
    );
    path
}

/// `@modelcontextprotocol/server-everything` over stdio, named `everything`.
pub fn everything_stdio() -> McpServerConfig {
    McpServerConfig {
        name: "everything".into(),
        transport: McpTransport::Stdio {
            command: "node".into(),
            args: vec![
                node_server("@modelcontextprotocol/server-everything/dist/index.js")
                    .display()
                    .to_string(),
                "stdio".into(),
            ],
            env: Default::default(),
            cwd: None,
        },
        retry_tool_errors: false,
    }
}

/// A test CA and a certificate it signed for localhost and 127.0.0.1, made with openssl:
/// (CA certificate, server certificate, server key).
pub fn certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=wharf-test-ca"];
    ca.extend_from_slice(&ec);
    let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
    ca.extend_from_slice(&["-keyout", &ca_key, "-out", &ca_pem]);
    openssl(&ca);
    let (key, csr) = (p("key.pem"), p("server.csr"));
    let mut req = vec!["req", "-subj", "/CN=localhost"];
    req.extend_from_slice(&ec);
    req.extend_from_slice(&["-keyout", &key, "-out", &csr]);
    openssl(&req);
    let ext = p("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let cert = p("cert.pem");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca_pem.into(), cert.into(), key.into())
}

/// Serves TLS on a free loopback port with `cert` and `key` (PEM files), passing each
/// connection's bytes to and from `target`: HTTPS in front of a plain HTTP server. Returns the
/// port; the proxy runs until the test's runtime ends.
pub async fn tls_proxy(
    cert: &std::path::Path,
    key: &std::path::Path,
    target: std::net::SocketAddr,
) -> u16 {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    port
}

/// Sends `req`: the answer's status and JSON body (`null` when it has none).
pub async fn send(req: reqwest::RequestBuilder) -> (reqwest::StatusCode, serde_json::Value) {
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// A plain HTTP client (with the process's TLS provider installed first, as every client
/// needs).
pub fn http() -> reqwest::Client {
    wharf_telemetry::install_crypto();
    reqwest::Client::new()
}

/// `@modelcontextprotocol/server-everything` serving streamable HTTP on a free port; killed when
/// dropped.
pub struct EverythingHttp {
    _child: tokio::process::Child,
    pub url: String,
}

impl EverythingHttp {
    pub async fn start() -> EverythingHttp {
        let port = wharf_local::free_port().unwrap();
        let child = tokio::process::Command::new("node")
            .arg(node_server(
                "@modelcontextprotocol/server-everything/dist/index.js",
            ))
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        eventually(
            "server-everything to listen",
            Duration::from_secs(20),
            || async { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await;
        EverythingHttp {
            _child: child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }

    /// The server's address, from its URL.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .parse()
            .unwrap()
    }

    pub fn config(&self) -> McpServerConfig {
        McpServerConfig {
            name: "everything".into(),
            transport: McpTransport::Http {
                url: self.url.clone(),
            },
            retry_tool_errors: false,
        }
    }
}

/// A WebSocket client of `/ws/v1/tasks` that sends and receives JSON.
pub struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl WsClient {
    pub async fn connect(w: &Wharf) -> WsClient {
        let url = format!("{}/ws/v1/tasks", w.api.replacen("http://", "ws://", 1));
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        WsClient { socket }
    }

    /// Connects as `credential`, sent as `?access_token=` (as a browser must).
    pub async fn connect_as(w: &Wharf, credential: &str) -> WsClient {
        let url = format!(
            "{}/ws/v1/tasks?access_token={credential}",
            w.api.replacen("http://", "ws://", 1)
        );
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        WsClient { socket }
    }

    pub async fn send(&mut self, message: Value) {
        use futures::SinkExt;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                message.to_string().into(),
            ))
            .await
            .unwrap();
    }

    /// Waits (up to 5 s) for the server to close the socket, skipping any message before the
    /// close; false if it stays open.
    pub async fn closed(&mut self) -> bool {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.socket.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Waits up to `deadline` for the server to close the socket, skipping any message before
    /// the close: the close frame's code, or `None` when the connection ended without one.
    /// Fails the test when the socket is still open after `deadline`.
    pub async fn close_code(&mut self, deadline: Duration) -> Option<u16> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        tokio::time::timeout(deadline, async {
            loop {
                match self.socket.next().await {
                    None | Some(Err(_)) => return None,
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the socket is still open after {deadline:?}"))
    }

    /// Writes `bytes` to the connection as they are, under the WebSocket layer: frames the
    /// client library would never send (unmasked, oversized, cut short).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = self.socket.get_mut() else {
            panic!("raw frames only over plain TCP");
        };
        tcp.write_all(bytes).await.unwrap();
        tcp.flush().await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        use futures::SinkExt;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .unwrap();
    }

    /// The next JSON message, failing the test after 30 s.
    pub async fn next(&mut self) -> Value {
        use futures::StreamExt;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("a websocket message within 30 s")
                .expect("the socket is open")
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }

    /// Messages until (and including) the first whose `type` is terminal for `task_id`.
    pub async fn until_terminal(&mut self, task_id: Uuid) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            let done = m["task_id"] == task_id.to_string()
                && matches!(
                    m["type"].as_str(),
                    Some("task:complete" | "task:error" | "task:cancelled")
                );
            out.push(m);
            if done {
                return out;
            }
        }
    }
}
