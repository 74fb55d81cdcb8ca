//! Wharf as an operator runs it: `wharf gateway`, `wharf recorder` and `wharf worker`
//! processes on a nats-server and a Postgres database of their own, started fresh for each
//! scenario and removed after it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use tokio::process::{Child, Command};
use wharf_local::{LocalNats, free_port};
use wharf_store::Store;

use crate::Options;
use crate::machine::{children, rss_kib};

/// Waits until the gateway answers `/readyz`.
async fn wait_ready(gateway: &mut Child, api: &str, log: &std::path::Path) -> anyhow::Result<()> {
    let client = wharf_client::Client::new(api)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(true) = client.ready().await {
            return Ok(());
        }
        if let Ok(Some(status)) = gateway.try_wait() {
            anyhow::bail!("the gateway exited ({status}); see {}", log.display());
        }
        anyhow::ensure!(Instant::now() < deadline, "the gateway did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a platform is shaped.
#[derive(Debug, Clone)]
pub struct Shape {
    pub workers: usize,
    /// Tasks each worker runs at once (`worker.concurrency`).
    pub concurrency: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            workers: 1,
            concurrency: 256,
        }
    }
}

pub struct Platform {
    dir: tempfile::TempDir,
    nats: Option<LocalNats>,
    db: BenchDatabase,
    /// The platform's own database, for reading the history the recorder wrote.
    pub store: Store,
    pub nats_url: String,
    pub api: String,
    pub ws: String,
    pub gateway: Child,
    pub recorder: Child,
    pub workers: Vec<Child>,
}

/// A throwaway database on the server `--database-url` names.
#[derive(Clone)]
pub struct BenchDatabase {
    admin: DatabaseConnection,
    name: String,
    /// Its URL.
    pub url: String,
}

impl BenchDatabase {
    pub async fn create(opts: &Options) -> anyhow::Result<BenchDatabase> {
        let admin = Database::connect(&opts.database_url)
            .await
            .context("connect to Postgres (--database-url)")?;
        let name = format!(
            "wharf_bench_{}_{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        let mut url = reqwest::Url::parse(&opts.database_url)?;
        url.set_path(&format!("/{name}"));
        Ok(BenchDatabase {
            admin,
            name,
            url: url.to_string(),
        })
    }

    /// Drops it, whoever is still connected.
    pub async fn drop_now(&self) {
        let _ = self
            .admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

impl Platform {
    pub async fn start(opts: &Options, shape: &Shape) -> anyhow::Result<Platform> {
        Self::start_with_env(opts, shape, &[]).await
    }

    /// [`Platform::start`], with `env` (name, value) added to every process's environment.
    pub async fn start_with_env(
        opts: &Options,
        shape: &Shape,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Platform> {
        let db = BenchDatabase::create(opts).await?;
        match Self::start_on(opts, shape, env, db.clone()).await {
            Ok(p) => Ok(p),
            Err(e) => {
                // The processes die with their handles; the database must be dropped here.
                db.drop_now().await;
                Err(e)
            }
        }
    }

    async fn start_on(
        opts: &Options,
        shape: &Shape,
        extra_env: &[(&str, &str)],
        db: BenchDatabase,
    ) -> anyhow::Result<Platform> {
        let dir = tempfile::tempdir()?;
        let nats = LocalNats::start(&dir.path().join("nats")).await?;
        let nats_url = nats.url().to_owned();
        let db_url = db.url.clone();

        let port = free_port()?;
        let api = format!("http://127.0.0.1:{port}");
        let ws = format!("ws://127.0.0.1:{port}/ws/v1/tasks");
        let (logs, nats_env, db_env) = (dir.path().to_owned(), nats_url.clone(), db_url.clone());
        let env = move |cmd: &mut Command, name: &str| -> anyhow::Result<()> {
            let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
            cmd.env("WHARF_NATS_URL", &nats_env)
                .env("WHARF_DATABASE_URL", &db_env)
                .env("WHARF_HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env("WHARF_WORKER__CONCURRENCY", shape.concurrency.to_string())
                // Loopback only, so the gateway may run open: an API key check is one SHA-256
                // and a map lookup, far below what these scenarios can resolve.
                .env("WHARF_GATEWAY__AUTH__MODE", "open")
                .env_remove("WHARF_CONFIG")
                .envs(extra_env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true);
            Ok(())
        };

        // The gateway migrates the database; the others start once it answers.
        let mut cmd = Command::new(&opts.wharf_bin);
        cmd.arg("gateway");
        env(&mut cmd, "gateway")?;
        let mut gateway = cmd.spawn().context("start wharf gateway")?;
        wait_ready(&mut gateway, &api, &dir.path().join("gateway.log")).await?;
        let store = Store::connect(&db_url).await?;

        let mut cmd = Command::new(&opts.wharf_bin);
        cmd.arg("recorder");
        env(&mut cmd, "recorder")?;
        let recorder = cmd.spawn().context("start wharf recorder")?;
        let mut workers = Vec::with_capacity(shape.workers);
        for i in 0..shape.workers {
            let mut cmd = Command::new(&opts.wharf_bin);
            cmd.args(["worker", "--id", &format!("bench-worker-{i}")]);
            env(&mut cmd, &format!("worker-{i}"))?;
            workers.push(cmd.spawn().context("start wharf worker")?);
        }
        let mut platform = Platform {
            dir,
            nats: Some(nats),
            db,
            store,
            nats_url,
            api,
            ws,
            gateway,
            recorder,
            workers,
        };
        platform.wait_workers(shape.workers).await?;
        Ok(platform)
    }

    /// Waits until every worker has pull requests waiting on the default queue, so a measured
    /// run does not include worker start-up.
    async fn wait_workers(&mut self, workers: usize) -> anyhow::Result<()> {
        let client = async_nats::connect(&self.nats_url).await?;
        let js = async_nats::jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(60);
        let name = format!("wharf-queue-{}", "default");
        loop {
            for (i, w) in self.workers.iter_mut().enumerate() {
                if let Ok(Some(status)) = w.try_wait() {
                    anyhow::bail!(
                        "worker {i} exited ({status}); see {}",
                        self.dir.path().join(format!("worker-{i}.log")).display()
                    );
                }
            }
            if let Ok(mut consumer) = js
                .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                    &name,
                    "WHARF_TASKS",
                )
                .await
                && let Ok(info) = consumer.info().await
                && info.num_waiting >= workers
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the workers did not start pulling within a minute"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("{name}.log"))
            .display()
            .to_string()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Tasks whose recorded status is `status`.
    pub async fn count(&self, status: &str) -> anyhow::Result<u64> {
        Ok(self
            .store
            .count_by_status()
            .await?
            .get(status)
            .copied()
            .unwrap_or(0))
    }

    /// Waits until `n` tasks are recorded in a terminal state; returns when that was seen and
    /// how many succeeded. Polls every 20 ms (one grouped count).
    pub async fn wait_terminal(&self, n: u64, within: Duration) -> anyhow::Result<(Instant, u64)> {
        self.wait_terminal_every(n, within, Duration::from_millis(20))
            .await
    }

    /// [`Platform::wait_terminal`], polling every `every`: each poll is a grouped count over
    /// every task, whose Postgres CPU a scenario measuring CPU per task would otherwise count.
    pub async fn wait_terminal_every(
        &self,
        n: u64,
        within: Duration,
        every: Duration,
    ) -> anyhow::Result<(Instant, u64)> {
        let deadline = Instant::now() + within;
        loop {
            let counts = self.store.count_by_status().await?;
            let of = |s: &str| counts.get(s).copied().unwrap_or(0);
            let ok = of("succeeded");
            let ended = ok + of("failed") + of("cancelled");
            if ended >= n {
                return Ok((Instant::now(), ok));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {ended} of {n} tasks reached a terminal state in {within:?} (worker log: {})",
                self.log("worker-0")
            );
            tokio::time::sleep(every).await;
        }
    }

    /// When the last recorded task finished, by the worker's clock (the same machine's).
    pub async fn last_finished(&self) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
        let row = self
            .store
            .connection()
            .query_one_raw(Statement::from_string(
                self.store.connection().get_database_backend(),
                "SELECT max(finished_at) FROM tasks",
            ))
            .await?
            .context("max() returns a row")?;
        Ok(row.try_get_by_index::<Option<chrono::DateTime<chrono::Utc>>>(0)?)
    }

    pub fn gateway_pid(&self) -> u32 {
        self.gateway.id().unwrap_or(0)
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.id()).collect()
    }

    /// Resident memory of the gateway, the workers and their MCP servers, and nats-server, KiB.
    pub fn rss(&self) -> (u64, u64, u64, u64) {
        let gateway = rss_kib(self.gateway_pid());
        let workers: u64 = self.worker_pids().into_iter().map(rss_kib).sum();
        let servers: u64 = self
            .worker_pids()
            .into_iter()
            .flat_map(children)
            .map(rss_kib)
            .sum();
        let nats = self
            .nats
            .as_ref()
            .and_then(LocalNats::pid)
            .map(rss_kib)
            .unwrap_or(0);
        (gateway, workers, servers, nats)
    }

    /// Stops every process (SIGTERM, or SIGKILL when `kill`), then drops the database.
    pub async fn stop(mut self, kill: bool) {
        let mut children: Vec<&mut Child> = self.workers.iter_mut().collect();
        children.push(&mut self.gateway);
        children.push(&mut self.recorder);
        for c in &mut children {
            if kill {
                let _ = c.start_kill();
            } else if let Some(pid) = c.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for c in children {
            if tokio::time::timeout(Duration::from_secs(40), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
        if let Some(nats) = self.nats.take() {
            nats.stop().await;
        }
        let _ = self.store.connection().close_by_ref().await;
        self.db.drop_now().await;
    }
}
