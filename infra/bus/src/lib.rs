//! Wharf's use of NATS JetStream: topology, publishing, consuming.
//!
//! This crate turns the names and wire types of `wharf-contract` into JetStream operations: it
//! creates the streams, consumers and key-value buckets (idempotently, at every start), publishes
//! tasks and events with `Nats-Msg-Id` for de-duplication and the trace context in a header, and
//! reads a task's event history. It never spells a subject itself (the contract does) and knows
//! nothing of HTTP, SQL or MCP.

use std::future::IntoFuture;
use std::time::Duration;

pub mod local;
mod secrets;

pub use secrets::{redact_url, scrub_url, url_secrets};

use async_nats::jetstream::{
    self, consumer, context::PublishAckFuture, kv, message::PublishMessage, stream,
};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use uuid::Uuid;
use wharf_contract::{
    ATTEMPTS_USED_HEADER, CANCEL_BUCKET, DLQ_STREAM, DLQ_SUBJECTS, DeadLetter, EVENT_SCHEMA,
    EVENTS_STREAM, EVENTS_SUBJECTS, IDEMPOTENCY_BUCKET, LIVE_EVENTS_SUBJECTS, MCP_REGISTRY_VERSION,
    McpRegistry, Priority, RECORDER_CONSUMER, REGISTRY_BUCKET, REGISTRY_KEY, SCHEDULES_SUBJECTS,
    SCHEMA_HEADER, TASK_SCHEMA, TASKS_STREAM, TASKS_SUBJECTS, TOOLS_BUCKET, TRACEPARENT_HEADER,
    Task, TaskEvent, ToolServer, dlq_subject, event_filter, event_subject, live_event_filter,
    queue_consumer, schedule_subject, task_subject, tenant_of_event_subject,
};
use wharf_contract::{
    CONFIG_CHANGED_SUBJECT, KEY_REVOKED_SUBJECT, QueueLevel, WORKERS_BUCKET, WorkerInfo,
    parse_queue_consumer, parse_task_subject, worker_key,
};

pub use async_nats::jetstream::AckKind;
pub use async_nats::jetstream::Message;
pub use async_nats::jetstream::consumer::PullConsumer;

/// Failures talking to NATS. The message says which operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to nats at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("{op}: {message}")]
    Nats { op: &'static str, message: String },
    #[error("malformed message on {subject}: {source}")]
    Decode {
        subject: String,
        source: wharf_contract::event::DecodeError,
    },
}

/// Turns a client error into [`Error::Nats`] naming the operation: `.map_err(nats("..."))`.
fn nats<E: std::fmt::Display>(op: &'static str) -> impl Fn(E) -> Error + Copy {
    move |e| Error::Nats {
        op,
        message: e.to_string(),
    }
}

/// How the streams and buckets are laid out; every field has a working default.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Replicas of every stream and bucket (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    /// How long task events are kept.
    pub events_max_age: Duration,
    /// Window in which a re-published message with the same `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
    /// How long a delivered task stays leased without a heartbeat before it is redelivered.
    pub ack_wait: Duration,
    /// How long cancellation requests are remembered.
    pub cancel_ttl: Duration,
    /// How long an idempotency key keeps naming the task it created.
    pub idempotency_window: Duration,
    /// How long a worker stays listed after its last announcement; it announces itself every
    /// third of this.
    pub worker_ttl: Duration,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            replicas: 1,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(6),
            cancel_ttl: Duration::from_secs(7 * 24 * 3600),
            idempotency_window: Duration::from_secs(24 * 3600),
            worker_ttl: Duration::from_secs(10),
        }
    }
}

/// A connection to NATS with a JetStream context.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    topology: Topology,
    /// The idempotency bucket, opened once (opening asks the server for the stream's info).
    idempotency: std::sync::Arc<tokio::sync::OnceCell<kv::Store>>,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key now names the new task.
    New { revision: u64 },
    /// The key already names a task (stored, or still being submitted by another request).
    Held {
        task_id: Uuid,
        claimed_at: chrono::DateTime<chrono::Utc>,
        revision: u64,
    },
}

/// An idempotency key's entry.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeyHolder {
    task_id: Uuid,
    claimed_at: chrono::DateTime<chrono::Utc>,
}

/// The bucket key for an idempotency key: a UUIDv5 of it, since bucket keys allow only a few
/// characters and a client's key may hold any.
fn idempotency_bucket_key(key: &str) -> String {
    /// Namespace of Wharf's idempotency keys (a random UUID, fixed forever).
    const NAMESPACE: Uuid = Uuid::from_u128(0x6a0f_4a1e_2c57_4d3b_9f1e_8b0d_5c2a_7e41);
    Uuid::new_v5(&NAMESPACE, key.as_bytes())
        .simple()
        .to_string()
}

/// Room kept in every message for its headers (schema, message id, traceparent) and, for a
/// task, the dead letter that may one day hold it (the task with its last error around it).
pub const MESSAGE_HEADROOM: usize = 4096;

/// The length of `value` as JSON, without keeping the bytes: to tell whether it fits in a
/// message before sending it.
pub fn encoded_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("wire types serialise");
    count.0
}

/// Header values for a message.
fn headers(schema: &'static str, traceparent: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(SCHEMA_HEADER, HeaderValue::from(schema));
    if let Some(tp) = traceparent {
        h.insert(TRACEPARENT_HEADER, HeaderValue::from(tp));
    }
    h
}

/// Attempts a task used before this message was (re)published; 0 for a first publish.
pub fn attempts_used(message: &async_nats::Message) -> u32 {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(ATTEMPTS_USED_HEADER))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// The trace context carried by a message, if any.
pub fn traceparent_of(message: &async_nats::Message) -> Option<String> {
    message
        .headers
        .as_ref()?
        .get(TRACEPARENT_HEADER)
        .map(|v| v.as_str().to_owned())
}

impl Bus {
    /// Connects to `url`, naming the connection `name` (shown in the server's monitoring).
    pub async fn connect(url: &str, name: &str, topology: Topology) -> Result<Bus, Error> {
        // Credentials in the URL (`nats://user:password@host`, `nats://token@host`) are sent
        // as such: the client library would otherwise leave them out.
        let mut options = async_nats::ConnectOptions::new();
        if let Ok(addr) = url.parse::<async_nats::ServerAddr>() {
            match (addr.username(), addr.password()) {
                (Some(user), Some(password)) => {
                    options =
                        options.user_and_password(secrets::decode(user), secrets::decode(password));
                }
                (Some(token), None) => options = options.token(secrets::decode(token)),
                _ => {}
            }
        }
        let client = options
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|source| Error::Connect {
                url: redact_url(url),
                source,
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .max_ack_inflight(16_384)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Bus {
            client,
            js,
            topology,
            idempotency: Default::default(),
        })
    }

    /// The core NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Tells every gateway that API key `id` was revoked (best effort: a gateway that misses it
    /// drops the key when its cache entry expires).
    pub async fn announce_key_revoked(&self, id: Uuid) -> Result<(), Error> {
        self.client
            .publish(KEY_REVOKED_SUBJECT, Bytes::from(id.to_string()))
            .await
            .map_err(nats("announce a revoked key"))?;
        self.client
            .flush()
            .await
            .map_err(nats("announce a revoked key"))
    }

    /// The ids of API keys revoked from now on, as gateways announce them.
    pub async fn key_revocations(&self) -> Result<impl Stream<Item = Uuid> + use<>, Error> {
        let sub = self
            .client
            .subscribe(KEY_REVOKED_SUBJECT)
            .await
            .map_err(nats("follow revoked keys"))?;
        Ok(sub.filter_map(|m| {
            std::future::ready(
                std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|s| s.parse().ok()),
            )
        }))
    }

    /// Tells every gateway that revision `revision` of the runtime configuration is stored
    /// (best effort: gateways also read it again every half minute).
    pub async fn announce_config_changed(&self, revision: u64) -> Result<(), Error> {
        self.client
            .publish(CONFIG_CHANGED_SUBJECT, Bytes::from(revision.to_string()))
            .await
            .map_err(nats("announce a configuration change"))?;
        self.client
            .flush()
            .await
            .map_err(nats("announce a configuration change"))
    }

    /// The runtime configuration revisions announced from now on.
    pub async fn config_changes(&self) -> Result<impl Stream<Item = u64> + use<>, Error> {
        let sub = self
            .client
            .subscribe(CONFIG_CHANGED_SUBJECT)
            .await
            .map_err(nats("follow configuration changes"))?;
        Ok(sub.filter_map(|m| {
            std::future::ready(
                std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|s| s.parse().ok()),
            )
        }))
    }

    /// The largest message the server takes, headers and payload together (nats-server's
    /// `max_payload`, 1 MiB unless configured otherwise), as its last `INFO` said.
    pub fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    /// The largest task or event body Wharf publishes: [`Bus::max_payload`] less
    /// [`MESSAGE_HEADROOM`].
    pub fn body_room(&self) -> usize {
        self.max_payload().saturating_sub(MESSAGE_HEADROOM)
    }

    /// True when the connection to the server is up.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Creates or updates the streams and buckets. Safe to run from every process at every start.
    pub async fn ensure_topology(&self) -> Result<(), Error> {
        let t = &self.topology;
        self.js
            .create_or_update_stream(stream::Config {
                name: TASKS_STREAM.into(),
                description: Some("Wharf tasks waiting for a worker, one subject per queue".into()),
                subjects: vec![TASKS_SUBJECTS.into(), SCHEDULES_SUBJECTS.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: t.replicas,
                duplicate_window: t.duplicate_window,
                allow_message_schedules: true,
                ..Default::default()
            })
            .await
            .map_err(nats("create the tasks stream"))?;
        self.js
            .create_or_update_stream(stream::Config {
                name: EVENTS_STREAM.into(),
                description: Some("Wharf task events, one subject per task".into()),
                subjects: vec![EVENTS_SUBJECTS.into()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: t.replicas,
                max_age: t.events_max_age,
                duplicate_window: t.duplicate_window.min(t.events_max_age),
                allow_direct: true,
                republish: Some(stream::Republish {
                    source: EVENTS_SUBJECTS.into(),
                    destination: LIVE_EVENTS_SUBJECTS.into(),
                    headers_only: false,
                }),
                ..Default::default()
            })
            .await
            .map_err(nats("create the events stream"))?;
        self.js
            .create_or_update_stream(stream::Config {
                name: DLQ_STREAM.into(),
                description: Some("dead-lettered tasks, one message per task".into()),
                subjects: vec![DLQ_SUBJECTS.into()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: t.replicas,
                max_messages_per_subject: 1,
                max_age: t.events_max_age,
                duplicate_window: t.duplicate_window.min(t.events_max_age),
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(nats("create the dead-letter stream"))?;
        for (bucket, description, max_age) in [
            (
                TOOLS_BUCKET,
                "MCP tools advertised by workers",
                Duration::ZERO,
            ),
            (
                CANCEL_BUCKET,
                "cancellation requests by task id",
                t.cancel_ttl,
            ),
            (
                IDEMPOTENCY_BUCKET,
                "the task each idempotency key created",
                t.idempotency_window,
            ),
            (
                WORKERS_BUCKET,
                "live workers, each entry renewed while its worker runs",
                t.worker_ttl,
            ),
            (
                REGISTRY_BUCKET,
                "the MCP server registry of the runtime configuration",
                Duration::ZERO,
            ),
        ] {
            self.js
                .create_or_update_key_value(kv::Config {
                    bucket: bucket.into(),
                    description: description.into(),
                    history: 1,
                    max_age,
                    storage: stream::StorageType::File,
                    num_replicas: t.replicas,
                    ..Default::default()
                })
                .await
                .map_err(nats("create a key-value bucket"))?;
        }
        Ok(())
    }

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
    pub async fn submit(
        &self,
        task: &Task,
        submitted: &TaskEvent,
        traceparent: Option<&str>,
    ) -> Result<u64, Error> {
        // Everything the task message needs is ready before the event goes out, so that the
        // two are sent back to back: a gateway killed between them leaves a `submitted` event
        // with no task (see docs/delivery.md), and the gap is kept as short as it can be.
        let body = serde_json::to_vec(task).expect("a task serialises");
        // A delayed task is stored as a message schedule outside every queue; when it is due,
        // the server publishes it on its queue's subject.
        let (subject, headers) = match task.run_at {
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
        };
        let submitted_id = format!("{}:submitted", task.id);
        let event_ack = self
            .publish_event(&task.tenant, submitted, &submitted_id, traceparent)
            .await?;
        let sent = self
            .js
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(Bytes::from(body))
                    .headers(headers)
                    .message_id(task.id.to_string()),
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
        let mut stored = event_ack
            .map(|_| ())
            .map_err(nats("store the submitted event"));
        for _ in 0..3 {
            if stored.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            stored = match self
                .publish_event(&task.tenant, submitted, &submitted_id, traceparent)
                .await
            {
                Ok(ack) => ack
                    .await
                    .map(|_| ())
                    .map_err(nats("store the submitted event")),
                Err(e) => Err(e),
            };
        }
        stored?;
        Ok(task_ack.sequence)
    }

    /// Ends the history of a task that was never sent to its queue (its `submitted` event may
    /// be stored), so it does not read as queued forever.
    async fn not_enqueued(&self, task: &Task, e: &Error, traceparent: Option<&str>) {
        let failed = TaskEvent::new(
            task.id,
            0,
            wharf_contract::EventKind::Failed {
                error: wharf_contract::TaskError {
                    code: "not_enqueued".into(),
                    message: format!("the task could not be queued: {e}"),
                    details: None,
                    dead_letter: false,
                },
            },
        );
        if let Ok(ack) = self
            .publish_event(
                &task.tenant,
                &failed,
                &format!("{}:terminal", task.id),
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
        let mut stored = false;
        for _ in 0..3 {
            let published = self
                .js
                .send_publish(
                    message.subject.clone(),
                    PublishMessage::build()
                        .payload(message.payload.clone())
                        .headers(h.clone())
                        .message_id(format!("handback:{seq}")),
                )
                .await;
            if let Ok(ack) = published
                && ack.await.is_ok()
            {
                stored = true;
                break;
            }
        }
        if stored {
            message
                .double_ack()
                .await
                .map_err(nats("acknowledge a handed-back task"))
        } else {
            message
                .ack_with(AckKind::Nak(None))
                .await
                .map_err(nats("hand a task back"))
        }
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
        self.js
            .send_publish(
                event_subject(tenant, event.task_id),
                PublishMessage::build()
                    .payload(Bytes::from(body))
                    .headers(headers(EVENT_SCHEMA, traceparent))
                    .message_id(msg_id),
            )
            .await
            .map_err(nats("publish an event"))
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

    /// The durable pull consumer every worker of `queue` shares for the tasks at `priority`.
    /// The levels' filters are disjoint subjects, as a work-queue stream requires.
    pub async fn queue_consumer(
        &self,
        queue: &str,
        priority: Priority,
    ) -> Result<PullConsumer, Error> {
        self.stream(TASKS_STREAM)
            .await?
            .create_consumer(consumer::pull::Config {
                durable_name: Some(queue_consumer(queue, priority)),
                description: Some(format!("workers of queue {queue}, {priority} priority")),
                filter_subject: task_subject(queue, priority),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.topology.ack_wait,
                max_deliver: -1,
                max_ack_pending: 100_000,
                ..Default::default()
            })
            .await
            .map_err(nats("create a queue consumer"))
    }

    /// Events stored and not yet recorded: the recorder consumer's pending and unacknowledged
    /// messages (every event, if no recorder ever ran).
    pub async fn recorder_backlog(&self) -> Result<u64, Error> {
        let stream = self.events_stream().await?;
        match stream.consumer_info(RECORDER_CONSUMER).await {
            Ok(info) => Ok(info.num_pending + info.num_ack_pending as u64),
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound
                ) =>
            {
                Ok(stream
                    .get_info()
                    .await
                    .map_err(nats("read the events stream"))?
                    .state
                    .messages)
            }
            Err(e) => Err(nats("read the recorder consumer")(e)),
        }
    }

    /// The durable pull consumer the recorder projects events from.
    pub async fn recorder_consumer(&self) -> Result<PullConsumer, Error> {
        let stream = self.events_stream().await?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(RECORDER_CONSUMER.into()),
                description: Some("projects task events into the database".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                // A recorder that died leaves its prefetched events unacknowledged; another
                // recorder gets them after this long. Writing a batch takes far less.
                ack_wait: Duration::from_secs(10),
                max_deliver: -1,
                max_ack_pending: 50_000,
                ..Default::default()
            })
            .await
            .map_err(nats("create the recorder consumer"))
    }

    /// A task's events stored so far (empty for a task nobody submitted). Events that cannot be
    /// decoded are skipped with a warning: one of a newer version must not hide the others.
    pub async fn history(&self, id: Uuid) -> Result<Vec<(u64, TaskEvent)>, Error> {
        let stored = self.events_after(id, 0).await?;
        Ok(stored
            .into_iter()
            .filter_map(|(seq, e)| match e {
                Ok(event) => Some((seq, event)),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable event");
                    None
                }
            })
            .collect())
    }

    /// The events stream, without asking the server for its info.
    async fn events_stream(&self) -> Result<jetstream::stream::Stream<()>, Error> {
        self.stream(EVENTS_STREAM).await
    }

    /// Stream `name`, without asking the server for its info.
    async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream<()>, Error> {
        self.js
            .get_stream_no_info(name)
            .await
            .map_err(nats("open a stream"))
    }

    /// The highest attempt any stored event of task `id` names (0 when it has none), read from
    /// its whole history.
    pub async fn latest_attempt(&self, id: Uuid) -> Result<u32, Error> {
        Ok(self
            .events_after(id, 0)
            .await?
            .into_iter()
            .filter_map(|(_, e)| e.ok())
            .map(|e| e.attempt)
            .max()
            .unwrap_or(0))
    }

    /// The first stored terminal event of task `id` (the one the projection keeps), read from its
    /// whole history: a later event (a cancel request, a stale attempt's progress) may follow it.
    pub async fn terminal_event(&self, id: Uuid) -> Result<Option<TaskEvent>, Error> {
        Ok(self
            .events_after(id, 0)
            .await?
            .into_iter()
            .filter_map(|(_, e)| e.ok())
            .find(|e| e.terminal_status().is_some()))
    }

    /// The tenant of task `id`, as the subject of its first stored event names it (`None` when
    /// it has none).
    pub async fn tenant_of(&self, id: Uuid) -> Result<Option<String>, Error> {
        let stream = self.events_stream().await?;
        match stream
            .direct_get_next_for_subject(event_filter(id).as_str(), None)
            .await
        {
            Ok(m) => Ok(tenant_of_event_subject(m.subject.as_str()).map(str::to_owned)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(nats("read a task's first event")(e)),
        }
    }

    /// True when the newest stored event of task `id` ends it (one direct get).
    pub async fn has_ended(&self, id: Uuid) -> Result<bool, Error> {
        let stream = self.events_stream().await?;
        let subject = event_filter(id);
        match stream.direct_get_last_for_subject(subject.as_str()).await {
            Ok(m) => {
                Ok(decode_payload(&subject, &m.payload)
                    .is_ok_and(|e| e.terminal_status().is_some()))
            }
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(false),
            Err(e) => Err(nats("read a task's last event")(e)),
        }
    }

    /// The stored events of task `id` with a stream sequence above `after`, in order, read with
    /// direct gets by subject (no consumer is created).
    async fn events_after(
        &self,
        id: Uuid,
        after: u64,
    ) -> Result<Vec<(u64, Result<TaskEvent, Error>)>, Error> {
        let stream = self.events_stream().await?;
        let subject = event_filter(id);
        let mut out = Vec::new();
        let mut next = after + 1;
        loop {
            match stream
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
            {
                Ok(m) => {
                    next = m.sequence + 1;
                    out.push((m.sequence, decode_payload(&subject, &m.payload)));
                }
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(nats("read a task's events")(e)),
            }
        }
    }

    /// A task's events from the first, then live ones as they are stored, in stream order, each
    /// with its stream sequence, and how many were stored when following began (0: none yet, or
    /// no such task). The stream never ends by itself; stop after the terminal event.
    ///
    /// Following costs one plain subscription to the task's republish subject, taken before
    /// the history is read on the same connection (so the server has the subscription before
    /// it answers the read) and nothing falls between the two; events seen twice are dropped by
    /// sequence. Each republished event names the sequence of the task's previous event: when
    /// that is not the last one delivered (a message was lost, say to a slow subscriber), the
    /// missing events are read back from the stream. So is everything after a long quiet spell.
    pub async fn follow(
        &self,
        id: Uuid,
    ) -> Result<
        (
            u64,
            impl Stream<Item = Result<(u64, TaskEvent), Error>> + use<>,
        ),
        Error,
    > {
        let live = self
            .client
            .subscribe(live_event_filter(id))
            .await
            .map_err(nats("subscribe to a task's events"))?;
        let history = self.events_after(id, 0).await?;
        let stored = history.len() as u64;
        Ok((stored, self.follow_from(id, live, history)))
    }

    /// Follows task `id` from its first event without reading any history: for a task not
    /// submitted yet, whose submitter subscribes first and then publishes on this same `Bus`
    /// (one connection: the server has the subscription before the first event). Saves the
    /// reads `follow` makes; should an event still be missed, the gap repair reads it back.
    pub async fn follow_new(
        &self,
        id: Uuid,
    ) -> Result<impl Stream<Item = Result<(u64, TaskEvent), Error>> + use<>, Error> {
        let live = self
            .client
            .subscribe(live_event_filter(id))
            .await
            .map_err(nats("subscribe to a task's events"))?;
        Ok(self.follow_from(id, live, Vec::new()))
    }

    fn follow_from(
        &self,
        id: Uuid,
        live: async_nats::Subscriber,
        history: Vec<(u64, Result<TaskEvent, Error>)>,
    ) -> impl Stream<Item = Result<(u64, TaskEvent), Error>> + use<> {
        /// After this long without a live event, check the stream for missed ones.
        const QUIET: Duration = Duration::from_secs(30);
        let state = Follow {
            bus: self.clone(),
            id,
            ready: history.into(),
            live,
            last: 0,
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if let Some((seq, event)) = s.ready.pop_front() {
                    s.last = seq;
                    return Some((event.map(|e| (seq, e)), s));
                }
                let missed_after = match tokio::time::timeout(QUIET, s.live.next()).await {
                    Ok(Some(m)) => {
                        let header = |name: &str| -> Option<u64> {
                            m.headers.as_ref()?.get(name)?.as_str().parse().ok()
                        };
                        let Some(seq) = header("Nats-Sequence") else {
                            continue;
                        };
                        if seq <= s.last {
                            continue;
                        }
                        if header("Nats-Last-Sequence").is_some_and(|prev| prev == s.last) {
                            s.last = seq;
                            let subject = event_filter(s.id);
                            return Some((
                                decode_payload(&subject, &m.payload).map(|e| (seq, e)),
                                s,
                            ));
                        }
                        s.last
                    }
                    Ok(None) => return None,
                    Err(_quiet) => s.last,
                };
                match s.bus.events_after(s.id, missed_after).await {
                    Ok(missed) => s.ready.extend(missed),
                    Err(e) => return Some((Err(e), s)),
                }
            }
        })
    }

    /// Claims idempotency key `key` for task `task_id`, atomically across every gateway: the
    /// key's entry is created only if none exists (or the last one expired with the window).
    pub async fn claim_idempotency_key(&self, key: &str, task_id: Uuid) -> Result<Claim, Error> {
        let store = self.idempotency_bucket().await?;
        let k = idempotency_bucket_key(key);
        let value = Bytes::from(
            serde_json::to_vec(&KeyHolder {
                task_id,
                claimed_at: chrono::Utc::now(),
            })
            .expect("a key holder serialises"),
        );
        // Twice at most: an entry that expires between the create and the read is claimed again.
        for _ in 0..2 {
            match store.create(&k, value.clone()).await {
                Ok(revision) => return Ok(Claim::New { revision }),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(nats("claim an idempotency key")(e)),
            }
            let entry = store
                .entry(&k)
                .await
                .map_err(nats("read an idempotency key"))?;
            if let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put)
                && let Ok(holder) = serde_json::from_slice::<KeyHolder>(&entry.value)
            {
                // The server's clock, not the claiming gateway's: gateways' clocks may differ.
                let claimed_at = chrono::DateTime::from_timestamp(
                    entry.created.unix_timestamp(),
                    entry.created.nanosecond(),
                )
                .unwrap_or(holder.claimed_at);
                return Ok(Claim::Held {
                    task_id: holder.task_id,
                    claimed_at,
                    revision: entry.revision,
                });
            }
        }
        Err(Error::Nats {
            op: "claim an idempotency key",
            message: "the key's entry kept changing".into(),
        })
    }

    /// Gives back idempotency key `key` if it is still at `revision` (the claim of a request
    /// that then published nothing).
    pub async fn release_idempotency_key(&self, key: &str, revision: u64) -> Result<(), Error> {
        self.idempotency_bucket()
            .await?
            .delete_expect_revision(idempotency_bucket_key(key), Some(revision))
            .await
            .map_err(nats("release an idempotency key"))
    }

    /// Moves idempotency key `key` to task `task_id` if it is still at `revision` (held by a
    /// claim whose task was never stored). False when another request moved it first.
    pub async fn take_over_idempotency_key(
        &self,
        key: &str,
        task_id: Uuid,
        revision: u64,
    ) -> Result<bool, Error> {
        let store = self.idempotency_bucket().await?;
        let value = Bytes::from(
            serde_json::to_vec(&KeyHolder {
                task_id,
                claimed_at: chrono::Utc::now(),
            })
            .expect("a key holder serialises"),
        );
        match store
            .update(idempotency_bucket_key(key), value, revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(nats("take over an idempotency key")(e)),
        }
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

    /// Stores a dead letter and waits until JetStream has it. Its message id makes a repeat
    /// harmless.
    pub async fn publish_dead_letter(&self, letter: &DeadLetter) -> Result<(), Error> {
        let body = serde_json::to_vec(letter).expect("a dead letter serialises");
        self.js
            .send_publish(
                dlq_subject(letter.task_id),
                PublishMessage::build()
                    .payload(Bytes::from(body))
                    .message_id(format!("{}:dead", letter.task_id)),
            )
            .await
            .map_err(nats("publish a dead letter"))?
            .await
            .map_err(nats("store a dead letter"))?;
        Ok(())
    }

    /// Up to `limit` dead letters stored after stream sequence `after` for which `keep` holds,
    /// oldest first, each with its `seq` set; unreadable entries are skipped.
    pub async fn dead_letters(
        &self,
        after: u64,
        limit: usize,
        keep: impl Fn(&DeadLetter) -> bool,
    ) -> Result<Vec<DeadLetter>, Error> {
        let stream = self.stream(DLQ_STREAM).await?;
        let mut out = Vec::new();
        let mut next = after + 1;
        while out.len() < limit {
            match stream
                .direct_get_next_for_subject(DLQ_SUBJECTS, Some(next))
                .await
            {
                Ok(m) => {
                    next = m.sequence + 1;
                    if let Some(letter) = read_dead_letter(m.sequence, &m.payload)
                        && keep(&letter)
                    {
                        out.push(letter);
                    }
                }
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(nats("read dead letters")(e)),
            }
        }
        Ok(out)
    }

    /// The dead letter of task `id`, if it has one.
    pub async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>, Error> {
        let stream = self.stream(DLQ_STREAM).await?;
        match stream
            .direct_get_last_for_subject(dlq_subject(id).as_str())
            .await
        {
            Ok(m) => Ok(read_dead_letter(m.sequence, &m.payload)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(nats("read a dead letter")(e)),
        }
    }

    /// Removes the dead letter of task `id` (after a replay).
    pub async fn remove_dead_letter(&self, id: Uuid) -> Result<(), Error> {
        self.stream(DLQ_STREAM)
            .await?
            .purge()
            .filter(dlq_subject(id))
            .await
            .map_err(nats("remove a dead letter"))?;
        Ok(())
    }

    /// Records a request to cancel task `id`; workers watching the bucket act on it.
    pub async fn request_cancel(&self, id: Uuid) -> Result<(), Error> {
        let store = self.bucket(CANCEL_BUCKET).await?;
        store
            .put(id.to_string(), Bytes::from_static(b"1"))
            .await
            .map_err(nats("record a cancellation"))?;
        Ok(())
    }

    /// The cancellation requests remembered now, and a stream of the ones made from now on. The
    /// stream is subscribed before the snapshot is read, so nothing falls between the two.
    pub async fn watch_cancels(
        &self,
    ) -> Result<(Vec<Uuid>, impl Stream<Item = Uuid> + use<>), Error> {
        let (_, watch, keys) = self.watch_and_list(CANCEL_BUCKET).await?;
        let now = keys.iter().filter_map(|k| k.parse().ok()).collect();
        let live = watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            (entry.operation == kv::Operation::Put)
                .then(|| entry.key.parse().ok())
                .flatten()
        });
        Ok((now, live))
    }

    /// Advertises one MCP server's tools in the catalog.
    pub async fn advertise_tools(&self, server: &ToolServer) -> Result<(), Error> {
        let store = self.bucket(TOOLS_BUCKET).await?;
        let body = serde_json::to_vec(server).expect("a tool server serialises");
        store
            .put(&server.server, Bytes::from(body))
            .await
            .map_err(nats("advertise tools"))?;
        Ok(())
    }

    /// Removes an MCP server's tools from the catalog when a registry server advertised them
    /// (its server left the registry); an entry a worker's own server of that name advertised
    /// stays. Returns whether it removed one.
    pub async fn withdraw_registry_tools(&self, server: &str) -> Result<bool, Error> {
        let store = self.bucket(TOOLS_BUCKET).await?;
        let Some(entry) = store
            .entry(server)
            .await
            .map_err(nats("read a server's tools"))?
        else {
            return Ok(false);
        };
        if entry.operation != kv::Operation::Put
            || !decode_tool_server(server, &entry.value).is_some_and(|t| t.registry)
        {
            return Ok(false);
        }
        // Only that very entry: a worker's own server may have advertised since.
        match store
            .delete_expect_revision(server, Some(entry.revision))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::debug!(server, error = %e, "the server's tools changed meanwhile; kept");
                Ok(false)
            }
        }
    }

    /// Every advertised MCP server now, and a stream of later changes: a server's new
    /// advertisement, or its name and `None` when its tools were withdrawn. The stream is
    /// subscribed before the snapshot is read, so nothing falls between the two.
    pub async fn watch_tools(
        &self,
    ) -> Result<
        (
            Vec<ToolServer>,
            impl Stream<Item = (String, Option<ToolServer>)> + use<>,
        ),
        Error,
    > {
        let (store, watch, keys) = self.watch_and_list(TOOLS_BUCKET).await?;
        let mut now = Vec::with_capacity(keys.len());
        for key in keys {
            let value = store
                .get(&key)
                .await
                .map_err(nats("read the tool catalog"))?;
            if let Some(server) = value.and_then(|v| decode_tool_server(&key, &v)) {
                now.push(server);
            }
        }
        let live = watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            if entry.operation != kv::Operation::Put {
                return Some((entry.key, None));
            }
            let server = decode_tool_server(&entry.key, &entry.value)?;
            Some((entry.key, Some(server)))
        });
        Ok((now, live))
    }

    /// Puts the MCP server registry of configuration revision `registry.revision` where workers
    /// read it, unless the one there is of that revision or a newer one (a gateway that has not
    /// applied the newest revision yet never takes it back).
    pub async fn publish_registry(&self, registry: &McpRegistry) -> Result<Published, Error> {
        let store = self.bucket(REGISTRY_BUCKET).await?;
        let body = Bytes::from(serde_json::to_vec(registry).expect("a registry serialises"));
        // Twice at most: a write by another gateway between the read and ours is read again.
        for _ in 0..2 {
            let entry = store
                .entry(REGISTRY_KEY)
                .await
                .map_err(nats("read the mcp registry"))?;
            let written = match entry {
                Some(e) => {
                    // A deleted key (or an unreadable entry) is below every revision.
                    let there = (e.operation == kv::Operation::Put)
                        .then(|| serde_json::from_slice::<McpRegistry>(&e.value).ok())
                        .flatten()
                        .map_or(0, |r| r.revision);
                    if there == registry.revision {
                        return Ok(Published::Current);
                    }
                    if there > registry.revision {
                        return Ok(Published::Ahead(there));
                    }
                    store
                        .update(REGISTRY_KEY, body.clone(), e.revision)
                        .await
                        .is_ok()
                }
                None => store.create(REGISTRY_KEY, body.clone()).await.is_ok(),
            };
            if written {
                return Ok(Published::Written);
            }
        }
        Err(Error::Nats {
            op: "write the mcp registry",
            message: "other gateways kept writing it".into(),
        })
    }

    /// The MCP server registry now (nothing, when none was ever written) and every later one,
    /// as gateways write it.
    pub async fn watch_registry(&self) -> Result<impl Stream<Item = McpRegistry> + use<>, Error> {
        let store = self.bucket(REGISTRY_BUCKET).await?;
        let watch = store
            .watch_with_history(REGISTRY_KEY)
            .await
            .map_err(nats("watch the mcp registry"))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            if entry.operation != kv::Operation::Put {
                return Some(McpRegistry::default());
            }
            match serde_json::from_slice::<McpRegistry>(&entry.value) {
                Ok(r) if r.v > MCP_REGISTRY_VERSION => {
                    tracing::warn!(
                        version = r.v,
                        "ignoring an mcp registry of a newer wire version: upgrade this worker"
                    );
                    None
                }
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a malformed mcp registry");
                    None
                }
            }
        }))
    }

    /// Announces a live worker, or renews its announcement: the entry lapses after
    /// `worker_ttl` unless announced again.
    pub async fn announce_worker(&self, worker: &WorkerInfo) -> Result<(), Error> {
        let store = self.bucket(WORKERS_BUCKET).await?;
        let body = serde_json::to_vec(worker).expect("a worker info serialises");
        store
            .put(worker_key(&worker.id), Bytes::from(body))
            .await
            .map_err(nats("announce a worker"))?;
        Ok(())
    }

    /// Removes a stopping worker from the list at once.
    pub async fn withdraw_worker(&self, id: &str) -> Result<(), Error> {
        let store = self.bucket(WORKERS_BUCKET).await?;
        store
            .delete(worker_key(id))
            .await
            .map_err(nats("withdraw a worker"))
    }

    /// The live workers, ordered by id.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        let store = self.bucket(WORKERS_BUCKET).await?;
        let keys: Vec<String> = store
            .keys()
            .await
            .map_err(nats("list the workers"))?
            .try_collect()
            .await
            .map_err(nats("list the workers"))?;
        let mut workers = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(value) = store.get(&key).await.map_err(nats("read a worker"))? else {
                continue;
            };
            match serde_json::from_slice::<WorkerInfo>(&value) {
                Ok(w) => workers.push(w),
                Err(e) => tracing::warn!(key, error = %e, "ignoring a malformed worker entry"),
            }
        }
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }

    /// Queues that have a consumer on the tasks stream (a worker served them once) or tasks in
    /// it, by name.
    pub async fn known_queues(&self) -> Result<Vec<String>, Error> {
        let stream = self.stream(TASKS_STREAM).await?;
        let names: Vec<String> = stream
            .consumer_names()
            .try_collect()
            .await
            .map_err(nats("list the queue consumers"))?;
        let mut queues: Vec<String> = names
            .iter()
            .filter_map(|n| parse_queue_consumer(n).map(|(q, _)| q.to_owned()))
            .collect();
        let mut subjects = stream
            .info_with_subjects(TASKS_SUBJECTS)
            .await
            .map_err(nats("read the tasks stream"))?;
        while let Some(s) = subjects.next().await {
            let (subject, _) = s.map_err(nats("read the tasks stream"))?;
            if let Some((queue, _)) = parse_task_subject(&subject) {
                queues.push(queue.to_owned());
            }
        }
        queues.sort();
        queues.dedup();
        Ok(queues)
    }

    /// Each level of `queue`, highest first: tasks waiting and held, from its consumer (none
    /// if no worker ever served it), and the age of its oldest task, from the stream.
    pub async fn queue_levels(&self, queue: &str) -> Result<Vec<QueueLevel>, Error> {
        let stream = self.stream(TASKS_STREAM).await?;
        let now = chrono::Utc::now();
        let mut levels = Vec::with_capacity(Priority::ALL.len());
        for priority in Priority::ALL {
            let subject = task_subject(queue, priority);
            let (waiting, in_flight) =
                match stream.consumer_info(queue_consumer(queue, priority)).await {
                    Ok(info) => (info.num_pending, info.num_ack_pending as u64),
                    Err(e)
                        if matches!(
                            e.kind(),
                            async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound
                        ) =>
                    {
                        // No worker ever served this level: all its tasks are waiting.
                        let mut counts = stream
                            .info_with_subjects(&subject)
                            .await
                            .map_err(nats("read the tasks stream"))?;
                        let mut n = 0;
                        while let Some(c) = counts.next().await {
                            let (s, count) = c.map_err(nats("read the tasks stream"))?;
                            if s == subject {
                                n = count as u64;
                            }
                        }
                        (n, 0)
                    }
                    Err(e) => return Err(nats("read a queue consumer")(e)),
                };
            let oldest = match stream.get_first_raw_message_by_subject(&subject, 1).await {
                Ok(m) => {
                    chrono::DateTime::from_timestamp(m.time.unix_timestamp(), m.time.nanosecond())
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                    ) =>
                {
                    None
                }
                Err(e) => return Err(nats("read a queue's oldest task")(e)),
            };
            levels.push(QueueLevel {
                priority,
                waiting,
                in_flight,
                oldest_age_secs: oldest
                    .map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1000.0),
            });
        }
        Ok(levels)
    }

    /// Subscribes to a bucket's changes, then lists its keys: nothing written between the two
    /// is missed (it is in the listing, the watch, or both).
    async fn watch_and_list(
        &self,
        bucket: &str,
    ) -> Result<(kv::Store, kv::Watch, Vec<String>), Error> {
        let store = self.bucket(bucket).await?;
        let watch = store.watch(">").await.map_err(nats("watch a bucket"))?;
        let keys = store
            .keys()
            .await
            .map_err(nats("list a bucket"))?
            .try_collect()
            .await
            .map_err(nats("list a bucket"))?;
        Ok((store, watch, keys))
    }

    async fn idempotency_bucket(&self) -> Result<&kv::Store, Error> {
        self.idempotency
            .get_or_try_init(|| self.bucket(IDEMPOTENCY_BUCKET))
            .await
    }

    async fn bucket(&self, name: &str) -> Result<kv::Store, Error> {
        self.js
            .get_key_value(name)
            .await
            .map_err(nats("open a key-value bucket"))
    }
}

/// What [`Bus::publish_registry`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The registry there is this one now.
    Written,
    /// It was there already.
    Current,
    /// A registry of this later revision is there: the database behind this gateway is
    /// behind NATS (restored, or another platform's), or this gateway lags.
    Ahead(u64),
}

fn decode_tool_server(key: &str, value: &[u8]) -> Option<ToolServer> {
    match serde_json::from_slice::<ToolServer>(value) {
        Ok(server) => Some(server),
        Err(e) => {
            tracing::warn!(key, error = %e, "ignoring a malformed tool catalog entry");
            None
        }
    }
}

/// Decodes an event message into its stream sequence and event.
pub fn decode_event(m: &Message) -> Result<(u64, TaskEvent), Error> {
    let seq = m.info().map(|i| i.stream_sequence).unwrap_or_default();
    Ok((seq, decode_payload(&m.subject, &m.payload)?))
}

fn read_dead_letter(seq: u64, payload: &[u8]) -> Option<DeadLetter> {
    match serde_json::from_slice::<DeadLetter>(payload) {
        Ok(mut letter) => {
            letter.seq = Some(seq);
            Some(letter)
        }
        Err(e) => {
            tracing::warn!(seq, error = %e, "skipping an unreadable dead letter");
            None
        }
    }
}

fn decode_payload(subject: &str, payload: &[u8]) -> Result<TaskEvent, Error> {
    TaskEvent::decode(payload).map_err(|source| Error::Decode {
        subject: subject.to_owned(),
        source,
    })
}

/// The state of one [`Bus::follow`].
struct Follow {
    bus: Bus,
    id: Uuid,
    /// Events read from the stream, not yet handed out.
    ready: std::collections::VecDeque<(u64, Result<TaskEvent, Error>)>,
    live: async_nats::Subscriber,
    /// Sequence of the last event handed out.
    last: u64,
}
