//! Workers on a leaf node: the hub (one JetStream server) runs the gateway and the recorder; a
//! leaf nats-server without JetStream connects out to the hub, and a `wharf worker` on the leaf
//! takes the hub's tasks through it, as an on-premises worker serving a cloud gateway does. The
//! test cuts the leaf's link under load and restores it: nothing may be lost or doubled.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wharf_contract::{EventKind, TaskStatus};
use wharf_local::{LocalNats, ServerSpec, find_or_install, free_port};
use wharf_testkit::eventually;
use wharf_testkit::rig::{ACK_WAIT_SECS, Rig, Setup, settle};

/// The hub's JetStream domain, which the leaf's workers name.
const HUB_DOMAIN: &str = "hub";

/// The hub: a JetStream server that takes leaf connections; with its leaf port.
async fn hub(dir: &std::path::Path) -> (LocalNats, u16) {
    let leaf_port = free_port().unwrap();
    let spec = ServerSpec {
        name: Some("hub".into()),
        domain: Some(HUB_DOMAIN.into()),
        leaf_port: Some(leaf_port),
        ..ServerSpec::single(free_port().unwrap())
    };
    let bin = find_or_install().await.unwrap();
    let hub = LocalNats::run(&bin, &dir.join("hub"), &spec).await.unwrap();
    (hub, leaf_port)
}

/// A leaf node of the hub whose leaf port is `hub_leaf_port`, without JetStream of its own:
/// every JetStream request of its clients goes to the hub.
fn leaf_spec(hub_leaf_port: u16) -> ServerSpec {
    ServerSpec {
        name: Some("leaf".into()),
        port: free_port().unwrap(),
        leaf_remotes: vec![hub_leaf_port],
        monitor_port: Some(free_port().unwrap()),
        ..ServerSpec::default()
    }
}

/// Waits until the leaf's link to the hub is up (its `/leafz` lists a connection).
async fn linked(leaf: &ServerSpec) {
    let port = leaf.monitor_port.unwrap();
    eventually(
        "the leaf linked to the hub",
        Duration::from_secs(30),
        || async {
            let (_, body) = wharf_local::monitor_get(port, "/leafz").await.ok()?;
            let leafz: Value = serde_json::from_str(&body).ok()?;
            (leafz["leafnodes"].as_u64()? > 0).then_some(())
        },
    )
    .await;
}

fn sleep_task(seconds: f64, steps: u32) -> Value {
    json!({
        "tool": "demo.sleep",
        "arguments": { "seconds": seconds, "steps": steps },
        "max_attempts": 20,
    })
}

/// Waits until task `id` is recorded with `status`.
async fn recorded(rig: &Rig, id: Uuid, status: TaskStatus) -> wharf_contract::TaskView {
    eventually(
        &format!("task {id} recorded as {}", status.as_str()),
        Duration::from_secs(30),
        || async {
            let view = rig.store.task(id).await.unwrap()?;
            (view.status == status).then_some(view)
        },
    )
    .await
}

/// The times task `id` started, with the worker that started it.
async fn starts(rig: &Rig, id: Uuid) -> Vec<(String, DateTime<Utc>)> {
    rig.store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| match e.kind {
            EventKind::Started { worker, .. } => Some((worker, e.at)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_worker_on_a_leaf_node_runs_reports_obeys_and_survives_a_cut_link() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, hub_leaf_port) = hub(dir.path()).await;
    let bin = find_or_install().await.unwrap();
    let leaf = leaf_spec(hub_leaf_port);
    let leaf_dir = dir.path().join("leaf");
    let leaf_server = LocalNats::run(&bin, &leaf_dir, &leaf).await.unwrap();
    linked(&leaf).await;
    let mut rig = Rig::start_with(Setup {
        workers: 0,
        nats_url: Some(hub.url().to_owned()),
        env: vec![("WHARF_WORKER__CONCURRENCY".into(), "64".into())],
        ..Setup::default()
    })
    .await;
    let worker = rig.add_worker_on(leaf_server.url(), &[("WHARF_NATS__DOMAIN", HUB_DOMAIN)]);
    wharf_testkit::wait_for_tool_at(&rig.http, "demo.sleep").await;

    // Cut the link under load for ten seconds, then restore it.
    let stop = CancellationToken::new();
    let mut bodies = vec![sleep_task(0.05, 1); 5];
    bodies[4] = sleep_task(1.5, 1);
    let submitter = rig.submit_until(3, bodies, stop.clone());
    // Calls that outlast the cut: their leases lapse while the link is down.
    let long = rig.submit(10, &sleep_task(24.0, 24)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    leaf_server.stop().await;
    // Taken once the leaf server is gone: until then its worker may still take tasks.
    let cut = Utc::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Taken before the link is back: nothing on the leaf can run a task before this.
    let restored = Utc::now();
    let leaf_server = LocalNats::run(&bin, &leaf_dir, &leaf).await.unwrap();
    linked(&leaf).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let what = "the leaf node's link cut for 10 s under load";
    let (got, f, _) = settle(&rig, (stop, submitter), &long, what, 1, false).await;
    assert_eq!(got.refused(), 0, "the hub took every submission meanwhile");

    // Queued meanwhile: ran afterwards, none of them before the link was back.
    let mut queued_meanwhile = 0;
    for id in &got.ids {
        let created = rig
            .store
            .task(*id)
            .await
            .unwrap()
            .unwrap()
            .created_at
            .unwrap();
        if created > cut && created < restored {
            queued_meanwhile += 1;
            let runs = starts(&rig, *id).await;
            assert!(
                runs.iter().all(|(_, at)| *at > restored),
                "{id} ran in the cut"
            );
        }
    }
    assert!(queued_meanwhile > 0, "tasks were submitted during the cut");
    // Running through the cut: their leases lapsed while the link was down, so each was
    // delivered again once the link was back, within a lease, and still ended once (`settle`).
    // Except one case, which is right too: the first heartbeat of the attempt still running
    // on the leaf reached the hub before the hub had handed the task out again (JetStream
    // keeps a lapsed lease until it redelivers, and a heartbeat renews it); that attempt then
    // ran to its end, the only one.
    let (mut again_after, mut kept) = (Duration::ZERO, 0);
    for id in &long {
        let runs = starts(&rig, *id).await;
        match runs.iter().find(|(_, at)| *at > restored) {
            Some((_, again)) => {
                again_after = again_after.max((*again - restored).to_std().unwrap_or_default());
            }
            None => {
                assert_eq!(runs.len(), 1, "{id}: {runs:?}");
                let ended = rig.store.task(*id).await.unwrap().unwrap();
                assert_eq!(ended.status, TaskStatus::Succeeded, "{id} kept its lease");
                assert!(
                    ended.finished_at.unwrap() > restored,
                    "{id} ended during the cut"
                );
                kept += 1;
            }
        }
    }
    assert!(kept < long.len(), "none of the calls was delivered again");
    println!(
        "tasks queued while the link was cut: {queued_meanwhile}; calls running through the cut: \
         {}, delivered again at most {:.1} s after the link came back (lease {ACK_WAIT_SECS} s), \
         {kept} kept their lease; tasks run more than once: {}",
        long.len(),
        again_after.as_secs_f64(),
        f.runs_repeated
    );
    assert!(
        again_after <= Duration::from_secs(ACK_WAIT_SECS + 3),
        "calls running through the cut came back {again_after:?} after the link"
    );

    // Afterwards the leaf worker runs tasks and reports their progress to the hub's history.
    let id = rig.submit(1, &sleep_task(0.4, 4)).await[0];
    let view = recorded(&rig, id, TaskStatus::Succeeded).await;
    assert_eq!(view.attempts, 1);
    let events = rig.store.events(id).await.unwrap();
    let progress = events
        .iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::Progress { .. }))
        .count();
    assert!(
        progress >= 2,
        "progress of a leaf worker's task: {events:?}"
    );
    assert_eq!(starts(&rig, id).await[0].0, worker);

    // Obeys cancel: a minute-long call ends as soon as it is cancelled.
    let id = rig.submit(1, &sleep_task(60.0, 60)).await[0];
    recorded(&rig, id, TaskStatus::Running).await;
    let asked = Instant::now();
    assert_eq!(rig.http.cancel(id).await.unwrap().id, id);
    recorded(&rig, id, TaskStatus::Cancelled).await;
    println!(
        "a leaf worker's task cancelled {:.2} s after the request",
        asked.elapsed().as_secs_f64()
    );

    drop(leaf_server);
    eventually("nothing left running", Duration::from_secs(5), || async {
        (rig.ended().await.1 == 0).then_some(())
    })
    .await;
}
