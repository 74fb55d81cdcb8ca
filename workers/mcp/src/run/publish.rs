//! An attempt's events: publishing them under ids that make repeats harmless, storing the
//! terminal one (which must fit in a message), and fencing an attempt that lost its lease.

use std::future::IntoFuture;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::Instrument;
use wharf_contract::{EventKind, Start, Task, TaskErrorCode, TaskEvent, msg_id};

use super::outcome::failure;
use crate::Shared;

/// One attempt of one task, and how it writes its events.
pub(super) struct Publisher<'a> {
    pub shared: &'a Shared,
    pub task: &'a Task,
    pub attempt: u32,
    /// When the lease was last renewed: the start, then each heartbeat sent.
    pub lease_renewed: std::sync::Mutex<Instant>,
    /// When this attempt began.
    pub begun: Instant,
    /// When the attempt's call began (unset until then: an attempt refused before its call,
    /// say for an unknown tool, has no start to report).
    pub started_at: OnceLock<DateTime<Utc>>,
    /// Whether the start has been reported, in a `started` event or along with another.
    pub start_reported: AtomicBool,
    /// Whether the start is announced the moment the call begins: for a redelivery (a stale
    /// attempt checks the history for a newer one before recording its outcome, see
    /// `fenced`), or when the worker is set to announce every start at once.
    pub announce_at_once: bool,
    /// Names this delivery (`<stream seq>.<delivery count>`): event ids are unique per run, so a
    /// task run again (handed back, redelivered) still gets all its events stored.
    pub delivery: String,
    pub traceparent: &'a str,
}

impl Publisher<'_> {
    /// Publishes an event that must be stored: the caller awaits the returned ack. Boxed (as
    /// are the other rare awaits of a task): a task's future lives as long as the task, and
    /// inline it would carry room for every such await it might ever make. Boxed, a waiting
    /// task holds only what it is waiting on; memory per in-flight task roughly halves.
    pub fn publish<'s>(
        &'s self,
        event: &'s TaskEvent,
        tag: &'s str,
    ) -> futures::future::BoxFuture<
        's,
        Result<async_nats::jetstream::context::PublishAckFuture, wharf_bus::Error>,
    > {
        Box::pin(async move {
            self.shared
                .bus
                .publish_task_event(self.task, event, &self.msg_id(tag), Some(self.traceparent))
                .await
        })
    }

    /// Publishes an informative event (`started`, progress) without asking for an ack and
    /// without a message id; see `Bus::emit_event`. Boxed like `publish`.
    pub fn emit<'s>(
        &'s self,
        event: &'s TaskEvent,
    ) -> futures::future::BoxFuture<'s, Result<(), wharf_bus::Error>> {
        Box::pin(async move {
            self.shared
                .bus
                .emit_event(self.task, event, Some(self.traceparent))
                .await
        })
    }

    /// Notes the start of the attempt's call, announcing it if it must be at once (boxed,
    /// like the other rare awaits).
    pub async fn begin(&self) {
        let _ = self.started_at.set(Utc::now());
        if self.announce_at_once {
            Box::pin(self.announce()).await;
        }
    }

    /// Whether the call has begun and its start is not reported yet.
    pub fn start_unreported(&self) -> bool {
        self.started_at.get().is_some() && !self.start_reported.load(Ordering::Relaxed)
    }

    /// Stores the attempt's `started` event, unless its start was reported already. Not
    /// acknowledged: events from one connection are stored in the order they were sent, and
    /// the terminal event's ack comes after this one.
    pub async fn announce(&self) {
        let Some(start) = self.take_start() else {
            return;
        };
        let Start {
            at,
            worker,
            tool,
            queue,
        } = *start;
        let mut started = TaskEvent::new(
            self.task.id,
            self.attempt,
            EventKind::Started {
                worker,
                tool,
                queue,
            },
        );
        started.at = at;
        if let Err(e) = self.emit(&started).await {
            tracing::warn!(error = %e, "could not publish the started event");
        }
    }

    /// Reports the start with `event` (the one that ends the attempt), unless it was reported
    /// already: one stored message instead of two for an attempt shorter than
    /// `worker.started_event_after_ms`.
    pub fn report_start_with(&self, event: &mut TaskEvent) {
        event.started = self.take_start();
    }

    /// The start, once: `None` before the call begins and after it was reported.
    fn take_start(&self) -> Option<Box<Start>> {
        let at = *self.started_at.get()?;
        if self.start_reported.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(Box::new(Start {
            at,
            worker: self.shared.id.clone(),
            tool: self.task.tool.clone(),
            queue: self.task.queue.clone(),
        }))
    }

    /// The message id of this attempt's event `tag`. The terminal event's id is the same for
    /// every attempt: JetStream keeps only the first.
    fn msg_id(&self, tag: &str) -> String {
        if tag == "terminal" {
            msg_id::terminal(self.task.id)
        } else {
            msg_id::attempt_event(self.task.id, &self.delivery, tag)
        }
    }

    /// Stores the terminal event: whether another was stored first (a duplicate: a stale
    /// attempt's, a cancellation's), or why it could not be stored.
    pub async fn store_terminal(&self, event: &TaskEvent) -> Result<bool, String> {
        super::STORE
            .run(|| async {
                let span = if wharf_telemetry::traces::exporting() {
                    tracing::info_span!(
                        "publish",
                        otel.name = %format!("publish {}", event.kind_name()),
                        otel.kind = "producer",
                    )
                } else {
                    tracing::Span::none()
                };
                match self.publish(event, "terminal").instrument(span).await {
                    Ok(ack) => Box::pin(ack.into_future())
                        .await
                        .map(|ack| ack.duplicate)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
    }

    /// Fencing: true when this attempt's lease may have lapsed (no heartbeat got through for two
    /// thirds of a lease, say the process was paused) and a newer attempt has since started
    /// elsewhere. Its outcome is then dropped, unrecorded and unacknowledged: the task belongs
    /// to the newer attempt, whose outcome is the one recorded. Only a possibly lapsed lease
    /// costs the check (a read of the task's history: its newest event may be this attempt's
    /// own late progress).
    pub async fn fenced(&self) -> bool {
        let since = self
            .lease_renewed
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        if since < lease_safe(self.shared.heartbeat) {
            return false;
        }
        match self.shared.bus.latest_attempt(self.task.id).await {
            Ok(newer) if newer > self.attempt => {
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

    /// Renews the lease after a heartbeat went out, unless it went out late: a heartbeat sent
    /// after the lease may have lapsed (the process was paused, and this tick is a late one)
    /// does not count, the task may be elsewhere.
    pub fn renewed(&self) {
        if let Ok(mut t) = self.lease_renewed.lock()
            && t.elapsed() < lease_safe(self.shared.heartbeat)
        {
            *t = Instant::now();
        }
    }
}

/// How long after the last renewal a lease is surely still held: two of its three heartbeat
/// periods. The server times the lease from when it handled the delivery or the heartbeat,
/// which the worker only sees later, so a whole lease by the worker's clock may already be
/// past on the server's; the last period is the margin for that and for a slow tick.
fn lease_safe(heartbeat: std::time::Duration) -> std::time::Duration {
    heartbeat * 2
}

/// The terminal event as it can be stored: one whose result (or error) would not fit in a NATS message
/// (the server's `max_payload`) could never be published, and the task would run again and
/// again until its attempts ran out; it ends `failed` with `result_too_large` instead (final:
/// the same call gives the same result).
pub(super) fn fit_in_a_message(shared: &Shared, event: TaskEvent) -> TaskEvent {
    let room = shared.bus.body_room();
    let size = wharf_bus::encoded_len(&event);
    if size <= room {
        return event;
    }
    tracing::warn!(
        size,
        room,
        "the tool's result or error is too large to store"
    );
    let kind = failure(
        TaskErrorCode::ResultTooLarge,
        format!(
            "the tool's result or error is {size} bytes once encoded; it travels in one NATS \
             message, which holds at most {room} bytes here (max_payload, less headers): \
             return less (a reference to where the data is), or raise max_payload"
        ),
    );
    let mut replacement = TaskEvent::new(event.task_id, event.attempt, kind);
    replacement.started = event.started;
    replacement
}
