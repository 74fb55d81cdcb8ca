//! The `wharf` binary as users run it: `wharf dev` driven by the CLI, and the gateway, worker and
//! recorder as separate processes sharing NATS and Postgres.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;
use wharf_contract::TaskStatus;
use wharf_local::{LocalNats, free_port};
use wharf_store::Store;
use wharf_testkit::{Client, eventually, fresh_database, wharf_bin};

fn wharf(args: &[&str]) -> Command {
    let mut cmd = Command::new(wharf_bin());
    cmd.args(args)
        .env_remove("WHARF_NATS_URL")
        .env_remove("WHARF_DATABASE_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs a client command to its end: (exit code, stdout, stderr).
async fn cli(api: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--api", api];
    all.extend_from_slice(args);
    let out = tokio::time::timeout(Duration::from_secs(60), wharf(&all).output())
        .await
        .expect("the cli command finishes")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn task_json(api: &str, id: &str) -> Value {
    let (code, out, err) = cli(api, &["task", id]).await;
    assert_eq!(code, 0, "wharf task: {err}");
    serde_json::from_str(&out).unwrap()
}

async fn wait_status(api: &str, id: &str, status: &str) {
    eventually(
        &format!("task {id} {status}"),
        Duration::from_secs(30),
        || async { (task_json(api, id).await["status"] == status).then_some(()) },
    )
    .await;
}

/// `wharf dev` serving `addr` on `data_dir`.
fn dev_command(addr: &str, data_dir: &std::path::Path) -> Command {
    wharf(&[
        "dev",
        "--http",
        addr,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

/// Starts `wharf dev` and returns it with its banner, once printed.
async fn start_dev(addr: &str, data_dir: &std::path::Path) -> (Child, String) {
    banner_of(dev_command(addr, data_dir)).await
}

/// Sends `signal` (e.g. `-TERM`) to `target` (a pid, or `-<pgid>` for a process group) with
/// kill(1).
async fn signal(signal: &str, target: &str) {
    let sent = Command::new("kill")
        .args([signal, "--", target])
        .status()
        .await
        .unwrap();
    assert!(sent.success(), "kill {signal} {target}");
}

/// Starts `cmd` (a `wharf dev`) and returns it with its banner, once printed.
async fn banner_of(mut cmd: Command) -> (Child, String) {
    let mut dev = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            banner.push_str(&line);
            banner.push('\n');
            if line.trim_start().starts_with("Try") {
                break;
            }
        }
    })
    .await
    .expect("wharf dev prints its banner");
    (dev, banner)
}

/// Kills, when dropped, the nats-server a `wharf dev` on `data_dir` left running. `wharf dev`
/// stops it on a signal, but a test that fails midway drops its `wharf dev` with SIGKILL
/// (`kill_on_drop`), which leaves the server running, as documented for a killed `wharf dev`;
/// its next start would stop it, and a test never starts one again.
struct LeftServer(std::path::PathBuf);

impl Drop for LeftServer {
    fn drop(&mut self) {
        if let Some(pid) = wharf_local::left_running(&self.0.join("nats")) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The port of the nats-server a `wharf dev` banner names.
fn nats_port(banner: &str) -> u16 {
    banner
        .split("nats://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .expect("the banner names the nats-server it started")
}

#[tokio::test]
async fn wharf_dev_killed_and_started_again_keeps_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let _left = LeftServer(dir.path().to_owned());
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let api = format!("http://{addr}");
    let (mut first, banner) = start_dev(&addr, dir.path()).await;
    let old_nats = nats_port(&banner);
    eventually("demo tools listed", Duration::from_secs(30), || async {
        let (code, out, _) = cli(&api, &["tools"]).await;
        (code == 0 && out.contains("demo.echo")).then_some(())
    })
    .await;
    let (_, out, _) = cli(&api, &["submit", "demo.echo", "--arg", "message=kept"]).await;
    let id = out.trim().to_owned();
    wait_status(&api, &id, "succeeded").await;

    // Killed outright: its nats-server child is left running on the store.
    first.kill().await.unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", old_nats)).is_ok());

    let (mut second, banner) = start_dev(&addr, dir.path()).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", old_nats)).is_err(),
        "the stale nats-server was stopped before a new one used the store"
    );
    assert_ne!(nats_port(&banner), old_nats);
    let task = task_json(&api, &id).await;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["result"]["content"][0]["text"], "kept");
    let (code, out, err) = cli(
        &api,
        &["submit", "demo.echo", "--arg", "message=again", "--watch"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "again");

    let pid = second.id().unwrap().to_string();
    signal("-TERM", &pid).await;
    assert!(second.wait().await.unwrap().success());
}

#[tokio::test]
async fn wharf_dev_runs_everything_and_the_cli_drives_it() {
    let dir = tempfile::tempdir().unwrap();
    let _left = LeftServer(dir.path().to_owned());
    let port = free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let (mut dev, banner) = start_dev(&addr, dir.path()).await;
    assert!(
        banner.contains(&format!("http://{addr}/api/v1")),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("ws://{addr}/ws/v1/tasks")),
        "{banner}"
    );
    assert!(banner.contains("SQLite"), "{banner}");
    assert!(
        banner.contains("OPEN MODE"),
        "wharf dev says loudly that it needs no credentials: {banner}"
    );
    assert!(dir.path().join("wharf.db").is_file());
    let api = format!("http://{addr}");

    eventually("demo tools listed", Duration::from_secs(30), || async {
        let (code, out, _) = cli(&api, &["tools"]).await;
        (code == 0 && out.contains("demo.sleep") && out.contains("demo.hash")).then_some(())
    })
    .await;

    // --watch follows progress and prints the result.
    let (code, out, err) = cli(
        &api,
        &[
            "submit",
            "demo.sleep",
            "--arg",
            "seconds=0.5",
            "--arg",
            "steps=5",
            "--watch",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "slept 0.5 seconds");

    // Without --watch the id comes back at once.
    let (code, out, _) = cli(&api, &["submit", "demo.echo", "--arg", "message=hi"]).await;
    assert_eq!(code, 0);
    let id = out.trim().to_owned();
    id.parse::<Uuid>().expect("submit prints the task id");
    wait_status(&api, &id, "succeeded").await;
    assert_eq!(
        task_json(&api, &id).await["result"]["content"][0]["text"],
        "hi"
    );
    let (_, list, _) = cli(&api, &["tasks", "--status", "succeeded"]).await;
    assert!(list.contains(&id), "{list}");
    // wharf dev keeps its audit log in the data directory.
    eventually(
        "the submission in the audit file",
        Duration::from_secs(10),
        || async {
            let (code, out, _) = cli(
                &api,
                &[
                    "audit",
                    "--file",
                    dir.path().join("audit.jsonl").to_str().unwrap(),
                ],
            )
            .await;
            (code == 0 && out.contains(&format!("/api/v1/tasks/{id}"))).then_some(())
        },
    )
    .await;

    // A level, from the command line to the task and the list filter.
    let (code, out, err) = cli(
        &api,
        &[
            "submit",
            "demo.echo",
            "--arg",
            "message=first",
            "--priority",
            "high",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let urgent = out.trim().to_owned();
    wait_status(&api, &urgent, "succeeded").await;
    assert_eq!(task_json(&api, &urgent).await["priority"], "high");
    let (_, high, _) = cli(&api, &["tasks", "--priority", "high"]).await;
    assert!(high.contains(&urgent) && !high.contains(&id), "{high}");
    let (code, top, err) = cli(&api, &["top", "--once"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(top.contains("workers 1") && top.contains("QUEUE"), "{top}");
    assert!(
        top.lines().any(|l| l.starts_with("default ")),
        "the default queue in {top}"
    );
    let (code, _, err) = cli(&api, &["submit", "demo.echo", "--priority", "urgent"]).await;
    assert_eq!(code, 2, "clap refuses an unknown level");
    assert!(err.contains("urgent"), "{err}");

    let (_, out, _) = cli(&api, &["submit", "demo.sleep", "--arg", "seconds=60"]).await;
    let long = out.trim().to_owned();
    wait_status(&api, &long, "running").await;
    let (code, _, err) = cli(&api, &["cancel", &long]).await;
    assert_eq!(code, 0, "{err}");
    wait_status(&api, &long, "cancelled").await;

    let (code, _, err) = cli(&api, &["submit", "demo.fail", "--watch"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("task failed"), "{err}");
    let (code, _, err) = cli(&api, &["submit", "demo.slep"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("did you mean demo.sleep"), "{err}");

    // SIGTERM stops it cleanly, nats-server included.
    let pid = dev.id().unwrap().to_string();
    signal("-TERM", &pid).await;
    let status = tokio::time::timeout(Duration::from_secs(30), dev.wait())
        .await
        .expect("wharf dev exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let nats_port = nats_port(&banner);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_err(),
        "the nats-server wharf dev started is gone"
    );
    let log = std::fs::read_to_string(dir.path().join("nats/nats-server.log")).unwrap();
    assert!(
        log.contains("Server Exiting"),
        "nats-server shut down cleanly"
    );
}

/// Ctrl-C in a terminal signals the whole foreground process group: `wharf dev`, and the
/// nats-server and MCP server it started. The children keep running until `wharf dev` stops
/// them, so the task running at that moment finishes (its worker drains it) rather than being
/// cut off with its MCP server and its nats-server; started again, the task has succeeded once.
#[tokio::test]
async fn ctrl_c_to_wharf_dev_lets_the_running_task_finish() {
    let dir = tempfile::tempdir().unwrap();
    let _left = LeftServer(dir.path().to_owned());
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let api = format!("http://{addr}");
    let mut cmd = dev_command(&addr, dir.path());
    // A process group of its own, as a shell gives a foreground job.
    cmd.process_group(0);
    let (mut dev, banner) = banner_of(cmd).await;
    eventually("demo tools listed", Duration::from_secs(30), || async {
        let (code, out, _) = cli(&api, &["tools"]).await;
        (code == 0 && out.contains("demo.sleep")).then_some(())
    })
    .await;
    let (_, out, _) = cli(&api, &["submit", "demo.sleep", "--arg", "seconds=2"]).await;
    let id = out.trim().to_owned();
    wait_status(&api, &id, "running").await;

    signal("-INT", &format!("-{}", dev.id().unwrap())).await;
    let status = tokio::time::timeout(Duration::from_secs(60), dev.wait())
        .await
        .expect("wharf dev exits after Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", nats_port(&banner))).is_err(),
        "wharf dev stopped the nats-server it started"
    );

    let (mut again, _) = start_dev(&addr, dir.path()).await;
    wait_status(&api, &id, "succeeded").await;
    let task = task_json(&api, &id).await;
    assert_eq!(
        task["attempts"], 1,
        "run once, not again after the restart: {task}"
    );
    signal("-TERM", &again.id().unwrap().to_string()).await;
    assert!(again.wait().await.unwrap().success());
}

async fn spawn_part(part: &str, nats: &str, db: &str, extra: &[&str]) -> Child {
    let mut args = vec![part];
    args.extend_from_slice(extra);
    wharf(&args)
        .env("WHARF_NATS_URL", nats)
        .env("WHARF_DATABASE_URL", db)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn gateway_worker_and_recorder_as_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(&dir.path().join("nats")).await.unwrap();
    let db = fresh_database().await;
    let port = free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    // `wharf gateway` requires credentials: the first key comes straight from the database.
    let bootstrap = wharf(&["bootstrap-key", "--name", "ci", "--role", "submitter"])
        .env("WHARF_NATS_URL", nats.url())
        .env("WHARF_DATABASE_URL", &db)
        .output()
        .await
        .unwrap();
    assert!(bootstrap.status.success(), "{bootstrap:?}");
    let secret = String::from_utf8(bootstrap.stdout)
        .unwrap()
        .trim()
        .to_owned();
    assert!(secret.starts_with("wharf_"), "{secret}");
    let _gateway = spawn_part("gateway", nats.url(), &db, &["--http", &addr]).await;
    let _worker = spawn_part("worker", nats.url(), &db, &[]).await;
    let mut recorder = spawn_part("recorder", nats.url(), &db, &[]).await;
    let api = format!("http://{addr}");
    wharf_testkit::eventually("the gateway up", Duration::from_secs(30), || async {
        Client::new(&api)
            .unwrap()
            .request(Method::GET, "/healthz")
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let anonymous = Client::new(&api)
        .unwrap()
        .request(Method::GET, "/api/v1/tools")
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "a gateway with no auth configured is closed"
    );
    let http = Client::new(&api).unwrap().with_credential(&secret).unwrap();
    wharf_testkit::wait_for_tool_at(&http, "demo.echo").await;
    let submit = |n: usize| {
        let http = http.clone();
        async move {
            let mut ids = Vec::new();
            for i in 0..n {
                let r = http
                    .request(Method::POST, "/api/v1/tasks")
                    .json(&json!({"tool": "demo.echo", "arguments": {"message": format!("m{i}")}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let v: Value = r.json().await.unwrap();
                ids.push(v["id"].as_str().unwrap().parse::<Uuid>().unwrap());
            }
            ids
        }
    };
    let store = Store::connect(&db).await.unwrap();
    let mut ids = submit(20).await;
    for id in &ids {
        eventually("recorded", Duration::from_secs(30), || async {
            let t = store.task(*id).await.unwrap()?;
            (t.status == TaskStatus::Succeeded).then_some(())
        })
        .await;
    }

    // Kill the recorder outright; work goes on; a new recorder catches up without doubling.
    recorder.kill().await.unwrap();
    ids.extend(submit(20).await);
    let _recorder = spawn_part("recorder", nats.url(), &db, &[]).await;
    // Events the killed recorder had taken but not acknowledged come back after their ack
    // deadline, possibly after newer ones: wait for each history to be whole, then check it.
    for id in &ids {
        let kinds = eventually(
            "every event recorded after the restart",
            Duration::from_secs(60),
            || async {
                let kinds: Vec<String> = store
                    .events(*id)
                    .await
                    .unwrap()
                    .iter()
                    .map(|(_, e)| e.kind_name().to_owned())
                    .collect();
                (kinds.len() >= 3).then_some(kinds)
            },
        )
        .await;
        assert_eq!(kinds, ["submitted", "started", "succeeded"], "task {id}");
        let t = store.task(*id).await.unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Succeeded);
    }
}
