//! Fault injection with real processes and real signals, on one machine's parts. Each test runs a
//! few hundred tasks through the test kit's [`Rig`] (a gateway, a recorder and workers started as
//! `wharf` processes), breaks a part of it again and again while they run, then checks what a
//! user would: every task that got a 202 ended exactly once, none is left queued or running, and
//! the history in Postgres holds exactly those tasks. Each prints its figures (nextest shows them
//! for these tests). The NATS cluster's faults are in `cluster.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use wharf_contract::{EventKind, TaskStatus};
use wharf_local::free_port;
use wharf_testkit::rig::{ACK_WAIT_SECS, Rig, Setup, settle, sigkill, sleep_task};

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

#[tokio::test]
async fn workers_killed_with_sigkill_lose_and_double_nothing() {
    // Every start stored at once: the figures (tasks caught running, how soon they came back)
    // are read from the attempts' `started` events, and by default an attempt shorter than a
    // second stores its start only with its outcome, which a killed one never stores.
    let mut rig = Rig::start_with(Setup {
        workers: 3,
        env: vec![("WHARF_WORKER__STARTED_EVENT_AFTER_MS".into(), "0".into())],
        ..Setup::default()
    })
    .await;
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

#[tokio::test]
async fn nats_server_crashing_mid_run_loses_no_accepted_task() {
    let mut rig = Rig::start(2).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let submitter = rig.submit_until(4, vec![sleep_task(0.05)], stop.clone());
    // Two crashes, each with the server down for a second, while tasks are submitted and run.
    let mut faults = 0;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rig.crash_nats(Duration::from_secs(1)).await;
        faults += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let what = "nats-server crashed (SIGKILL) and restarted";
    settle(&rig, (stop, submitter), &[], what, faults, true).await;
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
    let submitter = rig.submit_until(4, vec![sleep_task(0.02)], stop.clone());
    let mut faults = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        rig.crash_nats(Duration::from_millis(500)).await;
        faults += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let got = submitter.await.unwrap();
    let refused = got.refused();
    ids.extend(got.ids);
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
    let submitter = rig.submit_until(4, vec![sleep_task(0.05)], stop.clone());
    let mut faults = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        rig.crash_gateway().await;
        faults += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let what = "gateway crashed (SIGKILL) and restarted";
    settle(&rig, (stop, submitter), &[], what, faults, true).await;
}

#[tokio::test]
async fn postgres_stopped_mid_run_delays_the_history_and_loses_nothing() {
    let pg = OwnPostgres::start();
    let rig = Rig::start_on(2, pg.url()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let submitter = rig.submit_until(4, vec![sleep_task(0.05)], stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Down for three seconds: submissions go on (they need only NATS); the recorder waits.
    pg.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_again();
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let what = "Postgres stopped (immediate) and started again";
    let (got, _, all_ended) = settle(&rig, (stop, submitter), &[], what, 1, false).await;
    assert_eq!(got.refused(), 0, "submissions never needed the database");
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
