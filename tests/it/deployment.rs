//! The Kubernetes manifests (infra/k8s) against what Wharf really creates: the names KEDA and
//! Prometheus are pointed at, and the backlog KEDA reads from a real nats-server's monitoring
//! endpoint. (Their syntax and policies are checked by scripts/check-k8s.sh.)

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_contract::{DEFAULT_QUEUE, Priority, TASKS_STREAM, queue_consumer};
use wharf_local::{LocalNats, ServerSpec, find_or_install, free_port, monitor_get};
use wharf_testkit::eventually;
use wharf_testkit::rig::{Rig, Setup};

fn repo_file(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The values of `key:` in the ScaledObject's triggers, in order.
fn trigger_values(key: &str) -> Vec<String> {
    let worker = repo_file("infra/k8s/base/worker.yaml");
    let scaled = worker
        .split("kind: ScaledObject")
        .nth(1)
        .expect("worker.yaml holds a ScaledObject");
    scaled
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .collect()
}

#[test]
fn the_manifests_name_the_streams_consumers_and_metrics_wharf_creates() {
    let consumers = trigger_values("consumer");
    let want: Vec<String> = Priority::ALL
        .iter()
        .map(|p| queue_consumer(DEFAULT_QUEUE, *p))
        .collect();
    assert_eq!(
        consumers, want,
        "one trigger per level of the default queue"
    );
    assert_eq!(trigger_values("stream"), vec![TASKS_STREAM; 3]);
    assert!(
        repo_file("infra/k8s/base/wharf.toml").contains("queues = [\"default\"]"),
        "the workers KEDA scales serve the queue it watches"
    );

    // Every metric the alert rules (and the PrometheusRule made from them) read is one Wharf
    // exports.
    let known: Vec<&str> = wharf_telemetry::metrics::METRICS
        .iter()
        .map(|m| m.name)
        .collect();
    for file in [
        "infra/prometheus/alerts.yml",
        "infra/k8s/base/prometheus-rule.yaml",
    ] {
        let text = repo_file(file);
        let mut read = 0;
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !token.starts_with("wharf_") {
                continue;
            }
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| token.strip_suffix(s))
                .unwrap_or(token);
            assert!(
                known.contains(&base) || known.contains(&token),
                "{file} reads {token}, which Wharf does not export"
            );
            read += 1;
        }
        assert!(read > 10, "{file} reads Wharf's metrics");
    }
}

/// KEDA's `nats-jetstream` trigger reads `/jsz?consumers=true&acc=<account>` from a server's
/// monitoring port and counts a consumer's pending plus unacknowledged messages. With no worker
/// running (scaled to zero), the consumers the ScaledObject names must count the whole backlog,
/// or the first worker would never start; once one runs, the count drains to zero.
#[tokio::test]
async fn the_backlog_keda_reads_is_the_queue_with_no_worker_running() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = free_port().unwrap();
    let spec = ServerSpec {
        monitor_port: Some(monitor),
        ..ServerSpec::single(free_port().unwrap())
    };
    let bin = find_or_install().await.unwrap();
    let nats = LocalNats::run(&bin, dir.path(), &spec).await.unwrap();
    // A second queue, `fresh`, named only in the gateway's configuration.
    let mut rig = Rig::start_with(Setup {
        workers: 0,
        nats_url: Some(nats.url().to_owned()),
        env: vec![(
            "WHARF_GATEWAY__QUEUES__FRESH__MAX_ATTEMPTS".into(),
            "3".into(),
        )],
        ..Setup::default()
    })
    .await;
    let account = trigger_values("account");
    assert_eq!(account, vec!["$G"; 3], "a server without accounts");
    let consumers = trigger_values("consumer");
    let lag = || async {
        let path = format!("/jsz?consumers=true&acc={}", account[0]);
        let (status, body) = monitor_get(monitor, &path).await.ok()?;
        if status != 200 {
            return None;
        }
        let jsz: Value = serde_json::from_str(&body).ok()?;
        let details = jsz["account_details"][0]["stream_detail"].as_array()?;
        let tasks = details.iter().find(|s| s["name"] == TASKS_STREAM)?;
        let per_consumer: Vec<u64> = consumers
            .iter()
            .map(|name| {
                let c = tasks["consumer_detail"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["name"] == name.as_str()));
                c.map_or(u64::MAX, |c| {
                    c["num_pending"].as_u64().unwrap() + c["num_ack_pending"].as_u64().unwrap()
                })
            })
            .collect();
        Some(per_consumer)
    };

    // Scaled to zero: a worker ran (its tools stay in the catalog), then stopped.
    rig.add_worker();
    wharf_testkit::wait_for_tool_at(&rig.http, "demo.sleep").await;
    let (_, mut worker) = rig.workers.pop().unwrap();
    let pid = nix::unistd::Pid::from_raw(worker.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    worker.wait().await.unwrap();

    let body = json!({"tool": "demo.sleep", "arguments": {"seconds": 0.01, "steps": 1}});
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.extend(rig.submit_batch(500, &body).await);
    }
    assert_eq!(ids.len(), 1000);
    let counts = eventually("the backlog in /jsz", Duration::from_secs(10), || async {
        lag().await.filter(|c| c.iter().sum::<u64>() == 1000)
    })
    .await;
    println!("KEDA's reading of {consumers:?} with no worker: {counts:?}");
    assert_eq!(counts, [0, 1000, 0], "high, normal, low");

    // A queue no worker ever served: the gateway made its consumers at start, as it is
    // configured with it, so a ScaledObject watching it sees its backlog too.
    let fresh = json!({"tool": "demo.echo", "arguments": {"message": "hi"}, "queue": "fresh"});
    rig.submit_batch(10, &fresh).await;
    let path = format!("/jsz?consumers=true&acc={}", account[0]);
    let fresh_pending = || async {
        let (_, body) = monitor_get(monitor, &path).await.ok()?;
        let jsz: Value = serde_json::from_str(&body).ok()?;
        jsz["account_details"][0]["stream_detail"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == TASKS_STREAM)?["consumer_detail"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "wharf-queue-fresh")?["num_pending"]
            .as_u64()
    };
    eventually(
        "the fresh queue's backlog",
        Duration::from_secs(10),
        || async { fresh_pending().await.filter(|n| *n == 10) },
    )
    .await;

    rig.add_worker();
    let drained = std::time::Instant::now();
    eventually("the backlog drained", Duration::from_secs(60), || async {
        lag().await.filter(|c| c.iter().all(|n| *n == 0))
    })
    .await;
    println!(
        "one worker drained it in {:.1} s",
        drained.elapsed().as_secs_f64()
    );
    eventually(
        "the default queue's tasks recorded as ended",
        Duration::from_secs(60),
        || async { (rig.ended().await.0 == 1000).then_some(()) },
    )
    .await;
}
