//! A platform whose every part is a process of its own (`wharf gateway`, `wharf recorder`,
//! `wharf worker`), for the tests that break parts with real signals: each runs tasks through
//! it, breaks something while they run, then checks what a user would: every task that got a
//! 202 ended exactly once, none is left queued or running, and the history in Postgres holds
//! exactly those tasks. `load.rs` submits, `check.rs` reads the history back and judges it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use wharf_local::{LocalNats, free_port};
use wharf_store::Store;

use crate::{Client, fresh_database, wait_for_tool_at, wharf_bin};

mod check;
mod load;

pub use check::{Figures, settle};
pub use load::Submissions;

/// A task's lease without a heartbeat, the smallest Wharf accepts: a killed worker's tasks go
/// to another worker after this.
pub const ACK_WAIT_SECS: u64 = 3;
/// Tasks each worker process runs at once, unless the rig says otherwise.
pub const CONCURRENCY: usize = 8;

/// Starts a `wharf` part with its output in `<dir>/<log>.log`.
/// `env` comes last, so it may set anything again.
fn part(
    dir: &Path,
    (nats, db): (&str, &str),
    log: &str,
    args: &[&str],
    env: &[(String, String)],
) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{log}.log")))
        .unwrap();
    Command::new(wharf_bin())
        .args(args)
        .env("WHARF_NATS_URL", nats)
        .env("WHARF_DATABASE_URL", db)
        .env("WHARF_NATS__ACK_WAIT_SECS", ACK_WAIT_SECS.to_string())
        .env("WHARF_WORKER__CONCURRENCY", CONCURRENCY.to_string())
        // These tests break processes, not credentials: the gateway runs open (on loopback).
        .env("WHARF_GATEWAY__AUTH__MODE", "open")
        .env_remove("WHARF_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Sends SIGKILL: no handler runs, nothing is drained, acknowledged or handed back.
pub fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// One test's platform, every part a process of its own.
pub struct Rig {
    pub dir: tempfile::TempDir,
    /// The rig's own server; `None` while it is being restarted, or when the rig runs on
    /// servers started elsewhere (a cluster).
    nats: Option<LocalNats>,
    pub nats_url: String,
    db: String,
    addr: String,
    pub http: Client,
    pub store: Store,
    gateway: Child,
    recorder: Child,
    /// (worker id, process)
    pub workers: Vec<(String, Child)>,
    workers_started: usize,
    /// Environment of every part besides the rig's own.
    env: Vec<(String, String)>,
}

/// How a [`Rig`] is put together.
#[derive(Debug, Default)]
pub struct Setup {
    /// Worker processes.
    pub workers: usize,
    /// The database; a fresh one when `None`.
    pub db: Option<String>,
    /// The NATS servers (comma-separated); the rig starts a server of its own when `None`.
    pub nats_url: Option<String>,
    /// Environment of every part (`WHARF_NATS__REPLICAS`, …).
    pub env: Vec<(String, String)>,
}

/// A failed test keeps its logs, where its message says they are.
impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
        }
    }
}

impl Rig {
    pub async fn start(workers: usize) -> Rig {
        Rig::start_with(Setup {
            workers,
            ..Setup::default()
        })
        .await
    }

    /// The platform on database `db`.
    pub async fn start_on(workers: usize, db: String) -> Rig {
        Rig::start_with(Setup {
            workers,
            db: Some(db),
            ..Setup::default()
        })
        .await
    }

    pub async fn start_with(setup: Setup) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let db = match setup.db {
            Some(db) => db,
            None => fresh_database().await,
        };
        let (nats, nats_url) = match setup.nats_url {
            Some(url) => (None, url),
            None => {
                let nats = LocalNats::start(&dir.path().join("nats")).await.unwrap();
                let url = nats.url().to_owned();
                (Some(nats), url)
            }
        };
        let addr = format!("127.0.0.1:{}", free_port().unwrap());
        let env = setup.env;
        let gateway = part(
            dir.path(),
            (&nats_url, &db),
            "gateway",
            &["gateway", "--http", &addr],
            &env,
        );
        let http = Client::new(&format!("http://{addr}")).unwrap();
        // The gateway migrates the database; the recorder waits for it to answer first.
        wait_ready(&http).await;
        let recorder = part(
            dir.path(),
            (&nats_url, &db),
            "recorder",
            &["recorder"],
            &env,
        );
        let store = Store::connect(&db).await.unwrap();
        let mut rig = Rig {
            dir,
            nats_url,
            nats,
            db,
            addr,
            http,
            store,
            gateway,
            recorder,
            workers: Vec::new(),
            workers_started: 0,
            env,
        };
        for _ in 0..setup.workers {
            rig.add_worker();
        }
        if setup.workers > 0 {
            wait_for_tool_at(&rig.http, "demo.sleep").await;
        }
        rig
    }

    /// Kills the recorder with SIGKILL and starts another in its place.
    pub async fn kill_recorder(&mut self) {
        if let Some(pid) = self.recorder.id() {
            sigkill(pid);
        }
        let _ = self.recorder.wait().await;
        self.recorder = part(
            self.dir.path(),
            (&self.nats_url, &self.db),
            "recorder",
            &["recorder"],
            &self.env,
        );
    }

    pub fn add_worker(&mut self) {
        let url = self.nats_url.clone();
        self.add_worker_on(&url, &[]);
    }

    /// Starts a worker connected to the NATS servers `nats_url` (a leaf node, say), with `env`
    /// besides the rig's; returns its id.
    pub fn add_worker_on(&mut self, nats_url: &str, env: &[(&str, &str)]) -> String {
        let id = format!("worker-{}", self.workers_started);
        self.workers_started += 1;
        let mut all = self.env.clone();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let child = part(
            self.dir.path(),
            (nats_url, &self.db),
            &id,
            &["worker", "--id", &id],
            &all,
        );
        self.workers.push((id.clone(), child));
        id
    }

    /// Kills the oldest worker with SIGKILL and starts another in its place; returns the killed
    /// worker's id and when it was killed.
    pub async fn kill_a_worker(&mut self) -> (String, DateTime<Utc>) {
        let (id, mut child) = self.workers.remove(0);
        let at = Utc::now();
        sigkill(child.id().expect("a running worker"));
        let _ = child.wait().await;
        self.add_worker();
        (id, at)
    }

    /// Kills nats-server with SIGKILL, leaves it down for `down`, and starts it again on the
    /// same port and store.
    pub async fn crash_nats(&mut self, down: Duration) {
        self.nats.take().expect("nats-server runs").kill().await;
        tokio::time::sleep(down).await;
        let port = self.nats_url.rsplit(':').next().unwrap().parse().unwrap();
        assert!(
            self.nats_url.split(',').nth(1).is_none(),
            "the rig's own server only"
        );
        let bin = wharf_local::find_or_install().await.unwrap();
        let nats = LocalNats::start_on(&bin, &self.dir.path().join("nats"), port)
            .await
            .unwrap();
        self.nats = Some(nats);
    }

    /// Kills the gateway with SIGKILL, and starts another on the same address.
    pub async fn crash_gateway(&mut self) {
        sigkill(self.gateway.id().expect("the gateway runs"));
        let _ = self.gateway.wait().await;
        self.gateway = part(
            self.dir.path(),
            (&self.nats_url, &self.db),
            "gateway",
            &["gateway", "--http", &self.addr],
            &self.env,
        );
        wait_ready(&self.http).await;
    }

    /// Lines of every worker's log that contain `needle`.
    pub fn worker_log_lines(&self, needle: &str) -> usize {
        (0..self.workers_started)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("worker-{i}.log")))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .count()
            })
            .sum()
    }

    /// Messages in the tasks stream now (queued tasks and pending schedules).
    pub async fn tasks_stream_messages(&self) -> u64 {
        let js = self.jetstream().await.unwrap();
        let mut stream = js.get_stream(wharf_contract::TASKS_STREAM).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// A JetStream context on the rig's NATS servers, of its own.
    pub async fn jetstream(
        &self,
    ) -> Result<async_nats::jetstream::Context, async_nats::ConnectError> {
        let urls: Vec<&str> = self.nats_url.split(',').collect();
        let client = async_nats::connect(urls.as_slice()).await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// The name of the server that leads stream `name` now, as the cluster reports it.
    pub async fn stream_leader(&self, name: &str) -> String {
        let urls: Vec<&str> = self.nats_url.split(',').collect();
        let client = async_nats::connect(urls.as_slice()).await.unwrap();
        // Asked often while a leader is elected: an unanswered request is asked again soon.
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(500))
            .build(client);
        crate::eventually(
            &format!("a leader of {name}"),
            Duration::from_secs(30),
            || async {
                let mut stream = js.get_stream(name).await.ok()?;
                stream.info().await.ok()?.cluster.as_ref()?.leader.clone()
            },
        )
        .await
    }
}
/// Waits until the gateway answers its readiness probe.
pub async fn wait_ready(http: &Client) {
    crate::eventually("the gateway ready", Duration::from_secs(30), || async {
        http.ready().await.ok()?.then_some(())
    })
    .await;
}
pub fn sleep_task(seconds: f64) -> Value {
    // Attempts to spare: a task may be caught by several faults in a row.
    json!({
        "tool": "demo.sleep",
        "arguments": { "seconds": seconds, "steps": 1 },
        "max_attempts": 20,
    })
}
