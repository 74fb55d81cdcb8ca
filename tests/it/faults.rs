//! Fault injection with real processes and real signals. Each test runs a few hundred tasks
//! through a gateway, a recorder and workers started as `wharf` processes, breaks a part of it
//! again and again while they run, then checks what a user would: every task that got a 202
//! ended exactly once, none is left queued or running, and the history in Postgres holds
//! exactly those tasks. Each prints its figures (nextest shows them for these tests).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use uuid::Uuid;
use wharf_contract::{EventKind, TaskStatus};
use wharf_local::{LocalNats, free_port};
use wharf_store::Store;
use wharf_testkit::{Client, fresh_database, wait_for_tool_at, wharf_bin};

/// A task's lease without a heartbeat, the smallest Wharf accepts: a killed worker's tasks go
/// to another worker after this.
const ACK_WAIT_SECS: u64 = 3;
/// Tasks each worker process runs at once.
const CONCURRENCY: usize = 8;

/// Starts a `wharf` part with its output in `<dir>/<log>.log`.
fn part(dir: &Path, nats: &str, db: &str, log: &str, args: &[&str]) -> Child {
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
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Sends SIGKILL: no handler runs, nothing is drained, acknowledged or handed back.
fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The processes whose parent is `parent` and whose command line contains `needle`.
fn children_running(parent: u32, needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent's pid is the second field after the command name, closed by ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

/// A Postgres server of the test's own, which it may stop and start again: the suite's shared
/// server must stay up for the other tests.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let pg = OwnPostgres { dir, port };
        if nix::unistd::Uid::effective().is_root() {
            // Postgres refuses to run as root: its files belong to the postgres user.
            let ok = std::process::Command::new("chown")
                .args(["postgres"])
                .arg(pg.dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown the cluster directory");
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        pg.start_again();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs a Postgres program, as the postgres user when this is root.
    fn run(&self, program: &str, args: &[&str]) {
        let bin = ["/usr/lib/postgresql/15/bin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(program))
            .find(|p| p.exists())
            .unwrap_or_else(|| program.into());
        let mut cmd = if nix::unistd::Uid::effective().is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            std::process::Command::new(bin)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server at once (`immediate`: no checkpoint, as after a crash).
    fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if Path::new(&self.data()).join("postmaster.pid").exists() {
            self.stop();
        }
    }
}

/// One test's platform, every part a process of its own.
struct Rig {
    dir: tempfile::TempDir,
    /// `None` only while it is being restarted.
    nats: Option<LocalNats>,
    nats_url: String,
    db: String,
    addr: String,
    http: Client,
    store: Store,
    gateway: Child,
    _recorder: Child,
    /// (worker id, process)
    workers: Vec<(String, Child)>,
    workers_started: usize,
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
    async fn start(workers: usize) -> Rig {
        Rig::start_on(workers, fresh_database().await).await
    }

    /// The platform on database `db`.
    async fn start_on(workers: usize, db: String) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let nats = LocalNats::start(&dir.path().join("nats")).await.unwrap();
        let addr = format!("127.0.0.1:{}", free_port().unwrap());
        let gateway = part(
            dir.path(),
            nats.url(),
            &db,
            "gateway",
            &["gateway", "--http", &addr],
        );
        let http = Client::new(&format!("http://{addr}")).unwrap();
        // The gateway migrates the database; the recorder waits for it to answer first.
        wait_ready(&http).await;
        let recorder = part(dir.path(), nats.url(), &db, "recorder", &["recorder"]);
        let store = Store::connect(&db).await.unwrap();
        let mut rig = Rig {
            dir,
            nats_url: nats.url().to_owned(),
            nats: Some(nats),
            db,
            addr,
            http,
            store,
            gateway,
            _recorder: recorder,
            workers: Vec::new(),
            workers_started: 0,
        };
        for _ in 0..workers {
            rig.add_worker();
        }
        wait_for_tool_at(&rig.http, "demo.sleep").await;
        rig
    }

    fn add_worker(&mut self) {
        let id = format!("worker-{}", self.workers_started);
        self.workers_started += 1;
        let child = part(
            self.dir.path(),
            &self.nats_url,
            &self.db,
            &id,
            &["worker", "--id", &id],
        );
        self.workers.push((id, child));
    }

    /// Kills the oldest worker with SIGKILL and starts another in its place; returns the killed
    /// worker's id and when it was killed.
    async fn kill_a_worker(&mut self) -> (String, DateTime<Utc>) {
        let (id, mut child) = self.workers.remove(0);
        let at = Utc::now();
        sigkill(child.id().expect("a running worker"));
        let _ = child.wait().await;
        self.add_worker();
        (id, at)
    }

    /// Kills nats-server with SIGKILL, leaves it down for `down`, and starts it again on the
    /// same port and store.
    async fn crash_nats(&mut self, down: Duration) {
        self.nats.take().expect("nats-server runs").kill().await;
        tokio::time::sleep(down).await;
        let port = self.nats_url.rsplit(':').next().unwrap().parse().unwrap();
        let bin = wharf_local::find_or_install().await.unwrap();
        let nats = LocalNats::start_on(&bin, &self.dir.path().join("nats"), port)
            .await
            .unwrap();
        self.nats = Some(nats);
    }

    /// Kills the gateway with SIGKILL, and starts another on the same address.
    async fn crash_gateway(&mut self) {
        sigkill(self.gateway.id().expect("the gateway runs"));
        let _ = self.gateway.wait().await;
        self.gateway = part(
            self.dir.path(),
            &self.nats_url,
            &self.db,
            "gateway",
            &["gateway", "--http", &self.addr],
        );
        wait_ready(&self.http).await;
    }

    /// Submits tasks from `clients` concurrent clients, each at most 50 a second, until `stop`
    /// fires; returns the ids answered 202 and how many submissions were refused or failed (a
    /// part being down).
    fn submit_until(
        &self,
        clients: usize,
        body: Value,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<(Vec<Uuid>, usize)> {
        let http = self.http.clone();
        tokio::spawn(async move {
            let one = |http: Client| {
                let (body, stop) = (body.clone(), stop.clone());
                async move {
                    let (mut ids, mut refused) = (Vec::<Uuid>::new(), 0usize);
                    // Paced: a few hundred tasks a second in all, a load the checks can read back.
                    let mut pace = tokio::time::interval(Duration::from_millis(20));
                    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.is_cancelled() {
                        pace.tick().await;
                        let r = http
                            .request(Method::POST, "/api/v1/tasks")
                            .timeout(Duration::from_secs(10))
                            .json(&body)
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 202 => {
                                let v: Value = r.json().await.unwrap();
                                ids.push(v["id"].as_str().unwrap().parse().unwrap());
                            }
                            _ => {
                                refused += 1;
                                // Down: try again shortly rather than spin.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    (ids, refused)
                }
            };
            let all = futures::future::join_all((0..clients).map(|_| one(http.clone()))).await;
            all.into_iter()
                .fold((Vec::new(), 0), |(mut ids, refused), (i, r)| {
                    ids.extend(i);
                    (ids, refused + r)
                })
        })
    }

    /// Submits `n` tasks; returns the ids of those answered 202.
    async fn submit(&self, n: usize, body: &Value) -> Vec<Uuid> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let Ok(r) = self
                .http
                .request(Method::POST, "/api/v1/tasks")
                .json(body)
                .send()
                .await
            else {
                continue;
            };
            if r.status() == 202 {
                let v: Value = r.json().await.unwrap();
                ids.push(v["id"].as_str().unwrap().parse().unwrap());
            }
        }
        ids
    }

    /// Submits `n` copies of `body` in one batch; returns the ids (all of them: a batch is
    /// accepted whole).
    async fn submit_batch(&self, n: usize, body: &Value) -> Vec<Uuid> {
        let r = self
            .http
            .request(Method::POST, "/api/v1/tasks/batch")
            .json(&json!({ "tasks": vec![body; n] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "the batch was accepted");
        let v: Value = r.json().await.unwrap();
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// Lines of every worker's log that contain `needle`.
    fn worker_log_lines(&self, needle: &str) -> usize {
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
    async fn tasks_stream_messages(&self) -> u64 {
        let client = async_nats::connect(&self.nats_url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(wharf_contract::TASKS_STREAM).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Tasks in the history that ended, and that did not (queued or running).
    async fn ended(&self) -> (u64, u64) {
        let counts = self.store.count_by_status().await.unwrap();
        let open = |s: &str| s == "queued" || s == "running";
        let sum = |want: bool| {
            counts
                .iter()
                .filter(|(s, _)| open(s) == want)
                .map(|(_, n)| n)
                .sum()
        };
        (sum(false), sum(true))
    }

    /// Waits until the history holds at least `n` tasks and all of them ended, but for
    /// stranded submissions (see [`Rig::stranded`]).
    async fn wait_all_ended(&self, n: usize, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            let (ended, open) = self.ended().await;
            if ended >= n as u64 && (open == 0 || self.stranded().await == Some(open)) {
                return;
            }
            if Instant::now() >= end {
                panic!(
                    "after {deadline:?}, {ended} tasks ended and {open} are queued or running \
                     ({n} accepted); logs in {}\n{}",
                    self.dir.path().display(),
                    self.consumers().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What JetStream says of each consumer (waiting, in flight, delivered), to tell a stuck
    /// puller from a stuck recorder when tasks stop ending.
    async fn consumers(&self) -> String {
        let Ok(client) = async_nats::connect(&self.nats_url).await else {
            return "consumers: NATS cannot be reached".into();
        };
        let js = async_nats::jetstream::new(client);
        let mut out = String::from("consumers:");
        for name in [wharf_contract::TASKS_STREAM, wharf_contract::EVENTS_STREAM] {
            let Ok(stream) = js.get_stream(name).await else {
                continue;
            };
            let mut infos = stream.consumers();
            while let Some(Ok(c)) = futures::StreamExt::next(&mut infos).await {
                out.push_str(&format!(
                    "\n  {name}/{}: pending {}, ack pending {}, waiting pulls {}, redelivered {}, \
                     delivered up to {}, acked up to {}",
                    c.name,
                    c.num_pending,
                    c.num_ack_pending,
                    c.num_waiting,
                    c.num_redelivered,
                    c.delivered.stream_sequence,
                    c.ack_floor.stream_sequence,
                ));
            }
        }
        out
    }

    /// How many unfinished tasks are stranded submissions, when all of them are (`None`
    /// otherwise): a gateway killed between sending a task's `submitted` event and the task
    /// itself leaves a history of that one event and no task to run (docs/delivery.md). Such a
    /// submission was never answered 202, so `check` still finds every accepted task.
    async fn stranded(&self) -> Option<u64> {
        let open = self
            .store
            .tasks(&wharf_store::TaskFilter {
                unfinished: true,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let quiet_since = Utc::now() - chrono::Duration::seconds(10);
        for task in &open {
            let events = self.store.events(task.id).await.unwrap();
            let only_submitted = matches!(
                events.as_slice(),
                [(_, e)] if matches!(e.kind, EventKind::Submitted { .. }) && e.at < quiet_since
            );
            if !only_submitted {
                return None;
            }
        }
        if !open.is_empty() {
            println!(
                "stranded submissions (submitted event, no task): {}",
                open.len()
            );
        }
        Some(open.len() as u64)
    }

    /// Reads every task's history back and checks it; returns the figures.
    async fn check(&self, ids: &[Uuid], kills: &[(String, DateTime<Utc>)]) -> Figures {
        let mut f = Figures {
            tasks: ids.len(),
            ..Figures::default()
        };
        for id in ids {
            let task = self.store.task(*id).await.unwrap();
            let events = self.store.events(*id).await.unwrap();
            let terminal = events
                .iter()
                .filter(|(_, e)| e.terminal_status().is_some())
                .count();
            match task.map(|t| t.status) {
                Some(TaskStatus::Succeeded) if terminal == 1 => {}
                Some(TaskStatus::Queued | TaskStatus::Running) | None => f.lost.push(*id),
                _ if terminal > 1 => f.duplicated.push(*id),
                other => f.other.push((*id, format!("{other:?}"))),
            }
            let started: Vec<(&str, DateTime<Utc>)> = events
                .iter()
                .filter_map(|(_, e)| match &e.kind {
                    EventKind::Started { worker, .. } => Some((worker.as_str(), e.at)),
                    _ => None,
                })
                .collect();
            if started.len() > 1 {
                f.runs_repeated += 1;
            }
            f.attempts_failed += events
                .iter()
                .filter(|(_, e)| matches!(e.kind, EventKind::AttemptFailed { .. }))
                .count();
            let ended_at = events
                .iter()
                .find(|(_, e)| e.terminal_status().is_some())
                .map(|(_, e)| e.at);
            // A kill caught this task when its latest start before the kill was on the killed
            // worker and it had not ended yet: it recovered at its next start.
            for (worker, killed_at) in kills {
                let Some(last) = started.iter().rev().find(|(_, at)| at < killed_at) else {
                    continue;
                };
                if last.0 != worker || ended_at.is_some_and(|e| e < *killed_at) {
                    continue;
                }
                if let Some((_, again)) = started.iter().find(|(_, at)| at > killed_at) {
                    let took = (*again - *killed_at).to_std().unwrap_or_default();
                    f.caught += 1;
                    f.max_recovery = f.max_recovery.max(took);
                }
            }
        }
        // Every accepted task was found above, so equal counts mean nothing else is there.
        let counts = self.store.count_by_status().await.unwrap();
        f.in_history = counts.values().sum::<u64>() as usize;
        f
    }
}

/// Waits until the gateway answers its readiness probe.
async fn wait_ready(http: &Client) {
    wharf_testkit::eventually("the gateway ready", Duration::from_secs(30), || async {
        http.ready().await.ok()?.then_some(())
    })
    .await;
}

#[derive(Debug, Default)]
struct Figures {
    tasks: usize,
    in_history: usize,
    lost: Vec<Uuid>,
    duplicated: Vec<Uuid>,
    other: Vec<(Uuid, String)>,
    runs_repeated: usize,
    attempts_failed: usize,
    /// Tasks running on a worker when it was killed.
    caught: usize,
    /// Longest time from a kill to a task it caught starting again elsewhere.
    max_recovery: Duration,
}

impl Figures {
    fn print(&self, what: &str, faults: usize) {
        println!(
            "{what}: tasks {}, faults injected {faults}, lost {}, duplicated {}, other outcomes {}, \
             tasks run more than once {}, failed attempts retried {}, tasks caught running by a \
             kill {}, max recovery {:.1} s",
            self.tasks,
            self.lost.len(),
            self.duplicated.len(),
            self.other.len(),
            self.runs_repeated,
            self.attempts_failed,
            self.caught,
            self.max_recovery.as_secs_f64(),
        );
    }

    /// What every fault test asserts: each accepted task succeeded exactly once, and the history
    /// holds exactly the accepted tasks, plus at most `unanswered` more: submissions cut off
    /// before their answer (the gateway or nats-server died) may have been stored, and the
    /// client cannot tell. (`wait_all_ended` saw every task in the history end, but for
    /// stranded submissions.)
    fn assert_exactly_once(&self, unanswered: usize) {
        assert!(self.lost.is_empty(), "lost tasks: {:?}", self.lost);
        assert!(
            self.duplicated.is_empty(),
            "tasks with more than one terminal event: {:?}",
            self.duplicated
        );
        assert!(
            self.other.is_empty(),
            "unexpected outcomes: {:?}",
            self.other
        );
        assert!(
            (self.tasks..=self.tasks + unanswered).contains(&self.in_history),
            "{} tasks in the history for {} accepted and {unanswered} unanswered",
            self.in_history,
            self.tasks
        );
    }
}

fn sleep_task(seconds: f64) -> Value {
    // Attempts to spare: a task may be caught by several faults in a row.
    json!({
        "tool": "demo.sleep",
        "arguments": { "seconds": seconds, "steps": 1 },
        "max_attempts": 20,
    })
}

#[tokio::test]
async fn workers_killed_with_sigkill_lose_and_double_nothing() {
    let mut rig = Rig::start(3).await;
    let ids = rig.submit(600, &sleep_task(0.25)).await;
    assert_eq!(ids.len(), 600, "every submission accepted");

    // Kill a worker every two seconds while tasks remain, at most six times.
    let mut kills = Vec::new();
    while kills.len() < 6 && rig.ended().await.0 < ids.len() as u64 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        kills.push(rig.kill_a_worker().await);
    }
    rig.wait_all_ended(ids.len(), Duration::from_secs(120))
        .await;
    let f = rig.check(&ids, &kills).await;
    f.print("workers killed (SIGKILL)", kills.len());
    f.assert_exactly_once(0);
    assert!(kills.len() >= 2, "the test killed workers while tasks ran");
    assert!(f.caught > 0, "some kill caught tasks running");
    // A killed worker's tasks come back once its lease lapses, not after the task's timeout.
    assert!(
        f.max_recovery < Duration::from_secs(ACK_WAIT_SECS + 10),
        "tasks came back {:?} after their worker died",
        f.max_recovery
    );
}

#[tokio::test]
async fn mcp_servers_killed_mid_call_are_restarted_and_their_tasks_retried() {
    let rig = Rig::start(2).await;
    let ids = rig.submit(300, &sleep_task(0.3)).await;
    assert_eq!(ids.len(), 300, "every submission accepted");

    // Every 1.5 s, kill the demo MCP server under each worker, while calls are running.
    let mut faults = 0;
    for _ in 0..5 {
        if rig.ended().await.0 >= ids.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for (_, worker) in &rig.workers {
            for pid in children_running(worker.id().unwrap(), "mcp-demo") {
                sigkill(pid);
                faults += 1;
            }
        }
    }
    rig.wait_all_ended(ids.len(), Duration::from_secs(120))
        .await;
    let f = rig.check(&ids, &[]).await;
    f.print("MCP servers killed mid-call", faults);
    f.assert_exactly_once(0);
    assert!(faults >= 2, "the test killed MCP servers while tasks ran");
    assert!(
        f.attempts_failed > 0,
        "calls cut off by a dead server are retried, visibly"
    );
}

/// Ends a run under a steady submitter: stops it, waits until every task ended, reads the
/// history back, prints the figures and checks each accepted task ended exactly once. When the
/// fault could cut a submission off after it was stored (`cut_off_may_be_stored`), the history
/// may hold up to that many tasks besides the accepted ones.
async fn settle(
    rig: &Rig,
    stop: tokio_util::sync::CancellationToken,
    submitter: tokio::task::JoinHandle<(Vec<Uuid>, usize)>,
    what: &str,
    faults: usize,
    cut_off_may_be_stored: bool,
) -> (usize, Instant) {
    stop.cancel();
    let (ids, refused) = submitter.await.unwrap();
    assert!(ids.len() >= 100, "tasks were accepted around the faults");
    rig.wait_all_ended(ids.len(), Duration::from_secs(120))
        .await;
    let all_ended = Instant::now();
    let f = rig.check(&ids, &[]).await;
    f.print(what, faults);
    println!("submissions refused or cut off: {refused}");
    f.assert_exactly_once(if cut_off_may_be_stored { refused } else { 0 });
    (refused, all_ended)
}

#[tokio::test]
async fn nats_server_crashing_mid_run_loses_no_accepted_task() {
    let mut rig = Rig::start(2).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let submitter = rig.submit_until(4, sleep_task(0.05), stop.clone());
    // Two crashes, each with the server down for a second, while tasks are submitted and run.
    let mut faults = 0;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rig.crash_nats(Duration::from_secs(1)).await;
        faults += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let what = "nats-server crashed (SIGKILL) and restarted";
    settle(&rig, stop, submitter, what, faults, true).await;
}

/// The harsher case: a backlog keeps every worker taking tasks without pause (a pull request
/// is in flight almost always) when nats-server dies, three times. A pull request the server
/// took with it must not leave a worker waiting for its answer forever: once NATS is back, every
/// task runs while the workers live.
#[tokio::test]
async fn nats_server_crashing_under_a_backlog_leaves_no_task_waiting() {
    let mut rig = Rig::start(2).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.extend(rig.submit_batch(1000, &sleep_task(0.02)).await);
    }
    assert_eq!(ids.len(), 3000, "every submission accepted");
    let stop = tokio_util::sync::CancellationToken::new();
    let submitter = rig.submit_until(4, sleep_task(0.02), stop.clone());
    let mut faults = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        rig.crash_nats(Duration::from_millis(500)).await;
        faults += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let (more, refused) = submitter.await.unwrap();
    ids.extend(more);
    // A minute is ample once NATS is back: the whole backlog takes well under that here.
    rig.wait_all_ended(ids.len(), Duration::from_secs(60)).await;
    let f = rig.check(&ids, &[]).await;
    f.print("nats-server crashed under a backlog", faults);
    println!("submissions refused or cut off: {refused}");
    // Pull requests the server took down with it, which the workers gave up on and made again
    // (before, each froze its worker's queue for good).
    println!(
        "pull requests lost with the server and made again: {}",
        rig.worker_log_lines("got no answer")
    );
    f.assert_exactly_once(refused);

    // Every worker takes tasks again, not only enough of them to drain the queue: a worker
    // whose pull request was lost must not sit out the rest of its life.
    let more = rig.submit_batch(400, &sleep_task(0.05)).await;
    rig.wait_all_ended(ids.len() + more.len(), Duration::from_secs(60))
        .await;
    let mut took: std::collections::BTreeMap<String, usize> =
        rig.workers.iter().map(|(id, _)| (id.clone(), 0)).collect();
    for id in &more {
        for (_, e) in rig.store.events(*id).await.unwrap() {
            if let EventKind::Started { worker, .. } = e.kind {
                *took.entry(worker).or_default() += 1;
            }
        }
    }
    println!("tasks each worker took after the crashes: {took:?}");
    assert!(
        took.values().all(|n| *n > 0),
        "a live worker took no task after the crashes: {took:?}"
    );
}

#[tokio::test]
async fn gateway_crashing_mid_run_loses_no_accepted_task() {
    let mut rig = Rig::start(2).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let submitter = rig.submit_until(4, sleep_task(0.05), stop.clone());
    let mut faults = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        rig.crash_gateway().await;
        faults += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let what = "gateway crashed (SIGKILL) and restarted";
    settle(&rig, stop, submitter, what, faults, true).await;
}

#[tokio::test]
async fn postgres_stopped_mid_run_delays_the_history_and_loses_nothing() {
    let pg = OwnPostgres::start();
    let rig = Rig::start_on(2, pg.url()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let submitter = rig.submit_until(4, sleep_task(0.05), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Down for three seconds: submissions go on (they need only NATS); the recorder waits.
    pg.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_again();
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let what = "Postgres stopped (immediate) and started again";
    let (refused, all_ended) = settle(&rig, stop, submitter, what, 1, false).await;
    assert_eq!(refused, 0, "submissions never needed the database");
    println!(
        "history complete {:.1} s after Postgres came back (a second of it still submitting)",
        (all_ended - restarted).as_secs_f64()
    );
}

#[tokio::test]
async fn delayed_tasks_survive_a_nats_server_crash_and_start_on_time() {
    let mut rig = Rig::start(1).await;
    let body = json!({"tool": "demo.echo", "arguments": {"message": "later"}, "delay_secs": 8});
    let ids = rig.submit(50, &body).await;
    assert_eq!(ids.len(), 50, "every submission accepted");
    assert_eq!(
        rig.tasks_stream_messages().await,
        50,
        "every schedule is pending when the server dies"
    );
    rig.crash_nats(Duration::from_secs(1)).await;
    rig.wait_all_ended(ids.len(), Duration::from_secs(60)).await;
    let f = rig.check(&ids, &[]).await;
    f.print("nats-server crashed with delayed tasks pending", 1);
    f.assert_exactly_once(0);
    for id in &ids {
        let t = rig.store.task(*id).await.unwrap().unwrap();
        let (started, due) = (t.started_at.unwrap(), t.run_at.unwrap());
        assert!(started >= due, "task {id} started {started}, due {due}");
        // On time within reason (generous: the machine runs other tests).
        assert!(
            started - due < chrono::Duration::seconds(20),
            "task {id} started {started}, due {due}"
        );
    }
}

#[tokio::test]
async fn a_worker_paused_past_its_lease_cannot_record_its_outcome() {
    let rig = Rig::start(2).await;
    let body =
        json!({"tool": "demo.sleep", "arguments": {"seconds": 5, "steps": 1}, "max_attempts": 5});
    let id = rig.submit(1, &body).await[0];
    let started = |attempt: u32| {
        let store = rig.store.clone();
        async move {
            wharf_testkit::eventually(
                &format!("attempt {attempt} started"),
                Duration::from_secs(30),
                || async {
                    store
                        .events(id)
                        .await
                        .unwrap()
                        .into_iter()
                        .find_map(|(_, e)| match e.kind {
                            EventKind::Started { worker, .. } if e.attempt == attempt => {
                                Some(worker)
                            }
                            _ => None,
                        })
                },
            )
            .await
        }
    };
    // Freeze the worker running the task (its MCP server runs on and answers meanwhile) until
    // its lease lapses and another worker starts the task again.
    let first = started(1).await;
    let pid = rig
        .workers
        .iter()
        .find(|(w, _)| *w == first)
        .and_then(|(_, c)| c.id())
        .unwrap();
    let signal = |s| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), s).unwrap();
    signal(nix::sys::signal::Signal::SIGSTOP);
    let second = started(2).await;
    assert_ne!(second, first);
    // Woken, the first worker finds its call answered, long before the second attempt ends.
    signal(nix::sys::signal::Signal::SIGCONT);
    rig.wait_all_ended(1, Duration::from_secs(60)).await;
    let terminal: Vec<_> = rig
        .store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.terminal_status().is_some())
        .map(|(_, e)| e.attempt)
        .collect();
    assert_eq!(
        terminal,
        [2],
        "the outcome is the attempt that held the lease, not the paused one"
    );
    let task = rig.store.task(id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(task.attempts, 2);
}
