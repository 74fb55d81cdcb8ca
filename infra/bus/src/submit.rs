//! Putting tasks and their events into JetStream: the submission (event, then task), events of a
//! running task, handing a task back, and removing a delayed task's schedule.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use uuid::Uuid;
use wharf_contract::event::Submitted;
use wharf_contract::msg_id;
use wharf_contract::{
    ATTEMPTS_USED_HEADER, CALLBACK_HEADER, EVENT_SCHEMA, NO_CALLBACK, TASK_SCHEMA, TASKS_STREAM,
    Task, TaskEvent, event_subject, schedule_subject, task_subject,
};

use crate::retry::Schedule;
use crate::{Bus, Delivery, Error, Message, headers, nats};

/// How long one publish of a submission waits for its ack before it is sent again (with the same
/// message id: a copy already stored is not stored twice). Far above an ack's time under load
/// (milliseconds); an ack lost with a connection to a server that went away is not waited for
/// long.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// The longest pause between two tries within [`crate::Topology::submit_patience`].
const MAX_PAUSE: Duration = Duration::from_millis(500);

impl Bus {
    /// Publishes a task's `submitted` event, then the task, and waits until JetStream stored
    /// both (the two acks are awaited together: one round trip). Returns the task's sequence in
    /// the stream. A task that is stored is answered for, even if its `submitted` event still
    /// waits (it is then published in the background).
    ///
    /// The event is sent first, on the same connection. The server reads a connection's
    /// messages in order and queues each to its stream as it reads it, so the `submitted` event
    /// is queued to the events stream before the task even reaches its queue; a worker's
    /// first event (`started`, or the outcome carrying its start), which needs the task, is
    /// queued after it. Two streams give no other order: sending the task first let a fast
    /// worker's `started` be stored before `submitted`. (This holds on one server; in a cluster the streams may have different
    /// leaders, and the recorder puts a history in order whatever order it arrives in.)
    ///
    /// A hiccup of JetStream (a stream's leader being elected, a reconnect to another server)
    /// is ridden out for up to [`crate::Topology::submit_patience`], publishing again with the same
    /// message ids; after that the caller hears the error (503).
    pub async fn submit(&self, task: &Task, traceparent: Option<&str>) -> Result<u64, Error> {
        let deadline = Instant::now() + self.topology.submit_patience;
        // (What only a failure needs is boxed: inline, it would make this future, and every
        // one that holds it, kilobytes larger for every submission.)
        // Everything the task message needs is ready before the event goes out, so that the
        // two are sent back to back: a gateway killed between them leaves a `submitted` event
        // with no task (see docs/delivery.md), and the gap is kept as short as it can be.
        let body = Bytes::from(serde_json::to_vec(task).expect("a task serialises"));
        let submitted =
            Bytes::from(serde_json::to_vec(&Submitted::of(task)).expect("an event serialises"));
        let (subject, headers) = destination(task, traceparent);
        let message = || {
            PublishMessage::build()
                .payload(body.clone())
                .headers(headers.clone())
                .message_id(msg_id::task(task.id))
        };
        let event = SubmittedEvent {
            tenant: &task.tenant,
            id: task.id,
            body: submitted,
            traceparent,
        };
        let event_ack = event.send(self).await?;
        let task_ack = match self.js.send_publish(subject.clone(), message()).await {
            Ok(ack) => ack,
            Err(e) => {
                let e = nats("publish the task")(e);
                Box::pin(self.not_enqueued(task, &e, traceparent)).await;
                return Err(e);
            }
        };
        // Each ack waits on its own: a slow events stream must not hide the task's own answer.
        let wait = ACK_WAIT.min(self.topology.submit_patience);
        let bounded = |ack: PublishAckFuture| async move {
            tokio::time::timeout(wait, ack.into_future())
                .await
                .unwrap_or_else(|_| Err(PublishError::new(PublishErrorKind::TimedOut)))
        };
        let (task_ack, event_ack) = futures::join!(bounded(task_ack), bounded(event_ack));
        let sequence = match task_ack {
            Ok(ack) => ack.sequence,
            Err(first) => {
                let again = Box::pin(self.publish_until(deadline, &subject, message, first)).await;
                match again {
                    Ok(sequence) => sequence,
                    Err((e, Stored::No)) => {
                        Box::pin(self.not_enqueued(task, &e, traceparent)).await;
                        return Err(e);
                    }
                    // Without an ack the task may well be queued, so its history is left as
                    // it is and the caller hears 503.
                    Err((e, Stored::Unknown)) => return Err(e),
                }
            }
        };
        if event_ack.is_err() {
            let started = deadline - self.topology.submit_patience;
            Box::pin(event.insist(self, started, deadline)).await;
        }
        Ok(sequence)
    }

    /// Publishes `message` to `subject` again, with its message id (a copy already stored is
    /// not stored twice, and its ack is given again), until JetStream acknowledges it or
    /// `deadline` passes. `first` is the error of the publish before. On failure, whether the
    /// message may have been stored after all: only a publish that went unanswered (a lost ack,
    /// a lost connection) may have; a refusal or "no responders" (no stream leader took it)
    /// says it was not.
    async fn publish_until(
        &self,
        deadline: Instant,
        subject: &str,
        message: impl Fn() -> PublishMessage,
        first: PublishError,
    ) -> Result<u64, (Error, Stored)> {
        let mut stored = Stored::of(&first);
        let mut last = first.to_string();
        let mut pause = Duration::from_millis(50);
        while Instant::now() + pause < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
            let attempt = async {
                let ack = self.js.send_publish(subject.to_owned(), message()).await?;
                ack.await
            };
            let wait = ACK_WAIT.min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, attempt).await {
                Ok(Ok(ack)) => return Ok(ack.sequence),
                Ok(Err(e)) => {
                    stored = stored.or(Stored::of(&e));
                    last = e.to_string();
                }
                Err(_) => {
                    stored = Stored::Unknown;
                    last = "no acknowledgement".into();
                }
            }
        }
        let message = format!("{last} (for {} s)", self.topology.submit_patience.as_secs());
        Err((
            Error::Nats {
                op: "store the task",
                message,
            },
            stored,
        ))
    }

    /// Publishes an event of task `id` of `tenant` already encoded, with `headers`; see
    /// [`Bus::publish_event`].
    async fn publish_event_body(
        &self,
        (tenant, id): (&str, uuid::Uuid),
        body: Bytes,
        msg_id: &str,
        headers: HeaderMap,
    ) -> Result<PublishAckFuture, Error> {
        self.js
            .send_publish(
                event_subject(tenant, id),
                PublishMessage::build()
                    .payload(body)
                    .headers(headers)
                    .message_id(msg_id),
            )
            .await
            .map_err(nats("publish an event"))
    }

    /// Ends the history of a task that was never sent to its queue (its `submitted` event may
    /// be stored), so it does not read as queued forever.
    async fn not_enqueued(&self, task: &Task, e: &Error, traceparent: Option<&str>) {
        let failed = TaskEvent::new(
            task.id,
            0,
            wharf_contract::EventKind::Failed {
                error: wharf_contract::TaskError::new(
                    wharf_contract::TaskErrorCode::NotEnqueued,
                    format!("the task could not be queued: {e}"),
                ),
            },
        );
        // A submission sent without a trace context (its trace begun at a gateway that exports
        // nothing) names its trace here all the same: this event carries no task to take the
        // trace id from.
        let traceparent =
            wharf_telemetry::TraceContext::carried(traceparent, task.trace_id.as_deref())
                .map(|t| t.header());
        // Bounded: the caller's 503 waits on it. Should it fail, the history reads `queued`
        // until the task's events expire (a stranded submission, docs/delivery.md).
        let publish = async {
            let ack = self
                .publish_task_event(
                    task,
                    &failed,
                    &msg_id::terminal(task.id),
                    traceparent.as_deref(),
                )
                .await
                .ok()?;
            ack.await.ok()
        };
        let _ = tokio::time::timeout(ACK_WAIT, publish).await;
    }

    /// Puts a delivered task back on its queue as a new message that records the attempts it
    /// used, then acknowledges the delivered one, so that handing a task back does not use up an
    /// attempt. Falls back to a plain NAK (which counts as a delivery) if the publish fails.
    pub async fn hand_back(&self, message: &Message, attempts_used: u32) -> Result<(), Error> {
        let seq = message
            .info()
            .map_err(nats("read a task's delivery"))?
            .stream_sequence;
        let mut h = message.headers.clone().unwrap_or_default();
        h.insert(
            ATTEMPTS_USED_HEADER,
            HeaderValue::from(attempts_used.to_string().as_str()),
        );
        // The id names the original: a retry after a lost ack is deduplicated, never doubled.
        let publish = || async {
            self.js
                .send_publish(
                    message.subject.clone(),
                    PublishMessage::build()
                        .payload(message.payload.clone())
                        .headers(h.clone())
                        .message_id(msg_id::handed_back(seq)),
                )
                .await
                .map_err(nats("hand a task back"))?
                .await
                .map_err(nats("hand a task back"))
        };
        let stored = Schedule::new(3, Duration::ZERO).run(publish).await.is_ok();
        let settled = if stored {
            Delivery::Done
        } else {
            Delivery::RetryAfter(Duration::ZERO)
        };
        settled.settle(message).await
    }

    /// Publishes an event of a task of `tenant` without waiting for JetStream to store it; await
    /// the returned future for that. `msg_id` must be unique per event: a re-publish with the
    /// same id is dropped.
    pub async fn publish_event(
        &self,
        tenant: &str,
        event: &TaskEvent,
        msg_id: &str,
        traceparent: Option<&str>,
    ) -> Result<PublishAckFuture, Error> {
        let h = headers(EVENT_SCHEMA, traceparent);
        self.publish_event_with(tenant, event, msg_id, h).await
    }

    /// [`Bus::publish_event`] for a publisher that holds `task` as it was submitted (the worker
    /// running it, the gateway that could not queue it): the event also says whether the task
    /// has no callback, so that a recorder that did not meet its `submitted` event need not
    /// read it (see [`event_headers`]).
    pub async fn publish_task_event(
        &self,
        task: &Task,
        event: &TaskEvent,
        msg_id: &str,
        traceparent: Option<&str>,
    ) -> Result<PublishAckFuture, Error> {
        let h = event_headers(task, traceparent);
        self.publish_event_with(&task.tenant, event, msg_id, h)
            .await
    }

    async fn publish_event_with(
        &self,
        tenant: &str,
        event: &TaskEvent,
        msg_id: &str,
        headers: HeaderMap,
    ) -> Result<PublishAckFuture, Error> {
        let body = serde_json::to_vec(event).expect("an event serialises");
        self.publish_event_body((tenant, event.task_id), body.into(), msg_id, headers)
            .await
    }

    /// Publishes an event of `task` (for the worker running it) and asks for no acknowledgement:
    /// JetStream stores it all the same, and one round trip fewer per event is a message fewer
    /// for nats-server and this connection.
    /// Only for events whose loss would not matter (`started`, progress): the server handles a
    /// connection's messages in order, so the ack of a later event published here (the
    /// terminal one) arrives after this one was stored or refused. It has no message id: it is
    /// never sent twice (nothing waits for its ack to send it again), so there is nothing for
    /// the server's de-duplication to drop, and each id would cost the server a place in its
    /// map of recent ids for the duplicate window. Like [`Bus::publish_task_event`]'s, the
    /// event says whether the task has no callback.
    pub async fn emit_event(
        &self,
        task: &Task,
        event: &TaskEvent,
        traceparent: Option<&str>,
    ) -> Result<(), Error> {
        let body = serde_json::to_vec(event).expect("an event serialises");
        let h = event_headers(task, traceparent);
        self.client
            .publish_with_headers(
                event_subject(&task.tenant, event.task_id),
                h,
                Bytes::from(body),
            )
            .await
            .map_err(nats("publish an event"))
    }

    /// Removes the schedule of delayed task `id`; false when there was none (it already fired,
    /// or the task was not delayed).
    pub async fn unschedule(&self, id: Uuid) -> Result<bool, Error> {
        let purged = self
            .stream(TASKS_STREAM)
            .await?
            .purge()
            .filter(schedule_subject(id))
            .await
            .map_err(nats("remove a task's schedule"))?;
        Ok(purged.purged > 0)
    }
}

/// The headers of an event of `task` published by one that holds the task as submitted (its
/// callback resolved at submission, the same task its `submitted` event carries): with
/// [`NO_CALLBACK`] when it has none. A recorder keeps the callbacks of the tasks whose
/// `submitted` event it met; one that did not (a second recorder got it, or this one restarted
/// since) would otherwise read the task's first event from the stream to learn that there is
/// no callback, a round trip per task. A task with a callback says nothing, and is looked up.
/// The mark relies on `Task::callback` being where a task's callback is. A task that carried
/// callbacks in another field would need a new wire version, which older workers refuse:
/// within v1 they ignore fields they do not know, and would mark such a task as having none.
fn event_headers(task: &Task, traceparent: Option<&str>) -> HeaderMap {
    let mut h = headers(EVENT_SCHEMA, traceparent);
    if task.callback.is_none() {
        h.insert(CALLBACK_HEADER, HeaderValue::from(NO_CALLBACK));
    }
    h
}

/// Whether a message whose publish failed may be stored all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// The server refused it, or no stream took it.
    No,
    /// The ack was lost: it may be.
    Unknown,
}

impl Stored {
    fn of(e: &PublishError) -> Stored {
        match e.kind() {
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => Stored::Unknown,
            _ => Stored::No,
        }
    }

    fn or(self, other: Stored) -> Stored {
        if self == Stored::Unknown || other == Stored::Unknown {
            Stored::Unknown
        } else {
            Stored::No
        }
    }
}

/// A task's `submitted` event, encoded, and where it goes.
struct SubmittedEvent<'a> {
    tenant: &'a str,
    id: Uuid,
    body: Bytes,
    traceparent: Option<&'a str>,
}

/// The same, kept by a task of its own.
struct OwnedSubmittedEvent {
    tenant: String,
    id: Uuid,
    body: Bytes,
    traceparent: Option<String>,
}

impl OwnedSubmittedEvent {
    fn as_borrowed(&self) -> SubmittedEvent<'_> {
        SubmittedEvent {
            tenant: &self.tenant,
            id: self.id,
            body: self.body.clone(),
            traceparent: self.traceparent.as_deref(),
        }
    }
}

impl SubmittedEvent<'_> {
    async fn send(&self, bus: &Bus) -> Result<PublishAckFuture, Error> {
        bus.publish_event_body(
            (self.tenant, self.id),
            self.body.clone(),
            &msg_id::submitted(self.id),
            headers(EVENT_SCHEMA, self.traceparent),
        )
        .await
    }

    /// Stores the event of a task that is stored: until `deadline`, then in the background for
    /// as long as JetStream would still drop a copy already stored (its duplicate window, from
    /// the first publish at `started`), so that the task's history starts as it should, once.
    async fn insist(&self, bus: &Bus, started: Instant, deadline: Instant) {
        if self.store_until(bus, deadline).await {
            return;
        }
        tracing::warn!(task = %self.id, "the submitted event is not stored yet; trying on");
        let owned = OwnedSubmittedEvent {
            tenant: self.tenant.to_owned(),
            id: self.id,
            body: self.body.clone(),
            traceparent: self.traceparent.map(str::to_owned),
        };
        let bus = bus.clone();
        let margin = Duration::from_secs(10);
        let give_up = started + bus.topology.duplicate_window.saturating_sub(margin);
        tokio::spawn(async move {
            if !owned.as_borrowed().store_until(&bus, give_up).await {
                tracing::error!(task = %owned.id, "the submitted event could not be stored");
            }
        });
    }

    /// Publishes the event again until it is stored or `deadline` passes; true once stored.
    async fn store_until(&self, bus: &Bus, deadline: Instant) -> bool {
        let mut pause = Duration::from_millis(50);
        while Instant::now() + pause < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
            let attempt = async { self.send(bus).await.ok()?.await.ok() };
            let wait = ACK_WAIT.min(deadline.saturating_duration_since(Instant::now()));
            if let Ok(Some(_)) = tokio::time::timeout(wait, attempt).await {
                return true;
            }
        }
        false
    }
}

/// Where a task message goes, with its headers: its queue's subject, or, for a delayed task, a
/// message schedule that the server publishes there when it is due.
fn destination(task: &Task, traceparent: Option<&str>) -> (String, async_nats::HeaderMap) {
    match task.run_at {
        Some(at) => {
            // Whole milliseconds, rounded up: a task must never start before its `run_at`.
            let ms =
                at.timestamp_millis() + i64::from(at.timestamp_subsec_nanos() % 1_000_000 != 0);
            let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or(at);
            let mut h = headers(TASK_SCHEMA, traceparent);
            h.insert(
                async_nats::header::NATS_SCHEDULE,
                format!(
                    "@at {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                )
                .as_str(),
            );
            h.insert(
                async_nats::header::NATS_SCHEDULE_TARGET,
                task_subject(&task.queue, task.priority).as_str(),
            );
            (schedule_subject(task.id), h)
        }
        None => (
            task_subject(&task.queue, task.priority),
            headers(TASK_SCHEMA, traceparent),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unanswered_publish_may_have_stored_its_message() {
        let failed = |kind| Stored::of(&PublishError::new(kind));
        assert_eq!(failed(PublishErrorKind::TimedOut), Stored::Unknown);
        assert_eq!(failed(PublishErrorKind::BrokenPipe), Stored::Unknown);
        // "No responders": no stream leader took it. A refusal names a reason.
        assert_eq!(failed(PublishErrorKind::StreamNotFound), Stored::No);
        assert_eq!(failed(PublishErrorKind::WrongLastSequence), Stored::No);
        // Once a try may have stored it, later refusals do not say otherwise.
        assert_eq!(Stored::Unknown.or(Stored::No), Stored::Unknown);
        assert_eq!(Stored::No.or(Stored::Unknown), Stored::Unknown);
        assert_eq!(Stored::No.or(Stored::No), Stored::No);
    }
}
