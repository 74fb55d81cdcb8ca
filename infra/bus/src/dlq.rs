//! Dead letters: one message per task in `WHARF_DLQ`, stored, listed, read and removed.

use async_nats::jetstream::{message::PublishMessage, stream};
use bytes::Bytes;
use uuid::Uuid;
use wharf_contract::msg_id;
use wharf_contract::{DLQ_STREAM, DLQ_SUBJECTS, DeadLetter, dlq_subject};

use crate::{Bus, Error, nats};

impl Bus {
    /// Stores a dead letter and waits until JetStream has it. Its message id makes a repeat
    /// harmless.
    pub async fn publish_dead_letter(&self, letter: &DeadLetter) -> Result<(), Error> {
        let body = serde_json::to_vec(letter).expect("a dead letter serialises");
        self.js
            .send_publish(
                dlq_subject(letter.task_id),
                PublishMessage::build()
                    .payload(Bytes::from(body))
                    .message_id(msg_id::dead_letter(letter.task_id)),
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
        // A cursor past every sequence names an empty page.
        let Some(mut next) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
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
