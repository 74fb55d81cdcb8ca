//! The recorder: projects the EVENTS stream into the database.
//!
//! It reads every task event through one durable pull consumer, applies what is ready in one
//! transaction (`wharf_store::Store::record_batch`, idempotent and order-tolerant: the events,
//! the task rows, and the deliveries the tasks' callbacks ask for), and acknowledges the
//! messages only after the commit. A crash between the two re-applies a batch, which changes
//! nothing; two recorders can share the consumer. It never publishes and never calls MCP.
//! Beside the projection it delivers task callbacks (`callbacks`) and keeps the history's
//! upkeep (`upkeep`).

use std::collections::HashSet;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use wharf_bus::{Bus, Delivery, Message, decode_event};
use wharf_contract::event::DecodeError;
use wharf_store::Store;

pub mod callbacks;
mod upkeep;
pub use callbacks::CallbackSettings;
pub use upkeep::HistorySettings;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bus(#[from] wharf_bus::Error),
    #[error(transparent)]
    Store(#[from] wharf_store::Error),
}

/// Most events applied in one transaction.
const MAX_BATCH: usize = 2000;
/// How long a batch that is not full waits for more events before it is written. Under light
/// load events arrive a few at a time; writing each handful as its own transaction (one commit
/// flushed to disk, one round of acknowledgements) cost more CPU than the events themselves.
/// Under heavy load batches fill before this and it never applies. It bounds the history lag
/// it adds.
const LINGER: Duration = Duration::from_millis(10);
/// How long one pull request for events lasts before the client makes another.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// During shutdown, stop once no event arrived for this long.
const DRAIN_IDLE: Duration = Duration::from_millis(200);

pub struct Recorder {
    bus: Bus,
    store: Store,
    history: HistorySettings,
    callbacks: CallbackSettings,
    planner: callbacks::Planner,
    /// Tells the callback dispatcher that a batch recorded deliveries.
    recorded_deliveries: std::sync::Arc<tokio::sync::Notify>,
}

impl Recorder {
    pub fn new(bus: Bus, store: Store) -> Recorder {
        wharf_telemetry::metrics::install();
        let callbacks = CallbackSettings::default();
        Recorder {
            planner: callbacks::Planner::new(bus.clone(), callbacks.retry_for),
            bus,
            store,
            history: HistorySettings::default(),
            callbacks,
            recorded_deliveries: std::sync::Arc::default(),
        }
    }

    /// Where callbacks may go and how long they are retried (`[callbacks]`).
    pub fn with_callbacks(mut self, callbacks: CallbackSettings) -> Recorder {
        self.planner = callbacks::Planner::new(self.bus.clone(), callbacks.retry_for);
        self.callbacks = callbacks;
        self
    }

    /// The history's retention and upkeep (`[history]`); the defaults otherwise.
    pub fn with_history(mut self, history: HistorySettings) -> Recorder {
        self.history = history;
        self
    }

    /// Projects events until `shutdown` fires. Database errors are retried with backoff (the
    /// batch stays unacknowledged meanwhile), so a database restart loses nothing.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        self.bus.ensure_topology().await?;
        let consumer = self.bus.recorder_consumer().await?;
        if let Err(e) = self.bus.retire_callbacks_consumer().await {
            tracing::warn!(error = %e, "cannot delete the consumer recorders no longer use");
        }
        upkeep::days_ahead(&self.store, &self.history.policy).await;
        let upkeep = tokio::spawn(upkeep::run(
            self.store.clone(),
            self.history,
            shutdown.child_token(),
        ));
        let _stop_upkeep = AbortOnDrop(upkeep);
        let callbacks = tokio::spawn(callbacks::run(
            self.store.clone(),
            self.callbacks.clone(),
            self.recorded_deliveries.clone(),
            shutdown.child_token(),
        ));
        let _stop_callbacks = AbortOnDrop(callbacks);
        tracing::info!("recorder running");
        loop {
            // Pull in batches as large as a transaction: fewer, larger commits. Each pull
            // request lasts PULL_EXPIRES: the client asks again that much (and 5 s) after a
            // request that went unanswered, as one lost with a restarting nats-server is
            // (its default, 30 s, left the history that much longer behind).
            let messages = match consumer
                .stream()
                .max_messages_per_batch(MAX_BATCH)
                .expires(PULL_EXPIRES)
                .heartbeat(PULL_EXPIRES / 4)
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read events; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = shutdown.cancelled() => return Ok(()),
                    }
                }
            };
            if self
                .project(messages.ready_chunks(MAX_BATCH), &shutdown)
                .await
                == Ended::Stopped
            {
                return Ok(());
            }
        }
    }

    /// Applies batches as they come until the stream ends (then it is opened again) or the
    /// recorder stops.
    async fn project<S, E>(&self, chunks: S, shutdown: &CancellationToken) -> Ended
    where
        S: Stream<Item = Vec<Result<Message, E>>> + Unpin,
        E: std::fmt::Display,
    {
        let mut batches = Batches::new(chunks);
        loop {
            match batches.next(shutdown).await {
                Next::Batch(batch) => {
                    if !self.apply(batch, shutdown).await {
                        return Ended::Stopped;
                    }
                }
                Next::End(ended) => return ended,
            }
        }
    }

    /// Records a batch, then settles its messages; false when shutdown came before it was
    /// stored (it stays unacknowledged, for the next recorder).
    async fn apply<E: std::fmt::Display>(
        &self,
        batch: Vec<Result<Message, E>>,
        shutdown: &CancellationToken,
    ) -> bool {
        let (events, acks, spans) = decode(batch).await;
        let envelopes: Vec<_> = acks.iter().map(callbacks::Envelope::of).collect();
        let plan = self.planner.plan(&events, &envelopes).await;
        let writing = std::time::Instant::now();
        let Some(refused) = self.write(&events, &plan, shutdown).await else {
            return false;
        };
        measure_batch(&events, writing.elapsed());
        warn_of_ids_ahead(&events, chrono::Utc::now().timestamp_millis());
        drop(spans);
        if !plan.deliveries.is_empty() {
            self.recorded_deliveries.notify_one();
        }
        for (m, (seq, _)) in acks.iter().zip(&events) {
            // Applying an event twice changes nothing: no need to wait for the server.
            let ack = if refused.contains(seq) {
                Delivery::GiveUp
            } else if plan.unsure.contains(seq) {
                // Its task's callback could not be read: it comes again (to be recorded
                // again, a no-op) once it can be.
                Delivery::RetryAfter(wharf_bus::RETRY_SOON)
            } else {
                Delivery::DoneUnconfirmed
            }
            .settle(m)
            .await;
            if let Err(e) = ack {
                tracing::warn!(error = %e, "could not acknowledge an event; it will be applied again");
            }
        }
        true
    }

    /// Writes a batch, retrying while the database cannot take it. Returns the sequences of
    /// events the database refuses as data even alone (they would stop the projection forever),
    /// or `None` when shutdown came first.
    async fn write(
        &self,
        events: &[(u64, wharf_contract::TaskEvent)],
        plan: &callbacks::Plan,
        shutdown: &CancellationToken,
    ) -> Option<HashSet<u64>> {
        let mut backoff = Duration::from_millis(100);
        for failures in 1.. {
            let e = match self.store.record_batch(events, &plan.deliveries).await {
                Ok(()) => return Some(HashSet::new()),
                Err(e) => e,
            };
            tracing::warn!(error = %e, events = events.len(), "cannot record events; retrying");
            if failures >= 3
                && e.is_refusal()
                && let Some(refused) = self.isolate(events, plan).await
            {
                return Some(refused);
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        unreachable!("the loop only ends by returning")
    }

    /// Records events one at a time to find the ones the database refuses; `None` when one
    /// failed for another reason (then the whole batch is retried, nothing is dropped).
    async fn isolate(
        &self,
        events: &[(u64, wharf_contract::TaskEvent)],
        plan: &callbacks::Plan,
    ) -> Option<HashSet<u64>> {
        let mut refused = HashSet::new();
        for one in events.chunks(1) {
            let seq = one[0].0;
            let deliveries: Vec<_> = plan
                .deliveries
                .iter()
                .filter(|d| d.seq == seq)
                .cloned()
                .collect();
            match self.store.record_batch(one, &deliveries).await {
                Ok(()) => {}
                Err(e) if e.is_refusal() => {
                    let (seq, event) = &one[0];
                    tracing::error!(seq, task_id = %event.task_id, kind = event.kind_name(), error = %e,
                        "the database refuses this event; it is left out of the projection");
                    refused.insert(*seq);
                }
                Err(_) => return None,
            }
        }
        Some(refused)
    }
}

/// Stops the upkeep when the projection ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How [`Recorder::project`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The message stream ended: open it again.
    Reconnect,
    /// The recorder is stopping.
    Stopped,
}

/// Shapes the chunks of messages the client hands over into the batches the recorder writes:
/// a batch that is not full lingers up to [`LINGER`] for more, none holds more than
/// [`MAX_BATCH`] (the rest starts the next), and nothing is dropped or reordered.
struct Batches<S, T> {
    chunks: S,
    /// What a lingering batch gathered past [`MAX_BATCH`]: the start of the next batch.
    carry: Vec<T>,
}

/// What [`Batches::next`] gives.
#[derive(Debug, PartialEq, Eq)]
enum Next<T> {
    Batch(Vec<T>),
    End(Ended),
}

impl<S, T> Batches<S, T>
where
    S: Stream<Item = Vec<T>> + Unpin,
{
    fn new(chunks: S) -> Batches<S, T> {
        Batches {
            chunks,
            carry: Vec::new(),
        }
    }

    /// The next batch to write. Once shutdown is asked for, what has already arrived (the
    /// client prefetches) still comes out, so it is not left waiting for its ack deadline;
    /// then, after [`DRAIN_IDLE`] without any, [`Ended::Stopped`].
    async fn next(&mut self, shutdown: &CancellationToken) -> Next<T> {
        let batch = if !self.carry.is_empty() {
            Some(std::mem::take(&mut self.carry))
        } else {
            // As long as it takes until shutdown; from then on, only DRAIN_IDLE.
            tokio::select! {
                b = self.chunks.next() => b,
                () = shutdown.cancelled() => {
                    match tokio::time::timeout(DRAIN_IDLE, self.chunks.next()).await {
                        Ok(b) => b,
                        Err(_) => return Next::End(Ended::Stopped),
                    }
                }
            }
        };
        let Some(mut batch) = batch else {
            return Next::End(Ended::Reconnect);
        };
        if batch.len() < MAX_BATCH && !shutdown.is_cancelled() {
            self.linger(&mut batch, shutdown).await;
            if batch.len() > MAX_BATCH {
                self.carry = batch.split_off(MAX_BATCH);
            }
        }
        Next::Batch(batch)
    }

    /// Waits up to [`LINGER`] for more to join a batch that is not full, unless shutdown
    /// comes first.
    async fn linger(&mut self, batch: &mut Vec<T>, shutdown: &CancellationToken) {
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            tokio::select! {
                more = self.chunks.next() => match more {
                    Some(more) => batch.extend(more),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = shutdown.cancelled() => break,
            }
        }
    }
}

/// The events of a batch with their messages (and, when spans are exported, a span per event
/// in its task's trace, ended when the batch is committed). An event of a newer wire version
/// is left for a newer recorder; one that cannot be read is dropped.
async fn decode<E: std::fmt::Display>(
    batch: Vec<Result<Message, E>>,
) -> (
    Vec<(u64, wharf_contract::TaskEvent)>,
    Vec<Message>,
    Vec<tracing::Span>,
) {
    let mut events = Vec::with_capacity(batch.len());
    let mut acks = Vec::with_capacity(batch.len());
    let mut spans = Vec::new();
    for message in batch {
        let m = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "error while reading events");
                continue;
            }
        };
        match decode_event(&m) {
            Ok(e) => {
                if wharf_telemetry::traces::exporting() {
                    spans.push(record_span(&m, &e.1));
                }
                events.push(e);
                acks.push(m);
            }
            Err(wharf_bus::Error::Decode {
                source: DecodeError::Version(v),
                ..
            }) => {
                tracing::warn!(
                    version = v,
                    "an event of a newer wire version; not recording it"
                );
                let _ = Delivery::RetryAfter(Duration::from_secs(30))
                    .settle(&m)
                    .await;
            }
            Err(e) => {
                tracing::error!(error = %e, "dropping an unreadable event");
                let _ = Delivery::GiveUp.settle(&m).await;
            }
        }
    }
    (events, acks, spans)
}

/// Metrics of a committed batch: its size, how long it took, and how far behind the newest of its
/// events the projection now is.
fn measure_batch(events: &[(u64, wharf_contract::TaskEvent)], took: Duration) {
    if events.is_empty() {
        return;
    }
    metrics::counter!("wharf_recorder_events_total").increment(events.len() as u64);
    metrics::histogram!("wharf_recorder_batch_duration_seconds").record(took.as_secs_f64());
    if let Some(newest) = events.iter().map(|(_, e)| e.at).max() {
        let lag = (chrono::Utc::now() - newest)
            .num_microseconds()
            .unwrap_or(0)
            .max(0);
        metrics::gauge!("wharf_recorder_lag_seconds").set(lag as f64 / 1e6);
    }
}

/// Warns, at most once a minute, of a task whose id (a UUIDv7: its submission time on the
/// clock of the gateway that took it) is further ahead of this recorder's clock than the skew a
/// list's first page allows ([`wharf_store::CLOCK_SKEW_MS`]): such a task is missing from the
/// lists until the clocks meet, so a gateway's clock needs fixing.
fn warn_of_ids_ahead(events: &[(u64, wharf_contract::TaskEvent)], now_ms: i64) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST_WARNED_MS: AtomicI64 = AtomicI64::new(i64::MIN);
    let Some(ahead) = events
        .iter()
        .map(|(_, e)| ms_ahead(e.task_id, now_ms))
        .max()
        .filter(|&ms| ms > wharf_store::CLOCK_SKEW_MS)
    else {
        return;
    };
    let last = LAST_WARNED_MS.load(Ordering::Relaxed);
    if now_ms.saturating_sub(last) >= 60_000
        && LAST_WARNED_MS
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            ahead_secs = ahead / 1000,
            "a task id is ahead of this recorder's clock by more than an hour: a gateway's \
             clock is wrong, and lists will leave such tasks out until the clocks meet"
        );
    }
}

/// How many milliseconds a UUIDv7's time is ahead of `now_ms` (0 for another kind of id).
fn ms_ahead(id: uuid::Uuid, now_ms: i64) -> i64 {
    id.get_timestamp().map_or(0, |t| {
        let (secs, nanos) = t.to_unix();
        secs as i64 * 1000 + i64::from(nanos / 1_000_000) - now_ms
    })
}

/// The span of one event's projection, a child of the span that published the event.
fn record_span(m: &wharf_bus::Message, event: &wharf_contract::TaskEvent) -> tracing::Span {
    let span = tracing::info_span!(
        "record",
        otel.name = %format!("record {}", event.kind_name()),
        otel.kind = "consumer",
        task_id = %event.task_id,
    );
    // A `submitted` event comes without a `traceparent` when its gateway exports no spans; the
    // task it carries names the trace.
    let trace_id = match &event.kind {
        wharf_contract::EventKind::Submitted { task } => task.trace_id.as_deref(),
        _ => None,
    };
    let traceparent = wharf_bus::traceparent_of(&m.message);
    if let Some(parent) = wharf_telemetry::TraceContext::carried(traceparent.as_deref(), trace_id) {
        wharf_telemetry::traces::set_parent(&span, &parent);
    }
    span
}

#[cfg(test)]
mod tests {
    use futures::channel::mpsc;

    use super::*;

    #[test]
    fn a_task_id_is_read_as_its_minting_time() {
        let now = chrono::Utc::now();
        let ahead = now + chrono::Duration::hours(2);
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            ahead.timestamp() as u64,
            ahead.timestamp_subsec_nanos(),
        );
        let id = uuid::Uuid::new_v7(ts);
        let ms = ms_ahead(id, now.timestamp_millis());
        assert!((7_199_000..=7_200_000).contains(&ms), "{ms}");
        assert!(ms > wharf_store::CLOCK_SKEW_MS);
        assert!(ms_ahead(uuid::Uuid::now_v7(), now.timestamp_millis()) < 1_000);
    }

    type Feed = mpsc::UnboundedSender<Vec<u32>>;

    /// A stream of chunks fed by the test, and the batcher reading it.
    fn batches() -> (Feed, Batches<mpsc::UnboundedReceiver<Vec<u32>>, u32>) {
        let (tx, rx) = mpsc::unbounded();
        (tx, Batches::new(rx))
    }

    fn batch(range: std::ops::RangeInclusive<u32>) -> Next<u32> {
        Next::Batch(range.collect())
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_within_the_linger_make_one_batch_and_later_ones_the_next() {
        let (tx, mut batches) = batches();
        let stop = CancellationToken::new();
        tx.unbounded_send(vec![1]).unwrap();
        tx.unbounded_send(vec![2, 3]).unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER / 2).await;
            tx.unbounded_send(vec![4]).unwrap();
            tokio::time::sleep(LINGER * 3).await;
            tx.unbounded_send(vec![5]).unwrap();
        });
        assert_eq!(batches.next(&stop).await, batch(1..=4));
        assert_eq!(batches.next(&stop).await, batch(5..=5));
        assert_eq!(batches.next(&stop).await, Next::End(Ended::Reconnect));
    }

    #[tokio::test(start_paused = true)]
    async fn no_batch_passes_the_limit_and_the_rest_starts_the_next_in_order() {
        let (tx, mut batches) = batches();
        let stop = CancellationToken::new();
        let max = MAX_BATCH as u32;
        let half = max * 3 / 4;
        tx.unbounded_send((1..=half).collect()).unwrap();
        tx.unbounded_send((half + 1..=2 * half).collect()).unwrap();
        tx.unbounded_send((2 * half + 1..=3 * half).collect())
            .unwrap();
        drop(tx);
        assert_eq!(batches.next(&stop).await, batch(1..=max));
        assert_eq!(batches.next(&stop).await, batch(max + 1..=2 * max));
        assert_eq!(batches.next(&stop).await, batch(2 * max + 1..=3 * half));
        assert_eq!(batches.next(&stop).await, Next::End(Ended::Reconnect));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_chunk_is_written_without_lingering() {
        let (tx, mut batches) = batches();
        let stop = CancellationToken::new();
        let max = MAX_BATCH as u32;
        tx.unbounded_send((1..=max).collect()).unwrap();
        tx.unbounded_send(vec![max + 1]).unwrap();
        let start = tokio::time::Instant::now();
        assert_eq!(batches.next(&stop).await, batch(1..=max));
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a full batch does not wait"
        );
        assert_eq!(batches.next(&stop).await, batch(max + 1..=max + 1));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_what_arrives_then_stops() {
        let (tx, mut batches) = batches();
        let stop = CancellationToken::new();
        tx.unbounded_send(vec![1, 2]).unwrap();
        let feeder = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(LINGER * 5).await;
                stop.cancel();
                // Already prefetched by the client: still recorded.
                tokio::time::sleep(DRAIN_IDLE / 2).await;
                tx.unbounded_send(vec![3]).unwrap();
                // Past the drain: left for the next recorder.
                tokio::time::sleep(DRAIN_IDLE * 2).await;
                tx.unbounded_send(vec![4]).unwrap();
                tx
            })
        };
        assert_eq!(batches.next(&stop).await, batch(1..=2));
        // Waiting for more when shutdown comes: the wait turns into the drain.
        assert_eq!(batches.next(&stop).await, batch(3..=3));
        assert_eq!(batches.next(&stop).await, Next::End(Ended::Stopped));
        let _tx = feeder.await.unwrap();
    }
}
