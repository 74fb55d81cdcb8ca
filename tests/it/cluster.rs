//! Wharf on a three-node JetStream cluster (three nats-server processes on loopback, every
//! stream and bucket at three replicas), with a gateway, a recorder and two workers as processes
//! connected to all three nodes. A steady submitter keeps tasks coming while the test crashes
//! the node that leads a stream, or restarts every node in turn as a rolling upgrade does; then
//! every task answered 202 must have ended exactly once. Each test prints its figures.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wharf_contract::{EVENTS_STREAM, TASKS_STREAM};
use wharf_local::LocalCluster;
use wharf_testkit::rig::{Rig, Setup, settle};

/// Quick tasks, and one in five taking one or two seconds.
fn mixed_tasks() -> Vec<Value> {
    let task = |seconds: f64| {
        json!({
            "tool": "demo.sleep",
            "arguments": { "seconds": seconds, "steps": 1 },
            "max_attempts": 20,
        })
    };
    let mut bodies = vec![task(0.02); 10];
    bodies[4] = task(1.0);
    bodies[9] = task(2.0);
    bodies
}

/// The cluster and a platform of processes on it: streams and buckets at three replicas, two
/// workers running 64 tasks each; `env` besides.
async fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, LocalCluster, Rig) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), 3).await.unwrap();
    let mut env = env.to_vec();
    env.extend([
        ("WHARF_NATS__REPLICAS", "3"),
        ("WHARF_WORKER__CONCURRENCY", "64"),
    ]);
    let rig = Rig::start_with(Setup {
        workers: 2,
        nats_url: Some(cluster.urls()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Setup::default()
    })
    .await;
    let js = rig.jetstream().await.unwrap();
    for name in [TASKS_STREAM, EVENTS_STREAM] {
        let info = js
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{name} is replicated");
    }
    (dir, cluster, rig)
}

/// Crashes (SIGKILL) the node leading `stream` and starts it again after `down`; returns the
/// node's name and how long the cluster took to report a new leader.
async fn crash_leader(
    cluster: &mut LocalCluster,
    rig: &Rig,
    stream: &str,
    down: Duration,
) -> (String, Duration) {
    let leader = rig.stream_leader(stream).await;
    let node = cluster
        .index_of(&leader)
        .expect("the leader is one of ours");
    let killed = Instant::now();
    cluster.kill(node).await;
    let elected = wharf_testkit::eventually(
        &format!("a new leader of {stream}"),
        Duration::from_secs(30),
        || async {
            let now = rig.stream_leader(stream).await;
            (now != leader).then(|| killed.elapsed())
        },
    )
    .await;
    tokio::time::sleep(down.saturating_sub(killed.elapsed())).await;
    cluster.restart(node).await.unwrap();
    (leader, elected)
}

#[tokio::test]
async fn losing_the_leader_of_each_stream_loses_no_accepted_task() {
    let (_dir, mut cluster, rig) = start(&[]).await;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let submitter = rig.submit_until(8, mixed_tasks(), stop.clone());

    tokio::time::sleep(Duration::from_secs(6)).await;
    let (tasks_leader, tasks_election) =
        crash_leader(&mut cluster, &rig, TASKS_STREAM, Duration::from_secs(8)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (events_leader, events_election) =
        crash_leader(&mut cluster, &rig, EVENTS_STREAM, Duration::from_secs(8)).await;
    let rest = Duration::from_secs(36).saturating_sub(started.elapsed());
    tokio::time::sleep(rest.max(Duration::from_secs(4))).await;
    // At least 5,000 tasks: a slow machine (a debug build, a busy CI host) submits on for longer.
    wharf_testkit::eventually(
        "5,000 tasks in the history",
        Duration::from_secs(120),
        || async {
            let counts = rig.store.count_by_status().await.ok()?;
            (counts.values().sum::<u64>() >= 5_100).then_some(())
        },
    )
    .await;
    let submitted_for = started.elapsed();

    let what = "cluster node leading a stream crashed (SIGKILL), twice";
    let (got, f, _) = settle(&rig, (stop, submitter), &[], what, 2, true).await;
    println!(
        "{TASKS_STREAM} leader {tasks_leader} killed, new leader after {:.1} s; {EVENTS_STREAM} \
         leader {events_leader} killed, new leader after {:.1} s; submitted for {:.0} s",
        tasks_election.as_secs_f64(),
        events_election.as_secs_f64(),
        submitted_for.as_secs_f64()
    );
    assert!(
        got.failed.is_empty(),
        "every refusal is a 503 with Retry-After: {:?}",
        got.failed
    );
    assert!(
        got.ids.len() >= 5000 && submitted_for >= Duration::from_secs(30),
        "a steady load: {} tasks accepted over {submitted_for:?}",
        got.ids.len()
    );
    assert!(
        f.longest_gap < Duration::from_secs(30),
        "tasks ended again after a leader died (longest gap {:?})",
        f.longest_gap
    );
}

#[tokio::test]
async fn a_rolling_restart_of_every_node_refuses_no_submission() {
    let (_dir, mut cluster, rig) = start(&[]).await;
    let stop = CancellationToken::new();
    let submitter = rig.submit_until(6, mixed_tasks(), stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in 0..cluster.size() {
        // As an upgrade does it: stop the server gracefully, start it again (the new version),
        // wait until it caught up, then the next one.
        cluster.stop(node).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.restart(node).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let what = "every cluster node stopped (SIGTERM) and started again, in turn";
    let (got, _, _) = settle(&rig, (stop, submitter), &[], what, cluster.size(), false).await;
    assert_eq!(
        got.refused(),
        0,
        "no submission refused during a rolling restart: {} answered 503, others: {:?}",
        got.unavailable.len(),
        got.failed
    );
}

/// With a gateway told to wait at most a second through a hiccup, a submission that arrives while
/// the queue's stream elects a leader is refused, and refused as it should be: 503 with
/// `Retry-After`, nothing else, and nothing accepted is lost.
#[tokio::test]
async fn a_submission_that_outwaits_its_patience_is_answered_503_with_retry_after() {
    let (_dir, mut cluster, rig) = start(&[("WHARF_NATS__SUBMIT_PATIENCE_SECS", "1")]).await;
    let stop = CancellationToken::new();
    let submitter = rig.submit_until(6, mixed_tasks(), stop.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (leader, election) =
        crash_leader(&mut cluster, &rig, TASKS_STREAM, Duration::from_secs(6)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let what = "the queue stream's leader crashed, submissions waiting at most 1 s";
    let (got, _, _) = settle(&rig, (stop, submitter), &[], what, 1, true).await;
    println!(
        "{TASKS_STREAM} leader {leader} killed, new leader after {:.1} s",
        election.as_secs_f64()
    );
    assert!(
        got.failed.is_empty(),
        "every refusal is a 503 with Retry-After: {:?}",
        got.failed
    );
    assert!(
        !got.unavailable.is_empty(),
        "submissions during the election were refused"
    );
}
