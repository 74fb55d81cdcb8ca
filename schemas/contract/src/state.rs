//! A task's state folded from its events, in any order and any number of times: the rule the
//! gateway applies to events read from the stream, and the recorder's SQL upsert mirrors.

use serde_json::Map;
use uuid::Uuid;

use crate::event::{EventKind, TaskEvent};
use crate::task::{Priority, Task, TaskStatus, TaskView};

/// A [`TaskView`] plus the event sequence numbers that make folding order-independent.
///
/// Events are applied in any order, any number of times, and two partial states merge into the
/// same result as folding all their events: status only moves up (queued, running, terminal), the
/// terminal event with the lowest stream sequence wins, progress keeps the highest sequence, spec
/// fields keep the first value seen. The recorder's SQL upsert mirrors [`TaskState::merge`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    pub view: TaskView,
    /// Stream sequence of the progress shown (0: none).
    pub progress_seq: u64,
    /// Stream sequence of the terminal event shown (0: none).
    pub terminal_seq: u64,
    /// Highest stream sequence applied.
    pub last_seq: u64,
}

impl TaskState {
    /// A state that has seen no event yet.
    pub fn empty(id: Uuid) -> TaskState {
        TaskState {
            view: TaskView {
                id,
                status: TaskStatus::Queued,
                tool: String::new(),
                queue: String::new(),
                arguments: Map::new(),
                attempts: 0,
                max_attempts: 0,
                timeout_secs: None,
                idempotency_key: None,
                session_id: None,
                metadata: Map::new(),
                progress: None,
                result: None,
                error: None,
                created_at: None,
                started_at: None,
                finished_at: None,
                cancel_requested_at: None,
                updated_at: None,
                run_at: None,
                priority: Priority::Normal,
                tenant: String::new(),
                agent: None,
                trace_id: None,
            },
            progress_seq: 0,
            terminal_seq: 0,
            last_seq: 0,
        }
    }

    /// The state `events` (each with its stream sequence) describe together.
    pub fn fold<'a>(id: Uuid, events: impl IntoIterator<Item = &'a (u64, TaskEvent)>) -> TaskState {
        let mut s = TaskState::empty(id);
        for (seq, e) in events {
            s.apply(*seq, e);
        }
        s
    }

    /// The state one event (stored at stream sequence `seq`) describes on its own.
    /// The state of a task just submitted: what folding its `submitted` event alone gives.
    pub fn of_submitted(task: &Task) -> TaskState {
        let mut s = TaskState::empty(task.id);
        s.view.updated_at = Some(task.submitted_at);
        spec_from(&mut s.view, task);
        s
    }

    pub fn of_event(seq: u64, event: &TaskEvent) -> TaskState {
        let mut s = TaskState::empty(event.task_id);
        let v = &mut s.view;
        v.updated_at = Some(event.at);
        s.last_seq = seq;
        match &event.kind {
            EventKind::Submitted { task } => spec_from(v, task),
            EventKind::Started { tool, queue, .. } => {
                v.status = TaskStatus::Running;
                v.tool.clone_from(tool);
                v.queue.clone_from(queue);
                v.attempts = event.attempt;
                v.started_at = Some(event.at);
            }
            EventKind::Progress(p) => {
                v.status = TaskStatus::Running;
                v.attempts = event.attempt;
                v.progress = Some(p.clone());
                s.progress_seq = seq;
            }
            EventKind::CancelRequested { .. } => {
                v.cancel_requested_at = Some(event.at);
            }
            EventKind::AttemptFailed { .. } => {
                v.status = TaskStatus::Running;
                v.attempts = event.attempt;
            }
            EventKind::Succeeded { result } => {
                v.status = TaskStatus::Succeeded;
                v.result = Some(result.clone());
                v.finished_at = Some(event.at);
                v.attempts = event.attempt;
                s.terminal_seq = seq;
            }
            EventKind::Failed { error } => {
                v.status = TaskStatus::Failed;
                v.error = Some(error.clone());
                v.finished_at = Some(event.at);
                v.attempts = event.attempt;
                s.terminal_seq = seq;
            }
            EventKind::Cancelled { .. } => {
                v.status = TaskStatus::Cancelled;
                v.finished_at = Some(event.at);
                v.attempts = event.attempt;
                s.terminal_seq = seq;
            }
        }
        // A start reported with this event: what its own `started` event would have set,
        // but the status, which this event sets (at least `running`, through its kind).
        if let Some(start) = &event.started {
            if v.tool.is_empty() {
                v.tool.clone_from(&start.tool);
            }
            if v.queue.is_empty() {
                v.queue.clone_from(&start.queue);
            }
            v.started_at = Some(start.at);
        }
        s
    }

    /// Applies one event stored at stream sequence `seq`.
    pub fn apply(&mut self, seq: u64, event: &TaskEvent) {
        self.merge(TaskState::of_event(seq, event));
    }

    /// Merges another partial state of the same task into this one (commutative, idempotent).
    pub fn merge(&mut self, o: TaskState) {
        let (a, b) = (&mut self.view, o.view);
        if a.tool.is_empty() {
            a.tool = b.tool;
        }
        if a.queue.is_empty() {
            a.queue = b.queue;
        }
        // The spec fields come from the `submitted` event alone; `created_at` marks having it.
        if a.created_at.is_none() && b.created_at.is_some() {
            a.arguments = b.arguments;
            a.max_attempts = b.max_attempts;
            a.timeout_secs = b.timeout_secs;
            a.idempotency_key = b.idempotency_key;
            a.session_id = b.session_id;
            a.metadata = b.metadata;
            a.created_at = b.created_at;
            a.run_at = b.run_at;
            a.priority = b.priority;
            a.tenant = b.tenant;
            a.agent = b.agent;
            a.trace_id = b.trace_id;
        }
        a.cancel_requested_at = min_opt(a.cancel_requested_at, b.cancel_requested_at);
        a.started_at = min_opt(a.started_at, b.started_at);
        a.updated_at = a.updated_at.max(b.updated_at);
        a.attempts = a.attempts.max(b.attempts);
        if o.progress_seq > self.progress_seq {
            a.progress = b.progress;
            self.progress_seq = o.progress_seq;
        }
        let other_terminal_wins =
            o.terminal_seq != 0 && (self.terminal_seq == 0 || o.terminal_seq < self.terminal_seq);
        if other_terminal_wins {
            a.status = b.status;
            a.result = b.result;
            a.error = b.error;
            a.finished_at = b.finished_at;
            self.terminal_seq = o.terminal_seq;
        } else if self.terminal_seq == 0 && b.status.rank() > a.status.rank() {
            a.status = b.status;
        }
        self.last_seq = self.last_seq.max(o.last_seq);
    }
}

/// The fields of a view that come from the task as submitted.
fn spec_from(v: &mut TaskView, task: &Task) {
    v.tool.clone_from(&task.tool);
    v.queue.clone_from(&task.queue);
    v.arguments.clone_from(&task.arguments);
    v.max_attempts = task.max_attempts;
    v.timeout_secs = task.timeout_secs;
    v.idempotency_key.clone_from(&task.idempotency_key);
    v.session_id.clone_from(&task.session_id);
    v.metadata.clone_from(&task.metadata);
    v.created_at = Some(task.submitted_at);
    v.run_at = task.run_at;
    v.priority = task.priority;
    v.tenant.clone_from(&task.tenant);
    v.agent.clone_from(&task.agent);
    v.trace_id.clone_from(&task.trace_id);
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Progress, TASK_VERSION, Task, TaskError};
    use chrono::Utc;

    fn events(id: Uuid) -> Vec<(u64, TaskEvent)> {
        let t0 = Utc::now();
        let task = Task {
            trace_id: None,
            v: TASK_VERSION,
            id,
            tool: "demo.sleep".into(),
            arguments: serde_json::json!({"seconds": 1})
                .as_object()
                .unwrap()
                .clone(),
            queue: "default".into(),
            timeout_secs: None,
            max_attempts: 3,
            idempotency_key: None,
            session_id: Some("s1".into()),
            metadata: Map::new(),
            submitted_at: t0,
            run_at: None,
            retry: None,
            priority: Priority::Low,
            tenant: "acme".into(),
            agent: Some("helper".into()),
            callback: None,
        };
        let ev = |attempt, kind| TaskEvent::new(id, attempt, kind);
        vec![
            (
                1,
                ev(
                    0,
                    EventKind::Submitted {
                        task: Box::new(task),
                    },
                ),
            ),
            (
                5,
                ev(
                    1,
                    EventKind::Started {
                        worker: "w1".into(),
                        tool: "demo.sleep".into(),
                        queue: "default".into(),
                    },
                ),
            ),
            (
                9,
                ev(
                    1,
                    EventKind::Progress(Progress {
                        progress: 1.0,
                        total: Some(2.0),
                        message: None,
                    }),
                ),
            ),
            (
                12,
                ev(
                    1,
                    EventKind::Progress(Progress {
                        progress: 2.0,
                        total: Some(2.0),
                        message: None,
                    }),
                ),
            ),
            (
                13,
                ev(
                    1,
                    EventKind::Succeeded {
                        result: serde_json::json!({"ok": true}),
                    },
                ),
            ),
            (
                20,
                ev(
                    2,
                    EventKind::Failed {
                        error: TaskError {
                            code: "timeout".into(),
                            message: "late duplicate".into(),
                            details: None,
                            dead_letter: false,
                        },
                    },
                ),
            ),
        ]
    }

    #[test]
    fn folding_is_independent_of_order_and_repetition() {
        let id = Uuid::now_v7();
        let evs = events(id);
        let mut forward = TaskState::empty(id);
        for (seq, e) in &evs {
            forward.apply(*seq, e);
        }
        assert_eq!(forward.view.status, TaskStatus::Succeeded);
        assert_eq!(forward.view.progress.as_ref().unwrap().progress, 2.0);
        assert_eq!(forward.view.attempts, 2);
        assert_eq!(forward.view.tool, "demo.sleep");
        assert_eq!(forward.view.session_id.as_deref(), Some("s1"));

        let mut backward = TaskState::empty(id);
        for (seq, e) in evs.iter().rev().chain(evs.iter()) {
            backward.apply(*seq, e);
        }
        // Merging two halves folded apart gives the same state too.
        let (left, right) = evs.split_at(3);
        let mut l = TaskState::empty(id);
        left.iter().for_each(|(s, e)| l.apply(*s, e));
        let mut r = TaskState::empty(id);
        right.iter().for_each(|(s, e)| r.apply(*s, e));
        r.merge(l);
        assert_eq!(backward, forward);
        assert_eq!(r, forward);
    }

    /// A start reported with the event that ends the attempt folds into the same state as its
    /// own `started` event would, and unfolds into that event.
    #[test]
    fn a_start_reported_with_the_outcome_folds_like_its_own_event() {
        let id = Uuid::now_v7();
        let separate: Vec<_> = events(id)
            .into_iter()
            .filter(|(_, e)| !matches!(e.kind, EventKind::Progress(_)))
            .collect();
        let mut folded = separate.clone();
        let (_, started) = folded.remove(1);
        let EventKind::Started {
            worker,
            tool,
            queue,
        } = started.kind.clone()
        else {
            panic!("the second event is the start");
        };
        folded[1].1.started = Some(Box::new(crate::event::Start {
            at: started.at,
            worker,
            tool,
            queue,
        }));
        let fold = |evs: &[(u64, TaskEvent)]| {
            let mut s = TaskState::fold(id, evs);
            s.last_seq = 0;
            s
        };
        assert_eq!(fold(&folded), fold(&separate));
        assert_eq!(fold(&folded).view.started_at, Some(started.at));

        let unfolded = TaskEvent::unfold_all(folded.clone());
        let kinds: Vec<_> = unfolded
            .iter()
            .map(|(seq, e)| (*seq, e.kind_name(), e.started.is_some()))
            .collect();
        assert_eq!(
            kinds,
            [
                (1, "submitted", false),
                (13, "started", false),
                (13, "succeeded", false),
                (20, "failed", false)
            ]
        );
        assert_eq!(unfolded[1].1, started);
    }
}
