//! Reading a rig's history back: what ended, what did not, and whether every accepted task
//! ended exactly once.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;
use wharf_contract::{EventKind, TaskStatus};

use super::{Rig, Submissions};

impl Rig {
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

    /// Task `id` as recorded once it ended, or as it is at `by`.
    async fn settled_task(&self, id: Uuid, by: Instant) -> Option<wharf_contract::TaskView> {
        loop {
            let task = self.store.task(id).await.unwrap();
            let open = task
                .as_ref()
                .is_none_or(|t| matches!(t.status, TaskStatus::Queued | TaskStatus::Running));
            if !open || Instant::now() >= by {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads every task's history back and checks it; returns the figures.
    pub async fn check(&self, ids: &[Uuid], kills: &[(String, DateTime<Utc>)]) -> Figures {
        let mut f = Figures {
            tasks: ids.len(),
            ..Figures::default()
        };
        let mut finished = Vec::with_capacity(ids.len());
        // `wait_all_ended` counted rows: tasks outside `ids` (stored though refused) may have
        // made up the count while one of these was still on its way to the database.
        let settle_by = Instant::now() + Duration::from_secs(30);
        for id in ids {
            let task = self.settled_task(*id, settle_by).await;
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
