//! A platform whose every part is a process of its own (`wharf gateway`, `wharf recorder`,
//! `wharf worker`), for the tests that break parts with real signals: each runs tasks through
//! it, breaks something while they run, then checks what a user would: every task that got a
//! 202 ended exactly once, none is left queued or running, and the history in Postgres holds
//! exactly those tasks.

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

use crate::{Client, fresh_database, wait_for_tool_at, wharf_bin};

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
    _recorder: Child,
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
            _recorder: recorder,
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

    /// Submits tasks from `clients` concurrent clients, each at most 50 a second, until `stop`
    /// fires, taking the bodies in turn; returns what they were answered.
    pub fn submit_until(
        &self,
        clients: usize,
        bodies: Vec<Value>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<Submissions> {
        let http = self.http.clone();
        tokio::spawn(async move {
            let one = |(http, first): (Client, usize)| {
                let (bodies, stop) = (bodies.clone(), stop.clone());
                async move {
                    let mut got = Submissions::default();
                    // Paced: a few hundred tasks a second in all, a load the checks can read back.
                    let mut pace = tokio::time::interval(Duration::from_millis(20));
                    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut n = first;
                    while !stop.is_cancelled() {
                        pace.tick().await;
                        n += 1;
                        let sent = Instant::now();
                        let r = http
                            .request(Method::POST, "/api/v1/tasks")
                            .timeout(Duration::from_secs(30))
                            .json(&bodies[n % bodies.len()])
                            .send()
                            .await;
                        if !got.record(r, sent).await {
                            // Down: try again shortly rather than spin.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    got
                }
            };
            let all = futures::future::join_all((0..clients).map(|c| one((http.clone(), c)))).await;
            all.into_iter()
                .fold(Submissions::default(), |mut all, got| {
                    all.ids.extend(got.ids);
                    all.unavailable.extend(got.unavailable);
                    all.failed.extend(got.failed);
                    all
                })
        })
    }

    /// Submits `n` tasks; returns the ids of those answered 202.
    pub async fn submit(&self, n: usize, body: &Value) -> Vec<Uuid> {
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
    pub async fn submit_batch(&self, n: usize, body: &Value) -> Vec<Uuid> {
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

    /// Tasks in the history that ended, and that did not (queued or running).
    pub async fn ended(&self) -> (u64, u64) {
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
    pub async fn wait_all_ended(&self, n: usize, deadline: Duration) {
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
    pub async fn consumers(&self) -> String {
        let Ok(js) = self.jetstream().await else {
            return "consumers: NATS cannot be reached".into();
        };
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
    pub async fn stranded(&self) -> Option<u64> {
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
    pub async fn check(&self, ids: &[Uuid], kills: &[(String, DateTime<Utc>)]) -> Figures {
        let mut f = Figures {
            tasks: ids.len(),
            ..Figures::default()
        };
        let mut finished = Vec::with_capacity(ids.len());
        for id in ids {
            let task = self.store.task(*id).await.unwrap();
            finished.extend(task.as_ref().and_then(|t| t.finished_at));
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
        finished.sort();
        f.longest_gap = finished
            .windows(2)
            .map(|w| (w[1] - w[0]).to_std().unwrap_or_default())
            .max()
            .unwrap_or_default();
        // Every accepted task was found above, so equal counts mean nothing else is there.
        let counts = self.store.count_by_status().await.unwrap();
        f.in_history = counts.values().sum::<u64>() as usize;
        f
    }
}

/// What a steady submitter was answered.
#[derive(Debug, Default)]
pub struct Submissions {
    /// Answered 202: accepted.
    pub ids: Vec<Uuid>,
    /// When each submission answered 503 `unavailable` with `Retry-After` was sent.
    pub unavailable: Vec<Instant>,
    /// Anything else: another status, or no answer (the gateway died, the client gave up).
    pub failed: Vec<String>,
}

impl Submissions {
    /// Submissions not accepted, however they were refused.
    pub fn refused(&self) -> usize {
        self.unavailable.len() + self.failed.len()
    }

    /// Files an answer; false when the submission was not accepted.
    async fn record(&mut self, r: reqwest::Result<reqwest::Response>, sent: Instant) -> bool {
        match r {
            Ok(r) if r.status() == 202 => {
                let v: Value = r.json().await.unwrap();
                self.ids.push(v["id"].as_str().unwrap().parse().unwrap());
                true
            }
            Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
                self.unavailable.push(sent);
                false
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                self.failed.push(format!("{status}: {body}"));
                false
            }
            Err(e) => {
                self.failed.push(format!("no answer: {e}"));
                false
            }
        }
    }
}

/// Waits until the gateway answers its readiness probe.
pub async fn wait_ready(http: &Client) {
    crate::eventually("the gateway ready", Duration::from_secs(30), || async {
        http.ready().await.ok()?.then_some(())
    })
    .await;
}

#[derive(Debug, Default)]
pub struct Figures {
    pub tasks: usize,
    pub in_history: usize,
    pub lost: Vec<Uuid>,
    pub duplicated: Vec<Uuid>,
    pub other: Vec<(Uuid, String)>,
    pub runs_repeated: usize,
    pub attempts_failed: usize,
    /// Tasks running on a worker when it was killed.
    pub caught: usize,
    /// Longest time from a kill to a task it caught starting again elsewhere.
    pub max_recovery: Duration,
    /// Longest time between two tasks ending, from the first end to the last.
    pub longest_gap: Duration,
}

impl Figures {
    pub fn print(&self, what: &str, faults: usize) {
        println!(
            "{what}: tasks {}, faults injected {faults}, lost {}, duplicated {}, other outcomes {}, \
             tasks run more than once {}, failed attempts retried {}, tasks caught running by a \
             kill {}, max recovery {:.1} s, longest gap between tasks ending {:.1} s",
            self.tasks,
            self.lost.len(),
            self.duplicated.len(),
            self.other.len(),
            self.runs_repeated,
            self.attempts_failed,
            self.caught,
            self.max_recovery.as_secs_f64(),
            self.longest_gap.as_secs_f64(),
        );
    }

    /// What every fault test asserts: each accepted task succeeded exactly once, and the history
    /// holds exactly the accepted tasks, plus at most `unanswered` more: submissions cut off
    /// before their answer (the gateway or nats-server died) may have been stored, and the
    /// client cannot tell. (`wait_all_ended` saw every task in the history end, but for
    /// stranded submissions.)
    pub fn assert_exactly_once(&self, unanswered: usize) {
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

pub fn sleep_task(seconds: f64) -> Value {
    // Attempts to spare: a task may be caught by several faults in a row.
    json!({
        "tool": "demo.sleep",
        "arguments": { "seconds": seconds, "steps": 1 },
        "max_attempts": 20,
    })
}

/// Ends a run under a steady submitter: stops it, waits until every task ended, reads the
/// history back, prints the figures and checks each accepted task ended exactly once. When the
/// fault could cut a submission off after it was stored (`cut_off_may_be_stored`), the history
/// may hold up to that many tasks besides the accepted ones. The figures count the submitter's
/// tasks and `also`, tasks the test submitted itself.
pub async fn settle(
    rig: &Rig,
    (stop, submitter): (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<Submissions>,
    ),
    also: &[Uuid],
    what: &str,
    faults: usize,
    cut_off_may_be_stored: bool,
) -> (Submissions, Figures, Instant) {
    stop.cancel();
    let got = submitter.await.unwrap();
    assert!(
        got.ids.len() >= 100,
        "tasks were accepted around the faults"
    );
    let all: Vec<Uuid> = got.ids.iter().chain(also).copied().collect();
    rig.wait_all_ended(all.len(), Duration::from_secs(120))
        .await;
    let all_ended = Instant::now();
    let f = rig.check(&all, &[]).await;
    f.print(what, faults);
    println!(
        "submissions refused or cut off: {} (503 with Retry-After: {}, other: {})",
        got.refused(),
        got.unavailable.len(),
        got.failed.len()
    );
    f.assert_exactly_once(if cut_off_may_be_stored {
        got.refused()
    } else {
        0
    });
    (got, f, all_ended)
}
