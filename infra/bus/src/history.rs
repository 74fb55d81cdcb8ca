//! Reading a task's events back: its whole history by direct gets, the answers derived from it
//! (its tenant, its outcome, whether it ended), and following it live with gap repair.

use std::time::Duration;

use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use uuid::Uuid;
use wharf_contract::{TaskEvent, event_filter, live_event_filter, tenant_of_event_subject};

use crate::{Bus, Error, Message, nats};

impl Bus {
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
        Ok(self
            .first_message(id)
            .await?
            .and_then(|m| tenant_of_event_subject(m.subject.as_str()).map(str::to_owned)))
    }

    /// The first stored event of task `id` (one direct get): its `submitted` event, unless that
    /// one is still being published after the task (see `Bus::submit`).
    pub async fn first_event(&self, id: Uuid) -> Result<Option<TaskEvent>, Error> {
        Ok(self
            .first_message(id)
            .await?
            .and_then(|m| decode_payload(m.subject.as_str(), &m.payload).ok()))
    }

    async fn first_message(
        &self,
        id: Uuid,
    ) -> Result<Option<async_nats::jetstream::message::StreamMessage>, Error> {
        let stream = self.events_stream().await?;
        match stream
            .direct_get_next_for_subject(event_filter(id).as_str(), None)
            .await
        {
            Ok(m) => Ok(Some(m)),
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
    /// direct gets by subject (no consumer is created). A start reported with a later event is
    /// a `started` event of its own here, at that event's sequence.
    pub(crate) async fn events_after(
        &self,
        id: Uuid,
        after: u64,
    ) -> Result<Vec<(u64, Result<TaskEvent, Error>)>, Error> {
        let subject = event_filter(id);
        let stored = self.stored_bodies(id, after).await?;
        Ok(TaskEvent::unfold_all(
            stored
                .into_iter()
                .map(|(seq, body)| (seq, decode_payload(&subject, &body))),
        ))
    }

    /// The bodies of task `id`'s messages with a stream sequence above `after`, as stored (a
    /// start reported with another event not unfolded), in order, read with direct gets by
    /// subject (no consumer is created).
    pub async fn stored_bodies(&self, id: Uuid, after: u64) -> Result<Vec<(u64, Bytes)>, Error> {
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
                    out.push((m.sequence, m.payload));
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
                            let subject = event_filter(s.id);
                            let event = decode_payload(&subject, &m.payload);
                            s.ready.extend(TaskEvent::unfold_all([(seq, event)]));
                            continue;
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
}

/// Decodes an event message into its stream sequence and event.
pub fn decode_event(m: &Message) -> Result<(u64, TaskEvent), Error> {
    let seq = m.info().map(|i| i.stream_sequence).unwrap_or_default();
    Ok((seq, decode_payload(&m.subject, &m.payload)?))
}

pub(crate) fn decode_payload(subject: &str, payload: &[u8]) -> Result<TaskEvent, Error> {
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
