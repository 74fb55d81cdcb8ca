//! One test's platform: its nats-server, database, gateway, recorder and workers, each part
//! stoppable on its own.

use std::path::PathBuf;
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wharf_bus::{Bus, Topology};
use wharf_contract::{TaskStatus, TaskView};
use wharf_local::LocalNats;
use wharf_store::Store;
use wharf_worker::{McpServerConfig, WorkerConfig};

use crate::{demo_server, eventually, wharf_bin};

/// The test Postgres server's URL and a connection to it.
async fn admin() -> (String, sea_orm::DatabaseConnection) {
    let admin = std::env::var("WHARF_TEST_DATABASE_URL").expect(
        "WHARF_TEST_DATABASE_URL must name a Postgres server (./test.sh starts one and sets it)",
    );
    let db = Database::connect(&admin)
        .await
        .expect("connect to the test postgres");
    (admin, db)
}

/// A fresh Postgres database for one test, cloned from a migrated template.
pub async fn fresh_database() -> String {
    let (admin, db) = admin().await;
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

/// An empty Postgres database, no migration applied, for a test of the migrations themselves.
pub async fn empty_database() -> String {
    let (admin, db) = admin().await;
    let name = format!("wharf_empty_{}", Uuid::now_v7().simple());
    db.execute_unprepared(&format!("CREATE DATABASE {name}"))
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
    /// `worker.started_event_after_ms` (the product's default unless a test changes it).
    pub started_event_after: Duration,
    /// What the workers take from the MCP registry of the runtime configuration.
    pub registry: wharf_worker::RegistryPolicy,
    /// The gateway's configuration (its `listen` is replaced by a free loopback port). Open by
    /// default: requests without credentials act as an admin of the `default` tenant.
    pub gateway: wharf_gateway::GatewayConfig,
    /// How the recorder delivers callbacks (`[callbacks]`).
    pub callbacks: wharf_recorder::CallbackSettings,
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
            started_event_after: Duration::from_secs(1),
            registry: wharf_worker::RegistryPolicy::default(),
            gateway: wharf_gateway::GatewayConfig::default(),
            callbacks: wharf_recorder::CallbackSettings::default(),
        }
    }
}

impl Options {
    /// The default options, with credentials required (`auth.mode = "required"`): requests
    /// need a key ([`Wharf::key`]) or token.
    pub fn closed() -> Options {
        let mut options = Options::default();
        options.gateway.auth.mode = Some(wharf_gateway::AuthMode::Required);
        options
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
    /// The API asked without credentials (see [`Wharf::client`]); one connection pool for
    /// every client of the test.
    pub(crate) client: Option<wharf_client::Client>,
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
            client: None,
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
        let recorder = wharf_recorder::Recorder::new(self.bus.clone(), self.store.clone())
            .with_callbacks(self.options.callbacks.clone());
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
            started_event_after: self.options.started_event_after,
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
        self.client = Some(wharf_client::Client::new(&self.api).unwrap());
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

    /// The bodies of task `id`'s messages as stored in the events stream, in order: what
    /// nats-server holds, before any reader unfolds a start reported with another event.
    pub async fn stored_events(&self, id: Uuid) -> Vec<Value> {
        let stored = self.bus.stored_bodies(id, 0).await.unwrap();
        stored
            .iter()
            .map(|(_, body)| serde_json::from_slice(body).unwrap())
            .collect()
    }

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

    /// Waits until the demo MCP server logged starting a `sleep` for a task not in `known`,
    /// and returns that task (for calls whose task id the caller does not see, e.g. over MCP).
    pub async fn started_sleep(&self, known: &[Uuid]) -> Uuid {
        eventually(
            "the demo server starting a sleep",
            Duration::from_secs(15),
            || async {
                let log = std::fs::read_to_string(self.demo_log()).unwrap_or_default();
                log.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|l| l["event"] == "started" && l["tool"] == "sleep")
                    .filter_map(|l| l["task_id"].as_str()?.parse().ok())
                    .find(|id| !known.contains(id))
            },
        )
        .await
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
