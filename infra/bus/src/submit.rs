//! Putting tasks and their events into JetStream: the submission (event, then task), events of a
//! running task, handing a task back, and removing a delayed task's schedule.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::HeaderValue;
use async_nats::jetstream::{context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use uuid::Uuid;
use wharf_contract::event::Submitted;
use wharf_contract::msg_id;
use wharf_contract::{
    ATTEMPTS_USED_HEADER, EVENT_SCHEMA, TASK_SCHEMA, TASKS_STREAM, Task, TaskEvent, event_subject,
    schedule_subject, task_subject,
};

use crate::retry::Schedule;
use crate::{Bus, Delivery, Error, Message, headers, nats};

impl Bus {
    /// Publishes a task's `submitted` event, then the task, and waits until JetStream stored
    /// both (the two acks are awaited together: one round trip). Returns the task's sequence in
    /// the stream.
    ///
    /// The event is sent first, on the same connection. The server reads a connection's
    /// messages in order and queues each to its stream as it reads it, so the `submitted` event
    /// is queued to the events stream before the task even reaches its queue; a worker's
    /// `started` event, which needs the task, is queued after it. Two streams give no other
    /// order: sending the task first let a fast worker's `started` be stored before
    /// `submitted`. (This holds on one server; in a cluster the streams may have different
    /// leaders.)
    pub async fn submit(&self, task: &Task, traceparent: Option<&str>) -> Result<u64, Error> {
        // Everything the task message needs is ready before the event goes out, so that the
        // two are sent back to back: a gateway killed between them leaves a `submitted` event
        // with no task (see docs/delivery.md), and the gap is kept as short as it can be.
        let body = serde_json::to_vec(task).expect("a task serialises");
        let submitted =
            Bytes::from(serde_json::to_vec(&Submitted::of(task)).expect("an event serialises"));
        let (subject, headers) = destination(task, traceparent);
        let submitted_id = msg_id::submitted(task.id);
        let event_ack = self
            .publish_event_body(
                (&task.tenant, task.id),
                submitted.clone(),
                &submitted_id,
                traceparent,
            )
            .await?;
        let sent = self
            .js
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(Bytes::from(body))
                    .headers(headers)
                    .message_id(msg_id::task(task.id)),
            )
            .await;
        let task_ack = match sent {
            Ok(ack) => ack,
            Err(e) => {
                let e = nats("publish the task")(e);
                self.not_enqueued(task, &e, traceparent).await;
                return Err(e);
            }
        };
        // Sent: whether it was stored is only known from the ack. Without one the task may
        // well be queued, so its history is left as it is and the caller hears 503.
        let (task_ack, event_ack) = futures::join!(task_ack.into_future(), event_ack.into_future());
        let task_ack = task_ack.map_err(nats("store the task"))?;
        // The task is stored now; insist on its submitted event (the same message id makes a
        // repeat harmless) so that a 503 for a stored task stays the rare case it should be.
        if event_ack.is_err() {
            let pause = Duration::from_millis(200);
            tokio::time::sleep(pause).await;
            let store = || async {
                self.publish_event_body(
                    (&task.tenant, task.id),
                    submitted.clone(),
                    &submitted_id,
                    traceparent,
                )
                .await?
                .await
                .map(|_| ())
                .map_err(nats("store the submitted event"))
            };
            Schedule::new(3, pause).run(store).await?;
        }
        Ok(task_ack.sequence)
    }

    /// Publishes an event of task `id` of `tenant` already encoded; see [`Bus::publish_event`].
    async fn publish_event_body(
        &self,
        (tenant, id): (&str, uuid::Uuid),
        body: Bytes,
        msg_id: &str,
        traceparent: Option<&str>,
    ) -> Result<PublishAckFuture, Error> {
        self.js
            .send_publish(
                event_subject(tenant, id),
                PublishMessage::build()
                    .payload(body)
                    .headers(headers(EVENT_SCHEMA, traceparent))
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
        if let Ok(ack) = self
            .publish_event(
                &task.tenant,
                &failed,
                &msg_id::terminal(task.id),
                traceparent,
            )
            .await
        {
            let _ = ack.await;
        }
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
        let body = serde_json::to_vec(event).expect("an event serialises");
        self.publish_event_body((tenant, event.task_id), body.into(), msg_id, traceparent)
            .await
    }

    /// Publishes an event and asks for no acknowledgement: JetStream stores it all the same, and
    /// one round trip fewer per event is a message fewer for nats-server and this connection.
    /// Only for events whose loss would not matter (`started`, progress): the server handles a
    /// connection's messages in order, so the ack of a later event published here (the
    /// terminal one) arrives after this one was stored or refused.
    pub async fn emit_event(
        &self,
        tenant: &str,
        event: &TaskEvent,
        msg_id: &str,
        traceparent: Option<&str>,
    ) -> Result<(), Error> {
        let body = serde_json::to_vec(event).expect("an event serialises");
        let mut h = headers(EVENT_SCHEMA, traceparent);
        h.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        self.client
            .publish_with_headers(event_subject(tenant, event.task_id), h, Bytes::from(body))
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
