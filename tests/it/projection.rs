//! The recorder's SQL merge gives the same rows as folding the events in order, whatever the
//! order and batching it receives them in (invariant 6), on Postgres and on SQLite.

use chrono::SubsecRound;
use rand::seq::SliceRandom;
use serde_json::json;
use wharf_contract::TaskState;
use wharf_contract::TaskStatus;
use wharf_store::Store;
use wharf_testkit::{Wharf, eventually, fresh_database};

#[tokio::test]
async fn any_order_and_batching_of_events_gives_the_same_rows() {
    let w = Wharf::start().await;
    // A few real histories: progress, a failure, a cancellation with its request.
    let session = w.session("s").await;
    let sleep = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 0.4, "steps": 4}, "session_id": session}))
        .await;
    let fail = w
        .submit_ok(json!({"tool": "demo.fail", "arguments": {}}))
        .await;
    let cancelled = w
        .submit_ok(
            json!({"tool": "demo.sleep", "arguments": {"seconds": 60}, "metadata": {"m": 1}}),
        )
        .await;
    w.wait_recorded(cancelled, TaskStatus::Running).await;
    w.cancel(cancelled).await;
    w.wait_recorded(sleep, TaskStatus::Succeeded).await;
    w.wait_recorded(fail, TaskStatus::Failed).await;
    w.wait_recorded(cancelled, TaskStatus::Cancelled).await;
    // The cancel request's own event can land after the terminal one.
    eventually(
        "the cancel request recorded",
        std::time::Duration::from_secs(20),
        || async {
            w.store
                .task(cancelled)
                .await
                .unwrap()?
                .cancel_requested_at
                .map(|_| ())
        },
    )
    .await;

    let mut events = Vec::new();
    for id in [sleep, fail, cancelled] {
        events.extend(w.store.events(id).await.unwrap());
    }
    // A duplicate of a late event, as a redelivery would bring.
    events.push(events[3].clone());

    // Postgres keeps microseconds (SQLite the nanoseconds): compared at microseconds.
    let micros = |mut v: wharf_contract::TaskView| {
        for t in [
            &mut v.created_at,
            &mut v.started_at,
            &mut v.finished_at,
            &mut v.cancel_requested_at,
            &mut v.updated_at,
        ] {
            *t = t.map(|t| t.trunc_subsecs(6));
        }
        v
    };
    let expected =
        |id| micros(TaskState::fold(id, events.iter().filter(|(_, e)| e.task_id == id)).view);

    // The same rule on both databases the store speaks: Postgres (its `unnest` upsert) and
    // SQLite (`wharf dev`, multi-row inserts).
    let sqlite = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    for round in 0..8 {
        let url = if round % 2 == 0 {
            fresh_database().await
        } else {
            format!("sqlite://{}/r{round}.db?mode=rwc", sqlite.path().display())
        };
        let store = Store::connect(&url).await.unwrap();
        let round = round / 2;
        let mut shuffled = events.clone();
        match round {
            0 => shuffled.reverse(),
            _ => shuffled.shuffle(&mut rng),
        }
        // Batches of 1, 2, 3, 4 events.
        for batch in shuffled.chunks(round + 1) {
            store.record(batch).await.unwrap();
        }
        for id in [sleep, fail, cancelled] {
            let got = micros(store.task(id).await.unwrap().unwrap());
            assert_eq!(got, expected(id), "round {round}, task {id}, {url}");
            assert_eq!(
                got,
                w.store.task(id).await.unwrap().unwrap(),
                "round {round}, {url}"
            );
        }
    }
    w.shutdown().await;
}
