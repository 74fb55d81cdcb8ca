//! The streams, buckets and durable consumers, created or brought up to date at every start.

use std::time::Duration;

use async_nats::jetstream::{consumer, kv, stream};
use wharf_contract::{
    CANCEL_BUCKET, DLQ_STREAM, DLQ_SUBJECTS, EVENTS_STREAM, EVENTS_SUBJECTS, IDEMPOTENCY_BUCKET,
    LIVE_EVENTS_SUBJECTS, Priority, RECORDER_CONSUMER, REGISTRY_BUCKET, RETIRED_CALLBACKS_CONSUMER,
    SCHEDULES_SUBJECTS, TASKS_STREAM, TASKS_SUBJECTS, TOOLS_BUCKET, WORKERS_BUCKET, queue_consumer,
    task_subject,
};

use crate::{Bus, Error, PullConsumer, Topology, nats};

/// How long a starting process keeps trying to set up the streams and buckets before it gives
/// up: NATS may be starting too, or a cluster electing its leaders.
const SETUP_PATIENCE: Duration = Duration::from_secs(60);

impl Bus {
    /// Creates or updates the streams and buckets. Safe to run from every process at every start.
    /// A failure is logged and tried again, with backoff, for up to a minute (a cluster still
    /// electing its leaders answers late or not at all); then the last error is returned.
    pub async fn ensure_topology(&self) -> Result<(), Error> {
        let give_up = tokio::time::Instant::now() + SETUP_PATIENCE;
        let mut pause = Duration::from_millis(250);
        loop {
            match self.set_up_topology().await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + pause < give_up => {
                    tracing::warn!(error = %e, "cannot set up the streams yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn set_up_topology(&self) -> Result<(), Error> {
        let t = &self.topology;
        for (config, what) in [
            (tasks_stream(t), "create the tasks stream"),
            (events_stream(t), "create the events stream"),
            (dlq_stream(t), "create the dead-letter stream"),
        ] {
            self.js
                .create_or_update_stream(config)
                .await
                .map_err(nats(what))?;
        }
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

    /// The durable pull consumer every worker of `queue` shares for the tasks at `priority`.
    /// The levels' filters are disjoint subjects, as a work-queue stream requires.
    pub async fn queue_consumer(
        &self,
        queue: &str,
        priority: Priority,
    ) -> Result<PullConsumer, Error> {
        let stream = self.stream(TASKS_STREAM).await?;
        let name = queue_consumer(queue, priority);
        // Bringing a consumer up to date sends its whole configuration: a paused level's
        // `pause_until` goes with it, so that what an operator paused (`Bus::pause_queue`)
        // stays paused in the stored configuration whatever a starting worker sends.
        let pause_until = match stream.consumer_info(&name).await {
            Ok(info) if info.paused => info.config.pause_until,
            _ => None,
        };
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name),
                description: Some(format!("workers of queue {queue}, {priority} priority")),
                filter_subject: task_subject(queue, priority),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.topology.ack_wait,
                max_deliver: -1,
                max_ack_pending: 100_000,
                pause_until,
                ..Default::default()
            })
            .await
            .map_err(nats("create a queue consumer"))
    }

    /// Makes sure the three consumers of `queue` exist before any worker serves it: an
    /// autoscaler reading a queue's backlog from its consumers (KEDA's `nats-jetstream` trigger)
    /// then sees the tasks of a queue no worker has taken from yet, and can start the first
    /// worker. The gateway calls it at start for the queues it is configured with (never for a
    /// name a request makes up: each consumer is a replicated group in NATS). A failure is
    /// logged; the queue then gets its consumers when a worker first serves it.
    pub async fn ensure_queue_consumers(&self, queue: &str) {
        for priority in Priority::ALL {
            if let Err(e) = self.queue_consumer(queue, priority).await {
                tracing::warn!(queue, error = %e, "cannot create the queue's consumers yet");
                return;
            }
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

    /// Deletes the consumer earlier recorders read callbacks from, if it is there (they are
    /// recorded with the projection now): left alone, it would keep a position nobody moves.
    pub async fn retire_callbacks_consumer(&self) -> Result<(), Error> {
        let stream = self.events_stream().await?;
        match stream.delete_consumer(RETIRED_CALLBACKS_CONSUMER).await {
            Ok(_) => {
                tracing::info!(
                    consumer = RETIRED_CALLBACKS_CONSUMER,
                    "deleted a consumer recorders no longer use"
                );
                Ok(())
            }
            Err(e)
                if matches!(e.kind(), stream::ConsumerErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND) =>
            {
                Ok(())
            }
            Err(e) => Err(nats("delete the retired callbacks consumer")(e)),
        }
    }
}

/// Tasks waiting for a worker: a work queue (a message leaves once a worker acknowledges it),
/// one subject per queue and level, with the delayed tasks' schedules beside them.
fn tasks_stream(t: &Topology) -> stream::Config {
    stream::Config {
        name: TASKS_STREAM.into(),
        description: Some("Wharf tasks waiting for a worker, one subject per queue".into()),
        subjects: vec![TASKS_SUBJECTS.into(), SCHEDULES_SUBJECTS.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: t.replicas,
        duplicate_window: t.duplicate_window,
        allow_message_schedules: true,
        ..Default::default()
    }
}

/// Every task's history, one subject per task, kept `events_max_age`; each event is
/// republished on the live subjects the gateway's followers listen to.
fn events_stream(t: &Topology) -> stream::Config {
    stream::Config {
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
    }
}

/// Dead letters, one message per task (a letter written again for the same task replaces it).
fn dlq_stream(t: &Topology) -> stream::Config {
    stream::Config {
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
    }
}
