//! One task, from the message a worker pulled to the acknowledgement after its terminal event.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::Instrument;
use wharf_bus::{Delivery, Message, RETRY_SOON, attempts_used, traceparent_of};
use wharf_contract::event::DecodeError;
use wharf_contract::{
    DEAD_LETTER_VERSION, DeadLetter, EventKind, Progress, TASK_ID_META, TRACEPARENT_META, Task,
    TaskError, TaskEvent, UNKNOWN_TENANT, task::split_tool,
};
use wharf_telemetry::TraceContext;

use crate::Shared;
use crate::mcp::CallError;

/// How an attempt ended.
enum Outcome {
    /// The task ends with this event.
    Terminal(EventKind),
    /// The attempt failed but the task has attempts left: retry after the delay.
    Retry(TaskError, Duration),
    /// The worker is going away: give the task back at once for another worker.
    HandBack,
}

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

/// Runs one delivered task in `slot`. This is the future spawned for the task itself (not
/// wrapped in another): a wrapper would hold a second copy of `message` for the task's life.
pub(crate) async fn run_task(shared: Arc<Shared>, mut message: Message, slot: Slot) {
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
    let parent = traceparent_of(&message.message).and_then(|h| TraceContext::parse(&h));
    let task = match Task::decode(&message.payload) {
        Ok(t) => t,
        Err(e) => return Box::pin(unreadable(shared, &message, attempt, e)).await,
    };
    // One span per attempt, a child of the gateway's publish (through the task's traceparent).
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

/// A task message this worker cannot read. A newer wire version goes back to the queue for a
/// newer worker; anything else ends the task `failed` (when its id can be read) so it does not
/// stay queued forever, and is then dropped.
async fn unreadable(shared: &Shared, message: &Message, attempt: u32, e: DecodeError) {
    if let DecodeError::Version(v) = e {
        // Hold it a little (well inside the lease) so old workers do not spin on it, then put
        // it back without using an attempt.
        tracing::warn!(
            version = v,
            "a task of a newer wire version: leaving it to a newer worker"
        );
        let _ = Delivery::KeepAlive.settle(message).await;
        tokio::time::sleep(shared.heartbeat).await;
        if let Err(e) = shared.bus.hand_back(message, attempt - 1).await {
            tracing::warn!(error = %e, "could not hand the task back");
        }
        return;
    }
    tracing::error!(subject = %message.subject, error = %e, "dropping an unreadable task message");
    let id = serde_json::from_slice::<Value>(&message.payload)
        .ok()
        .and_then(|v| v.get("id")?.as_str()?.parse::<uuid::Uuid>().ok());
    if let Some(id) = id {
        let error = TaskError {
            code: "bad_message".into(),
            message: format!("the task message cannot be read: {e}"),
            details: None,
            dead_letter: true,
        };
        let letter = DeadLetter {
            v: DEAD_LETTER_VERSION,
            task_id: id,
            queue: queue_of(message),
            task: None,
            payload: Some(String::from_utf8_lossy(&message.payload).into_owned()),
            error: error.clone(),
            attempts: attempt,
            worker: shared.id.clone(),
            dead_at: chrono::Utc::now(),
            seq: None,
        };
        let event = TaskEvent::new(id, attempt, EventKind::Failed { error });
        // The message cannot say whose task it was; its submitted event can.
        let tenant = match shared.bus.tenant_of(id).await {
            Ok(Some(t)) => t,
            Ok(None) => UNKNOWN_TENANT.to_owned(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the unreadable task's tenant; trying later");
                let _ = Delivery::RetryAfter(RETRY_SOON).settle(message).await;
                return;
            }
        };
        let stored = store_dead_letter(shared, &letter).await.is_ok()
            && match shared
                .bus
                .publish_event(&tenant, &event, &format!("{id}:terminal"), None)
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
        if !stored {
            let _ = Delivery::RetryAfter(RETRY_SOON).settle(message).await;
            return;
        }
    }
    let _ = Delivery::GiveUp.settle(message).await;
}

/// The queue a task message was taken from (see `wharf_contract::task_subject`).
fn queue_of(message: &Message) -> String {
    wharf_contract::parse_task_subject(&message.subject)
        .map_or_else(|| message.subject.to_string(), |(q, _)| q.to_owned())
}

/// Keeps a task that failed for good as a dead letter, with its last error.
async fn dead_letter(
    shared: &Shared,
    task: &Task,
    attempt: u32,
    error: &TaskError,
) -> Result<(), wharf_bus::Error> {
    let letter = DeadLetter {
        v: DEAD_LETTER_VERSION,
        task_id: task.id,
        queue: task.queue.clone(),
        task: Some(task.clone()),
        payload: None,
        error: error.clone(),
        attempts: attempt,
        worker: shared.id.clone(),
        dead_at: chrono::Utc::now(),
        seq: None,
    };
    store_dead_letter(shared, &letter).await?;
    tracing::warn!(code = %error.code, "the task failed for good; kept as a dead letter");
    Ok(())
}

/// Removes the dead letter this attempt stored when the outcome recorded is another attempt's,
/// unless that outcome is a dead-lettered failure itself.
async fn withdraw_dead_letter(shared: &Shared, id: uuid::Uuid) {
    let outcome = shared.bus.terminal_event(id).await;
    let keep = matches!(
        &outcome,
        Ok(Some(TaskEvent { kind: EventKind::Failed { error }, .. })) if error.dead_letter
    );
    if keep {
        return;
    }
    match outcome {
        Ok(_) => {
            if let Err(e) = shared.bus.remove_dead_letter(id).await {
                tracing::warn!(error = %e, "could not withdraw the dead letter");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the outcome; the dead letter stays"),
    }
}

/// Stores a dead letter, trying a few times (its message id makes repeats harmless).
async fn store_dead_letter(shared: &Shared, letter: &DeadLetter) -> Result<(), wharf_bus::Error> {
    let mut stored = Box::pin(shared.bus.publish_dead_letter(letter)).await;
    for _ in 0..4 {
        if stored.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stored = Box::pin(shared.bus.publish_dead_letter(letter)).await;
    }
    if let Err(e) = &stored {
        tracing::warn!(error = %e, "could not store the dead letter");
    }
    stored
}

/// For a redelivery: true when the task already ended (the message is then acknowledged) or its
/// history cannot be read (the message is put back for a moment rather than run blind).
async fn settled_before(shared: &Shared, message: &Message, id: uuid::Uuid) -> bool {
    match shared.bus.terminal_event(id).await {
        Ok(Some(_)) => {
            tracing::info!("the task already ended; acknowledging the redelivery");
            if let Err(e) = Delivery::Done.settle(message).await {
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

/// Runs the attempt and acknowledges the message according to its outcome.
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
    };

    // The terminal event may be stored with the task's ack lost (its worker died between the
    // two, say): then the task is over, and running it again would only repeat side effects.
    // Checked first: such a redelivery may also be past the last attempt.
    if redelivered(message) && Box::pin(settled_before(shared, message, task.id)).await {
        return;
    }
    let outcome = if attempt > task.max_attempts.max(1) {
        Outcome::Terminal(EventKind::Failed {
            error: TaskError {
                code: "attempts_exhausted".into(),
                message: format!(
                    "the task was started {} times without finishing",
                    attempt - 1
                ),
                details: None,
                dead_letter: true,
            },
        })
    } else {
        let cancel = shared.cancels.register(task.id);
        let outcome = if cancel.is_cancelled() {
            Outcome::Terminal(EventKind::Cancelled {
                reason: Some("cancelled before it started".into()),
            })
        } else {
            execute(&publisher, message, &cancel).await
        };
        shared.cancels.unregister(task.id);
        outcome
    };

    if !matches!(outcome, Outcome::HandBack) && Box::pin(fenced(&publisher)).await {
        return;
    }
    match outcome {
        Outcome::Terminal(kind) => {
            // A dead letter is stored before the terminal event: should the worker die in
            // between, the redelivery fails the task again and stores the same letter.
            let dead = matches!(&kind, EventKind::Failed { error } if error.dead_letter);
            if let EventKind::Failed { error } = &kind
                && error.dead_letter
                && Box::pin(dead_letter(shared, task, attempt, error))
                    .await
                    .is_err()
            {
                let _ = Box::pin(Delivery::RetryAfter(RETRY_SOON).settle(message)).await;
                return;
            }
            let event = fit_in_a_message(shared, TaskEvent::new(task.id, attempt, kind));
            // The same message id makes every try after the first harmless.
            let mut stored: Result<bool, String> = Err(String::new());
            for tries in 0..5 {
                if tries > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let span = if wharf_telemetry::traces::exporting() {
                    tracing::info_span!(
                        "publish",
                        otel.name = %format!("publish {}", event.kind_name()),
                        otel.kind = "producer",
                    )
                } else {
                    tracing::Span::none()
                };
                stored = match publisher.publish(&event, "terminal").instrument(span).await {
                    Ok(ack) => Box::pin(ack.into_future())
                        .await
                        .map(|ack| ack.duplicate)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if stored.is_ok() {
                    break;
                }
            }
            match stored {
                Ok(duplicate) => {
                    if !duplicate {
                        count_finished(task, &event.kind, publisher.begun.elapsed());
                    }
                    if duplicate && dead {
                        // Another terminal event was stored first (a stale attempt, a cancel):
                        // that one is the outcome, and this attempt's dead letter must go.
                        Box::pin(withdraw_dead_letter(shared, task.id)).await;
                    }
                    shared.cancels.forget(task.id);
                    if let Err(e) = Box::pin(Delivery::Done.settle(message)).await {
                        tracing::warn!(error = %e, "terminal event stored but the task ack failed; it may run again");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not store the terminal event; handing the task back");
                    let _ = Box::pin(Delivery::RetryAfter(RETRY_SOON).settle(message)).await;
                }
            }
        }
        Outcome::HandBack => {
            tracing::info!("handing the task back: this worker is stopping");
            if let Err(e) = Box::pin(shared.bus.hand_back(message, attempt - 1)).await {
                tracing::warn!(error = %e, "could not hand the task back; it returns when its lease ends");
            }
        }
        Outcome::Retry(error, delay) => {
            count_retry(task, &error.code);
            let event = TaskEvent::new(
                task.id,
                attempt,
                EventKind::AttemptFailed {
                    error,
                    retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                },
            );
            if let Ok(ack) = publisher.publish(&event, "failed").await {
                let _ = Box::pin(ack.into_future()).await;
            }
            let _ = Box::pin(Delivery::RetryAfter(delay).settle(message)).await;
        }
    }
}

/// The terminal event as it can be stored: one whose result would not fit in a NATS message
/// (the server's `max_payload`) could never be published, and the task would run again and
/// again until its attempts ran out; it ends `failed` with `result_too_large` instead (final:
/// the same call gives the same result).
fn fit_in_a_message(shared: &Shared, event: TaskEvent) -> TaskEvent {
    let room = shared.bus.body_room();
    let size = wharf_bus::encoded_len(&event);
    if size <= room {
        return event;
    }
    tracing::warn!(size, room, "the tool's result is too large to store");
    TaskEvent::new(
        event.task_id,
        event.attempt,
        failed(
            "result_too_large",
            format!(
                "the tool's result is {size} bytes once encoded; a result travels in one NATS \
                 message, which holds at most {room} bytes here (max_payload, less headers): \
                 return less (a reference to where the data is), or raise max_payload"
            ),
        ),
    )
}

/// Fencing: true when this attempt's lease may have lapsed (no heartbeat got through for a
/// whole lease, say the process was paused) and a newer attempt has since started elsewhere.
/// Its outcome is then dropped, unrecorded and unacknowledged: the task belongs to the newer
/// attempt, whose outcome is the one recorded. Only a possibly lapsed lease costs the check (a
/// read of the task's history: its newest event may be this attempt's own late progress).
async fn fenced(p: &Publisher<'_>) -> bool {
    let since = p
        .lease_renewed
        .lock()
        .map(|t| t.elapsed())
        .unwrap_or_default();
    if since < p.shared.heartbeat * 3 {
        return false;
    }
    match p.shared.bus.latest_attempt(p.task.id).await {
        Ok(newer) if newer > p.attempt => {
            tracing::warn!(
                newer_attempt = newer,
                "this attempt lost its lease to a newer one; dropping its outcome"
            );
            true
        }
        Ok(_) => false,
        Err(e) => {
            // Unknown: record the outcome; the first stored terminal event still wins.
            tracing::warn!(error = %e, "could not check for a newer attempt");
            false
        }
    }
}

struct Publisher<'a> {
    shared: &'a Shared,
    task: &'a Task,
    attempt: u32,
    /// When the lease was last renewed: the start, then each heartbeat sent.
    lease_renewed: std::sync::Mutex<std::time::Instant>,
    /// When this attempt began.
    begun: std::time::Instant,
    /// Names this delivery (`<stream seq>.<delivery count>`): event ids are unique per run, so a
    /// task run again (handed back, redelivered) still gets all its events stored.
    delivery: String,
    traceparent: &'a str,
}

impl Publisher<'_> {
    /// Boxed (as are the other rare awaits of a task): a task's future lives as long as the task,
    /// and inline it would carry room for every such await it might ever make. Boxed, a waiting
    /// task holds only what it is waiting on; memory per in-flight task roughly halves.
    fn publish<'s>(
        &'s self,
        event: &'s TaskEvent,
        tag: &'s str,
    ) -> futures::future::BoxFuture<
        's,
        Result<async_nats::jetstream::context::PublishAckFuture, wharf_bus::Error>,
    > {
        Box::pin(self.publish_inline(event, tag))
    }

    /// Publishes an informative event (`started`, progress) without asking for an ack; see
    /// `Bus::emit_event`. Boxed like `publish`.
    fn emit<'s>(
        &'s self,
        event: &'s TaskEvent,
        tag: &'s str,
    ) -> futures::future::BoxFuture<'s, Result<(), wharf_bus::Error>> {
        Box::pin(async move {
            self.shared
                .bus
                .emit_event(
                    &self.task.tenant,
                    event,
                    &self.msg_id(tag),
                    Some(self.traceparent),
                )
                .await
        })
    }

    /// The message id of this attempt's event `tag`. The terminal event's id is the same for
    /// every attempt: JetStream keeps only the first.
    fn msg_id(&self, tag: &str) -> String {
        if tag == "terminal" {
            format!("{}:terminal", self.task.id)
        } else {
            format!("{}:{}:{tag}", self.task.id, self.delivery)
        }
    }

    async fn publish_inline(
        &self,
        event: &TaskEvent,
        tag: &str,
    ) -> Result<async_nats::jetstream::context::PublishAckFuture, wharf_bus::Error> {
        self.shared
            .bus
            .publish_event(
                &self.task.tenant,
                event,
                &self.msg_id(tag),
                Some(self.traceparent),
            )
            .await
    }
}

async fn execute(
    p: &Publisher<'_>,
    message: &Message,
    cancel: &tokio_util::sync::CancellationToken,
) -> Outcome {
    let task = p.task;
    let Some((server_name, tool)) = split_tool(&task.tool) else {
        return Outcome::Terminal(failed(
            "unknown_tool",
            format!("{:?} is not <server>.<tool>", task.tool),
        ));
    };
    let Some(server) = p.shared.server(server_name) else {
        return Outcome::Terminal(failed(
            "unknown_tool",
            format!("this worker has no mcp server named {server_name:?}"),
        ));
    };

    let started = TaskEvent::new(
        task.id,
        p.attempt,
        EventKind::Started {
            worker: p.shared.id.clone(),
            tool: task.tool.clone(),
            queue: task.queue.clone(),
        },
    );
    // Not acknowledged: events from one connection are stored in the order they were sent, and
    // the terminal event's ack comes after this one.
    if let Err(e) = p.emit(&started, "started").await {
        tracing::warn!(error = %e, "could not publish the started event");
    }
    count_started(task, p.attempt);

    // The call is a span of its own when spans are exported (the server gets its context in
    // `_meta`); otherwise it would only cost memory for as long as the call runs.
    let call_span = if wharf_telemetry::traces::exporting() {
        tracing::info_span!(
            "mcp.call",
            otel.name = %format!("tools/call {tool}"),
            otel.kind = "client",
            server = %server_name,
            tool = %tool,
        )
    } else {
        tracing::Span::none()
    };
    let mut meta = Map::new();
    meta.insert(TASK_ID_META.into(), Value::String(task.id.to_string()));
    meta.insert(
        TRACEPARENT_META.into(),
        Value::String(call_traceparent(&call_span, p.traceparent)),
    );
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    let timeout = task.timeout_secs.map(Duration::from_secs);
    let call_started = std::time::Instant::now();
    let call = server
        .call(
            tool,
            task.arguments.clone(),
            meta,
            progress_tx,
            cancel,
            timeout,
        )
        .instrument(call_span);
    let mut call = std::pin::pin!(call);
    // The first heartbeat is one period from now. (`interval` ticks at once, but awaiting that
    // first tick still waits for the timer wheel, up to a millisecond added to every task.)
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + p.shared.heartbeat,
        p.shared.heartbeat,
    );
    // MCP progress must increase; notifications can reach us out of order, so a stale one
    // (not above the last forwarded) is dropped.
    let mut progress_count = 0u64;
    let mut last_progress = f64::NEG_INFINITY;
    let publish_progress = |note: Box<rmcp::model::ProgressNotificationParam>, n: u64| {
        let note = *note;
        let event = TaskEvent::new(
            task.id,
            p.attempt,
            EventKind::Progress(Progress {
                progress: note.progress,
                total: note.total,
                message: note.message,
            }),
        );
        async move {
            if let Err(e) = p.emit(&event, &format!("p{n}")).await {
                tracing::warn!(error = %e, "could not publish progress");
            }
        }
    };
    let result = loop {
        tokio::select! {
            result = &mut call => {
                // Progress sent just before the answer may still be queued: keep it.
                while let Ok(note) = progress_rx.try_recv() {
                    if note.progress > last_progress {
                        last_progress = note.progress;
                        progress_count += 1;
                        publish_progress(note, progress_count).await;
                    }
                }
                crate::mcp::measure_call(server_name, tool, &result, call_started.elapsed());
                break result;
            }
            Some(note) = progress_rx.recv() => {
                if note.progress > last_progress {
                    last_progress = note.progress;
                    progress_count += 1;
                    publish_progress(note, progress_count).await;
                }
            }
            () = p.shared.abandon.cancelled() => return Outcome::HandBack,
            _ = heartbeat.tick() => {
                match Box::pin(Delivery::KeepAlive.settle(message)).await {
                    // A heartbeat sent after the lease may have lapsed (the process was paused,
                    // and this tick is a late one) does not count: the task may be elsewhere.
                    Ok(()) => {
                        if let Ok(mut t) = p.lease_renewed.lock()
                            && t.elapsed() < p.shared.heartbeat * 3
                        {
                            *t = std::time::Instant::now();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        }
    };
    classify(result, task, p.attempt, server.retry_tool_errors())
}

fn failed(code: &str, message: String) -> EventKind {
    EventKind::Failed {
        error: TaskError {
            code: code.into(),
            message,
            details: None,
            dead_letter: false,
        },
    }
}

/// Turns a call's result into the task's next step: a final event, or a retry when the failure is
/// worth retrying and attempts are left.
fn classify(
    result: Result<CallToolResult, CallError>,
    task: &Task,
    attempt: u32,
    retry_tool_errors: bool,
) -> Outcome {
    let retry_or_fail = |code: &str, message: String| {
        let error = TaskError {
            code: code.into(),
            message,
            details: None,
            dead_letter: false,
        };
        if attempt < task.max_attempts {
            Outcome::Retry(error, retry_delay(attempt, task.retry.unwrap_or_default()))
        } else {
            // Every attempt failed in a way worth retrying: keep the task for a replay.
            Outcome::Terminal(EventKind::Failed {
                error: TaskError {
                    dead_letter: true,
                    ..error
                },
            })
        }
    };
    match result {
        Ok(result) if result.is_error != Some(true) => Outcome::Terminal(EventKind::Succeeded {
            result: serde_json::to_value(&result).unwrap_or(Value::Null),
        }),
        Ok(result) if retry_tool_errors => {
            let text = text_of(&result);
            retry_or_fail(
                "tool_error",
                if text.is_empty() {
                    "the tool reported an error".into()
                } else {
                    text
                },
            )
        }
        Ok(result) => {
            let text = text_of(&result);
            Outcome::Terminal(EventKind::Failed {
                error: TaskError {
                    code: "tool_error".into(),
                    message: if text.is_empty() {
                        "the tool reported an error".into()
                    } else {
                        text
                    },
                    details: serde_json::to_value(&result).ok(),
                    dead_letter: false,
                },
            })
        }
        Err(CallError::Cancelled) => Outcome::Terminal(EventKind::Cancelled {
            reason: Some("cancelled while running".into()),
        }),
        Err(CallError::Refused { message, .. }) => Outcome::Terminal(failed("mcp_error", message)),
        Err(e @ CallError::TimedOut(_)) => retry_or_fail("timeout", e.to_string()),
        Err(e @ CallError::Unavailable { .. }) => retry_or_fail("mcp_unavailable", e.to_string()),
    }
}

/// How long to wait before the attempt after `attempt`: exponential backoff (by default 1 s
/// doubling, capped at 60 s) with "equal jitter" (half of it fixed, half random) so tasks that
/// failed together, say when a server died, do not all come back in the same instant.
fn retry_delay(attempt: u32, policy: wharf_contract::RetryPolicy) -> Duration {
    let doublings = (attempt.max(1) - 1).min(40);
    let base = Duration::from_millis(
        policy
            .initial_ms
            .saturating_mul(1u64 << doublings)
            .min(policy.max_ms.max(1)),
    );
    base / 2 + base.mul_f64(rand::random::<f64>() / 2.0)
}

/// The text content of a tool result, joined by newlines.
fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_jitter_up_to_a_minute() {
        for (attempt, base) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (20, 60)] {
            let base = Duration::from_secs(base);
            let delays: Vec<Duration> = (0..200)
                .map(|_| retry_delay(attempt, Default::default()))
                .collect();
            assert!(
                delays.iter().all(|d| *d >= base / 2 && *d <= base),
                "attempt {attempt}: {delays:?}"
            );
            // Jittered: not all the same.
            assert!(delays.iter().any(|d| *d != delays[0]), "attempt {attempt}");
        }
    }
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

/// Metrics of an attempt that started: `wharf_tasks_started_total`, and for a first attempt the
/// time it waited since it could start (`wharf_task_queue_wait_seconds`).
fn count_started(task: &Task, attempt: u32) {
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

/// The traceparent an MCP call passes on: its span's when spans are exported, else the
/// attempt's.
fn call_traceparent(span: &tracing::Span, attempt: &str) -> String {
    match TraceContext::parse(attempt) {
        Some(t) => wharf_telemetry::traces::context_of(span, &t).header(),
        None => attempt.to_owned(),
    }
}
