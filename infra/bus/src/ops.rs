//! What the operations routes show of the queues: backlogs from consumers and streams.

use futures::{StreamExt, TryStreamExt};
use wharf_contract::{
    Priority, QueueLevel, RECORDER_CONSUMER, TASKS_STREAM, TASKS_SUBJECTS, parse_queue_consumer,
    parse_task_subject, queue_consumer, task_subject,
};

use crate::{Bus, Error, nats};

impl Bus {
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
            let (waiting, in_flight, paused) =
                match stream.consumer_info(queue_consumer(queue, priority)).await {
                    Ok(info) => (info.num_pending, info.num_ack_pending as u64, info.paused),
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
                        (n, 0, false)
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
                paused,
                oldest_age_secs: oldest
                    .map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1000.0),
            });
        }
        Ok(levels)
    }

    /// Pauses `queue`: its three consumers stop handing out tasks (JetStream's consumer pause)
    /// until [`Bus::resume_queue`]. Submissions are still accepted and wait; tasks already
    /// taken run to their end. Creates the consumers if no worker ever served the queue, so
    /// that a queue can be paused before its first worker starts.
    pub async fn pause_queue(&self, queue: &str) -> Result<(), Error> {
        let stream = self.stream(TASKS_STREAM).await?;
        for priority in Priority::ALL {
            self.queue_consumer(queue, priority).await?;
            stream
                .pause_consumer(&queue_consumer(queue, priority), paused_until())
                .await
                .map_err(nats("pause a queue consumer"))?;
        }
        Ok(())
    }

    /// Resumes a paused `queue`: its consumers hand out tasks again at once.
    pub async fn resume_queue(&self, queue: &str) -> Result<(), Error> {
        let stream = self.stream(TASKS_STREAM).await?;
        for priority in Priority::ALL {
            let name = queue_consumer(queue, priority);
            match stream.consumer_info(&name).await {
                Ok(_) => {}
                // No consumer: nothing paused this level.
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(nats("read a queue consumer")(e)),
            }
            stream
                .resume_consumer(&name)
                .await
                .map_err(nats("resume a queue consumer"))?;
        }
        Ok(())
    }
}

/// A pause lasts until it is lifted: JetStream pauses a consumer until a time, so the time is
/// one no deployment will reach.
fn paused_until() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(32_503_680_000) // 3000-01-01
        .expect("a valid timestamp")
}
