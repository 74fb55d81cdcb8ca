//! One task, from the message a worker pulled to the acknowledgement after its terminal event:
//! `attempt.rs` makes the call, `outcome.rs` says what its result makes of the task,
//! `publish.rs` writes the attempt's events, `dead_letter.rs` keeps what failed for good.

mod attempt;
mod dead_letter;
mod outcome;
mod publish;

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;
use wharf_bus::{Delivery, Message, RETRY_SOON, attempts_used, traceparent_of};
use wharf_contract::{EventKind, Task, TaskError, TaskEvent};
use wharf_telemetry::TraceContext;

use crate::Shared;
use outcome::Outcome;
use wharf_bus::retry::Schedule;

/// How an ending write (the terminal event, a dead letter) is stored: five tries a second
/// apart; its message id makes every try after the first harmless.
const STORE: Schedule = Schedule::new(5, Duration::from_secs(1));
use publish::{Publisher, fit_in_a_message};

/// The attempt a delivery is: the attempts used before the message was last put back on the
/// queue, plus its delivery count.
pub(crate) fn attempt_of(message: &Message) -> u32 {
    let delivered = message
        .info()
        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
        .unwrap_or(1);
    attempts_used(&message.message).saturating_add(delivered)
}

/// A running task's slot: a permit of its queue's semaphore, counted in
/// `wharf_worker_tasks_in_flight`, both given back when the task's future ends.
pub(crate) struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    in_flight: metrics::Gauge,
}

impl Slot {
    pub(crate) fn take(
        permit: tokio::sync::OwnedSemaphorePermit,
        in_flight: metrics::Gauge,
    ) -> Slot {
        in_flight.increment(1.0);
        Slot {
            _permit: permit,
            in_flight,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.decrement(1.0);
    }
}

/// Runs one delivered task in `slot`, in a task of its own. The future is boxed first: it is a
/// few kilobytes, and tokio moves a future it is given several times over on its way into the
/// task (four copies of it per task in a profile under load); a box moves as a pointer.
pub(crate) fn spawn(shared: Arc<Shared>, message: Message, slot: Slot) {
    tokio::spawn(Box::pin(run_task(shared, message, slot)));
}

/// Runs one delivered task in `slot`. This is the future spawned for the task itself (not
/// wrapped in another): a wrapper would hold a second copy of `message` for the task's life.
async fn run_task(shared: Arc<Shared>, mut message: Message, slot: Slot) {
    let _slot = slot;
    let shared = &*shared;
    // The client cuts subject, reply and payload out of its shared read buffer; kept for the
    // whole task, they would keep that buffer alive. Own copies are a few hundred bytes.
    let m = &mut message.message;
    m.subject = async_nats::Subject::from(m.subject.as_str());
    m.reply = m
        .reply
        .as_ref()
        .map(|r| async_nats::Subject::from(r.as_str()));
    m.payload = bytes::Bytes::copy_from_slice(&m.payload);
    let attempt = attempt_of(&message);
    let task = match Task::decode(&message.payload) {
        Ok(t) => t,
        Err(e) => return Box::pin(dead_letter::unreadable(shared, &message, attempt, e)).await,
    };
    // The task's message carries a `traceparent` when the gateway exports spans or its caller
    // sent one; else the task's trace id is continued.
    let parent = TraceContext::carried(
        traceparent_of(&message.message).as_deref(),
        task.trace_id.as_deref(),
    );
    // One span per attempt, a child of the gateway's publish (through the task's traceparent),
    // or of the root its trace id names when the task came without one.
    // The OpenTelemetry fields are only filled in when spans are exported: a running task's
    // span stays in memory for as long as it runs, fields and all.
    // (Its fields are all set at once where possible: the log layer keeps them formatted.)
    let fallback = parent.unwrap_or_else(TraceContext::new_root).child();
    let span = tracing::info_span!(
        "attempt",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        task_id = %task.id,
        tool = %task.tool,
        attempt,
        trace_id = %fallback.trace_id_hex(),
    );
    let trace = if wharf_telemetry::traces::exporting() {
        span.record("otel.name", format!("attempt {}", task.tool));
        span.record("otel.kind", "consumer");
        if let Some(parent) = &parent {
            wharf_telemetry::traces::set_parent(&span, parent);
        }
        let trace = wharf_telemetry::traces::context_of(&span, &fallback);
        if trace.trace_id != fallback.trace_id {
            span.record("trace_id", trace.trace_id_hex());
        }
        trace
    } else {
        fallback
    };
    finish(shared, &message, &task, attempt, &trace)
        .instrument(span)
        .await;
}

/// For a redelivery: true when the task already ended (the message is then acknowledged) or its
/// history cannot be read (the message is put back for a moment rather than run blind).
async fn settled_before(shared: &Shared, message: &Message, id: uuid::Uuid) -> bool {
    match shared.bus.terminal_event(id).await {
        Ok(Some(_)) => {
            tracing::info!("the task already ended; acknowledging the redelivery");
            // Unconfirmed: should the ack be lost, the next redelivery comes back here.
            if let Err(e) = Delivery::DoneUnconfirmed.settle(message).await {
                tracing::warn!(error = %e, "could not acknowledge an ended task");
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the task's history; retrying shortly");
            let _ = Delivery::RetryAfter(RETRY_SOON).settle(message).await;
            true
        }
    }
}

/// True when this message was delivered before (to this or another worker) or handed back.
fn redelivered(message: &Message) -> bool {
    message.info().is_ok_and(|i| i.delivered > 1) || attempts_used(&message.message) > 0
}

/// Runs the attempt and settles the message according to its outcome.
async fn finish(
    shared: &Shared,
    message: &Message,
    task: &Task,
    attempt: u32,
    trace: &TraceContext,
) {
    let tp = trace.header();
    let delivery = message
        .info()
        .map(|i| format!("{}.{}", i.stream_sequence, i.delivered))
        .unwrap_or_else(|_| uuid::Uuid::now_v7().simple().to_string());
    let publisher = Publisher {
        shared,
        task,
        attempt,
        delivery,
        traceparent: &tp,
        lease_renewed: std::sync::Mutex::new(std::time::Instant::now()),
        begun: std::time::Instant::now(),
        started_at: std::sync::OnceLock::new(),
        start_reported: std::sync::atomic::AtomicBool::new(false),
        announce_at_once: shared.started_event_after.is_zero() || redelivered(message),
    };

    // The terminal event may be stored with the task's ack lost (its worker died between the
    // two, say): then the task is over, and running it again would only repeat side effects.
    // Checked first: such a redelivery may also be past the last attempt.
    if redelivered(message) && Box::pin(settled_before(shared, message, task.id)).await {
        return;
    }
    let outcome = if attempt > task.max_attempts.max(1) {
        outcome::exhausted(attempt)
    } else {
        run_attempt(&publisher, message).await
    };
    if !matches!(outcome, Outcome::HandBack) && Box::pin(publisher.fenced()).await {
        return;
    }
    match outcome {
        Outcome::Terminal(kind) => Box::pin(end(&publisher, message, kind)).await,
        Outcome::Retry(error, delay) => {
            Box::pin(retry_later(&publisher, message, error, delay)).await;
        }
        Outcome::HandBack => {
            tracing::info!("handing the task back: this worker is stopping");
            if let Err(e) = Box::pin(shared.bus.hand_back(message, attempt - 1)).await {
                tracing::warn!(error = %e, "could not hand the task back; it returns when its lease ends");
            }
        }
    }
}

/// The attempt itself, unless the task was cancelled before it started.
async fn run_attempt(p: &Publisher<'_>, message: &Message) -> Outcome {
    let cancel = p.shared.cancels.register(p.task.id);
    let outcome = if cancel.is_cancelled() {
        Outcome::Terminal(EventKind::Cancelled {
            reason: Some("cancelled before it started".into()),
        })
    } else {
        attempt::execute(p, message, &cancel).await
    };
    p.shared.cancels.unregister(p.task.id);
    outcome
}

/// Ends the task with `kind`: its dead letter first when it failed for good (should the worker
/// die in between, the redelivery fails the task again and stores the same letter), then the
/// terminal event, then the acknowledgement.
async fn end(p: &Publisher<'_>, message: &Message, kind: EventKind) {
    let (shared, task) = (p.shared, p.task);
    // Fitted first: an outcome too large to store is replaced before its dead letter, which
    // would carry the same bulk, is written.
    let mut event = TaskEvent::new(task.id, p.attempt, kind);
    p.report_start_with(&mut event);
    let event = fit_in_a_message(shared, event);
    let dead_error = match &event.kind {
        EventKind::Failed { error } if error.dead_letter => Some(error),
        _ => None,
    };
    if let Some(error) = dead_error
        && dead_letter::keep(shared, task, p.attempt, error)
            .await
            .is_err()
    {
        let _ = Delivery::RetryAfter(RETRY_SOON).settle(message).await;
        return;
    }
    let dead = dead_error.is_some();
    match p.store_terminal(&event).await {
        Ok(duplicate) => {
            if !duplicate {
                count_finished(task, &event.kind, p.begun.elapsed());
            }
            if duplicate && dead {
                // Another terminal event was stored first (a stale attempt, a cancel): that one
                // is the outcome, and this attempt's dead letter must go.
                dead_letter::withdraw(shared, task.id).await;
            }
            shared.cancels.forget(task.id);
            // Not confirmed by the server: a lost ack brings the task back, and its redelivery
            // finds this terminal event and is acknowledged without running (`settled_before`).
            if let Err(e) = Delivery::DoneUnconfirmed.settle(message).await {
                tracing::warn!(error = %e, "terminal event stored but the task ack failed; it comes back and is acknowledged then");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not store the terminal event; handing the task back");
            let _ = Delivery::RetryAfter(RETRY_SOON).settle(message).await;
        }
    }
}

/// Records a failed attempt that will be retried, then puts the task back for `delay`.
async fn retry_later(p: &Publisher<'_>, message: &Message, error: TaskError, delay: Duration) {
    count_retry(p.task, &error.code);
    let mut event = TaskEvent::new(
        p.task.id,
        p.attempt,
        EventKind::AttemptFailed {
            error,
            retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        },
    );
    p.report_start_with(&mut event);
    if let Ok(ack) = p.publish(&event, "failed").await {
        let _ = ack.await;
    }
    let _ = Delivery::RetryAfter(delay).settle(message).await;
}

/// Metrics of an attempt that started: `wharf_tasks_started_total`, and for a first attempt the
/// time it waited since it could start (`wharf_task_queue_wait_seconds`).
pub(super) fn count_started(task: &Task, attempt: u32) {
    metrics::counter!(
        "wharf_tasks_started_total",
        "queue" => task.queue.clone(),
        "tool" => task.tool.clone(),
    )
    .increment(1);
    if attempt == 1 {
        let ready = task
            .run_at
            .unwrap_or(task.submitted_at)
            .max(task.submitted_at);
        let waited = (chrono::Utc::now() - ready)
            .num_microseconds()
            .unwrap_or(0)
            .max(0);
        metrics::histogram!(
            "wharf_task_queue_wait_seconds",
            "queue" => task.queue.clone(),
            "priority" => task.priority.as_str(),
        )
        .record(waited as f64 / 1e6);
    }
}

/// Metrics of a task this attempt ended (its terminal event was the one stored).
fn count_finished(task: &Task, kind: &EventKind, ran: Duration) {
    let outcome = match kind {
        EventKind::Succeeded { .. } => "succeeded",
        EventKind::Failed { error } if error.dead_letter => "dead",
        EventKind::Failed { .. } => "failed",
        EventKind::Cancelled { .. } => "cancelled",
        _ => return,
    };
    let labels = [
        ("queue", task.queue.clone()),
        ("tool", task.tool.clone()),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!("wharf_tasks_finished_total", &labels).increment(1);
    metrics::histogram!("wharf_task_duration_seconds", &labels).record(ran.as_secs_f64());
}

/// An attempt failed and the task will be retried.
fn count_retry(task: &Task, code: &str) {
    metrics::counter!(
        "wharf_task_attempts_failed_total",
        "queue" => task.queue.clone(),
        "tool" => task.tool.clone(),
        "code" => code.to_owned(),
    )
    .increment(1);
}

#[cfg(test)]
mod sizes {
    use super::*;

    fn size_of_return<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn run(s: Arc<Shared>, m: Message, slot: Slot) -> impl std::future::Future<Output = ()> {
        run_task(s, m, slot)
    }

    /// Every in-flight task is one of these futures: 10,000 long tasks are 10,000 of them. The
    /// rare awaits (event publishes, acks, dead letters, fencing) are boxed to keep it small;
    /// inlining one of them puts its whole state into every task's future.
    #[test]
    fn a_running_task_future_stays_small() {
        let size = size_of_return(run);
        assert!(size <= 4608, "the task future grew to {size} bytes");
    }
}
