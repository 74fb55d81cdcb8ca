//! Taking tasks from one queue: its three levels (see `wharf_contract::Priority`), which of them
//! a free slot goes to, and the pull requests that wait for tasks when none has any.
//!
//! Each level is a consumer of its own. When slots are free, the worker asks the levels for
//! tasks without waiting (a "sweep"): the [`Picker`] shares the free slots out, every level
//! asked at once; a level that had fewer tasks than asked is empty, and its share goes to the
//! others in a further round. When every level is empty, the worker leaves a waiting pull
//! request on each and starts whatever arrives.
//!
//! Those requests together may bring more tasks than there are free slots (each asks for as
//! many as are free, since the worker cannot know which level the next task comes on). A task
//! that arrives with no slot free keeps its lease with in-progress acks and takes the next slot
//! that frees. That can only happen to tasks that arrive on an idle worker at the same moment,
//! and never to more than twice its free slots.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use futures::stream::{self, BoxStream, SelectAll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wharf_bus::{Delivery, Message, PullConsumer};
use wharf_contract::Priority;

use crate::{Shared, run};

const LEVELS: usize = Priority::ALL.len();
const NORMAL: usize = Priority::Normal as usize;
const LOW: usize = Priority::Low as usize;

/// While normal tasks wait, at most this many slots in a row go to other levels.
const NORMAL_AFTER: u32 = 3;
/// While low tasks wait, at most this many slots in a row go to other levels.
const LOW_AFTER: u32 = 9;

/// A level found empty is asked again after this long (or as soon as it is waited on). Asking
/// costs nats-server a request per level and sweep, so a worker saturated by one level does not
/// ask the empty ones at every slot that frees.
const RECHECK_EMPTY: Duration = Duration::from_millis(10);

/// How long one waiting pull request lasts.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// How long a fetch (a pull request that does not wait) may go unanswered. The server answers
/// one at once, with tasks or with "none left"; no answer means the request was lost with a
/// server that died (it was still in a socket buffer, or read and not yet answered), and none
/// will ever come. Waiting on it unbounded froze the queue's loop for good: no task was taken
/// again after a nats-server crash under load.
const FETCH_DEADLINE: Duration = Duration::from_secs(5);
/// The most tasks one pull request asks for.
const MAX_BATCH: usize = 256;

/// Decides which level each free slot goes to: the highest level with tasks waiting, except
/// that a waiting normal task gets a slot after at most [`NORMAL_AFTER`] slots went elsewhere,
/// and a waiting low task after at most [`LOW_AFTER`]. Under a backlog on every level this gives
/// high about 65 %, normal 25 % and low 10 % of the slots; a level with nothing waiting gives its
/// share to the others.
#[derive(Debug, Clone, Default)]
pub(crate) struct Picker {
    /// Per level: slots that went to other levels while it had tasks waiting.
    passed_over: [u32; LEVELS],
}

impl Picker {
    /// The level the next slot goes to, given which levels have tasks `waiting`.
    pub(crate) fn pick(&mut self, waiting: [bool; LEVELS]) -> Option<usize> {
        let level = if waiting[LOW] && self.passed_over[LOW] >= LOW_AFTER {
            LOW
        } else if waiting[NORMAL] && self.passed_over[NORMAL] >= NORMAL_AFTER {
            NORMAL
        } else {
            waiting.iter().position(|w| *w)?
        };
        for (l, passed) in self.passed_over.iter_mut().enumerate() {
            *passed = if l == level || !waiting[l] {
                0
            } else {
                *passed + 1
            };
        }
        Some(level)
    }

    /// How many of `slots` each level gets if every level in `waiting` has enough tasks.
    fn plan(&mut self, slots: usize, waiting: [bool; LEVELS]) -> [usize; LEVELS] {
        let mut plan = [0; LEVELS];
        for _ in 0..slots {
            match self.pick(waiting) {
                Some(l) => plan[l] += 1,
                None => break,
            }
        }
        plan
    }
}

/// What one waiting pull request yields: the tasks it brings, then its end. Each is handled as
/// it comes and never stored, so the size of the task variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Polled {
    Task(Result<Message, async_nats::Error>),
    Ended(usize),
}

/// Takes tasks from the levels of `queue`, never more than there are free slots (but see the
/// module's note on waiting requests), and runs each in a task of its own.
pub(crate) async fn consume(
    queue: String,
    levels: [PullConsumer; LEVELS],
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let waiting_for_slots = TaskTracker::new();
    let in_flight = metrics::gauge!("wharf_worker_tasks_in_flight", "queue" => queue.clone());
    let start = |message: Message, permit: Option<OwnedSemaphorePermit>| {
        let permit = permit.or_else(|| slots.clone().try_acquire_owned().ok());
        let shared = shared.clone();
        match permit {
            Some(permit) => {
                run::spawn(shared, message, run::Slot::take(permit, in_flight.clone()));
            }
            None => {
                tracing::debug!(queue = %queue, "a task arrived with every slot taken; it waits for one");
                waiting_for_slots.spawn(wait_for_slot(
                    shared,
                    slots.clone(),
                    shutdown.clone(),
                    message,
                    in_flight.clone(),
                ));
            }
        }
    };
    let mut taker = Taker::new(&queue, &levels);
    loop {
        let unpolled = taker.polled.iter().any(|p| !p);
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(p) = taker.polls.next(), if !taker.polls.is_empty() => match p {
                Polled::Task(Ok(message)) => start(message, None),
                Polled::Task(Err(e)) => {
                    tracing::warn!(queue = %queue, error = %e, "error while waiting for tasks");
                }
                Polled::Ended(level) => taker.ended(level),
            },
            permit = slots.clone().acquire_owned(), if unpolled => {
                let mut permits = vec![permit.expect("the semaphore is never closed")];
                while permits.len() < MAX_BATCH {
                    match slots.clone().try_acquire_owned() {
                        Ok(p) => permits.push(p),
                        Err(_) => break,
                    }
                }
                if taker.take(permits, &start).await {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
    }
    // Tasks already on their way to this worker, until its pull requests expire, go straight
    // back, as do the ones that were waiting for a slot.
    while let Ok(Some(p)) =
        tokio::time::timeout(PULL_EXPIRES + Duration::from_secs(1), taker.polls.next()).await
    {
        if let Polled::Task(Ok(m)) = p {
            hand_back(&shared, &m).await;
        }
    }
    waiting_for_slots.close();
    waiting_for_slots.wait().await;
}

/// How one queue's levels are being asked for tasks: the rotation of the priority rule, the
/// waiting pull requests, and the levels found empty a moment ago.
struct Taker<'a> {
    queue: &'a str,
    levels: &'a [PullConsumer; LEVELS],
    picker: Picker,
    /// The waiting pull requests, as streams of what they bring.
    polls: SelectAll<BoxStream<'static, Polled>>,
    /// Levels with a waiting pull request.
    polled: [bool; LEVELS],
    /// When each level was last found empty (asked again after [`RECHECK_EMPTY`]).
    found_empty: [Option<Instant>; LEVELS],
}

impl<'a> Taker<'a> {
    fn new(queue: &'a str, levels: &'a [PullConsumer; LEVELS]) -> Taker<'a> {
        Taker {
            queue,
            levels,
            picker: Picker::default(),
            polls: SelectAll::new(),
            polled: [false; LEVELS],
            found_empty: [None; LEVELS],
        }
    }

    /// The waiting pull request on `level` is done (full or expired).
    fn ended(&mut self, level: usize) {
        self.polled[level] = false;
        self.found_empty[level] = None;
    }

    /// Fills the free slots (one permit each) from the levels without waiting; leaves a
    /// waiting pull request on each level without one when there are fewer tasks than slots.
    /// True when NATS failed and the caller should pause.
    async fn take(
        &mut self,
        mut permits: Vec<OwnedSemaphorePermit>,
        start: &impl Fn(Message, Option<OwnedSemaphorePermit>),
    ) -> bool {
        let now = Instant::now();
        let ask: [bool; LEVELS] = std::array::from_fn(|l| {
            !self.polled[l] && self.found_empty[l].is_none_or(|t| now - t >= RECHECK_EMPTY)
        });
        let swept = sweep(self.levels, &mut self.picker, ask, permits.len()).await;
        for l in (0..LEVELS).filter(|l| ask[*l]) {
            self.found_empty[l] = swept.short[l].then_some(now);
        }
        for message in swept.tasks {
            start(message, permits.pop());
        }
        let mut failed = swept.failed;
        if !permits.is_empty() {
            // Every level asked came up short, and the others were found empty just before:
            // wait on each for what comes next.
            let unpolled = self.polled.map(|p| !p);
            for (level, consumer) in self.levels.iter().enumerate().filter(|(l, _)| unpolled[*l]) {
                match wait_on(consumer, level, permits.len()).await {
                    Ok(p) => {
                        self.polls.push(p);
                        self.polled[level] = true;
                    }
                    Err(e) => {
                        tracing::warn!(queue = %self.queue, error = %e, "cannot pull tasks");
                        failed = true;
                    }
                }
            }
        }
        failed
    }
}

/// What a sweep took, highest level first, and which levels had fewer tasks than asked.
struct Swept {
    tasks: Vec<Message>,
    short: [bool; LEVELS],
    failed: bool,
}

/// Asks the levels in `waiting` for up to `free` tasks in all, shared out by `picker`, without
/// waiting. Returns fewer than `free` only when every level asked had fewer than its share.
async fn sweep(
    levels: &[PullConsumer; LEVELS],
    picker: &mut Picker,
    mut waiting: [bool; LEVELS],
    free: usize,
) -> Swept {
    let mut taken: [Vec<Message>; LEVELS] = Default::default();
    let mut failed = false;
    let mut short = [false; LEVELS];
    let mut want = free;
    while want > 0 {
        let plan = picker.plan(want, waiting);
        if plan == [0; LEVELS] {
            break;
        }
        let mut asks = Vec::new();
        for (level, consumer) in levels.iter().enumerate() {
            if plan[level] > 0 {
                asks.push(fetch(consumer, level, plan[level]));
            }
        }
        for (level, asked, got, error) in futures::future::join_all(asks).await {
            // What came before an error is delivered and leased to this worker: run it.
            if let Some(e) = error {
                tracing::warn!(error = %e, "cannot take tasks");
                failed = true;
            }
            if got.len() < asked {
                waiting[level] = false;
                short[level] = true;
            }
            want -= got.len();
            taken[level].extend(got);
        }
    }
    let [high, normal, low] = taken;
    let mut tasks = high;
    tasks.extend(normal);
    tasks.extend(low);
    Swept {
        tasks,
        short,
        failed,
    }
}

/// Up to `n` tasks waiting on `level`, without waiting for more: the level, `n`, the tasks
/// that came, and the error that ended the fetch early, if one did (no answer within
/// [`FETCH_DEADLINE`] among them).
async fn fetch(
    consumer: &PullConsumer,
    level: usize,
    n: usize,
) -> (usize, usize, Vec<Message>, Option<async_nats::Error>) {
    let mut got = Vec::with_capacity(n);
    let fetched = tokio::time::timeout(FETCH_DEADLINE, async {
        let mut batch = consumer.fetch().max_messages(n).messages().await?;
        while let Some(m) = batch.next().await {
            got.push(m?);
        }
        Ok::<_, async_nats::Error>(())
    })
    .await;
    let error = match fetched {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(
            format!(
                "a pull request got no answer within {FETCH_DEADLINE:?} (lost with a server that \
                 went down?); asking again"
            )
            .into(),
        ),
    };
    (level, n, got, error)
}

/// A pull request on `level` for up to `n` tasks, as a stream that ends with
/// [`Polled::Ended`] when the request is done (full or expired).
async fn wait_on(
    consumer: &PullConsumer,
    level: usize,
    n: usize,
) -> Result<BoxStream<'static, Polled>, async_nats::Error> {
    let batch = consumer
        .batch()
        .max_messages(n)
        .expires(PULL_EXPIRES)
        .messages()
        .await?;
    Ok(batch
        .map(Polled::Task)
        .chain(stream::once(async move { Polled::Ended(level) }))
        .boxed())
}

/// A task delivered while every slot was taken: keeps its lease until a slot frees (it gets the
/// next one: the semaphore serves waiters in order), or goes back at shutdown.
async fn wait_for_slot(
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    message: Message,
    in_flight: metrics::Gauge,
) {
    let slot = slots.acquire_owned();
    tokio::pin!(slot);
    let mut beat = tokio::time::interval(shared.heartbeat);
    beat.tick().await;
    let permit = loop {
        tokio::select! {
            p = &mut slot => break p.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => {
                hand_back(&shared, &message).await;
                return;
            }
            _ = beat.tick() => {
                let _ = Delivery::KeepAlive.settle(&message).await;
            }
        }
    };
    // Run outside the tracker: shutdown waits for waiting tasks, not for running ones.
    run::spawn(shared, message, run::Slot::take(permit, in_flight));
}

/// Gives a task that never started here back to its level, without using an attempt.
async fn hand_back(shared: &Shared, message: &Message) {
    let used = run::attempt_of(message) - 1;
    if let Err(e) = shared.bus.hand_back(message, used).await {
        tracing::warn!(error = %e, "could not hand a task back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(waiting: [bool; LEVELS], slots: usize) -> [usize; LEVELS] {
        Picker::default().plan(slots, waiting)
    }

    #[test]
    fn under_a_backlog_on_every_level_high_gets_most_and_none_starves() {
        // Low every 10th slot, normal every 4th unless low's turn fell on it, high the rest.
        let [high, normal, low] = shares([true; 3], 1_000);
        assert_eq!(low, 100);
        assert!((240..=250).contains(&normal), "normal {normal}");
        assert!(high >= 650, "high {high}");
        assert_eq!(shares([true, true, false], 1_000), [750, 250, 0]);
        assert_eq!(shares([true, false, true], 1_000), [900, 0, 100]);
        assert_eq!(shares([false, true, true], 1_000), [0, 900, 100]);
    }

    #[test]
    fn a_level_alone_gets_every_slot() {
        for l in 0..LEVELS {
            let mut waiting = [false; LEVELS];
            waiting[l] = true;
            assert_eq!(shares(waiting, 10)[l], 10);
        }
        assert_eq!(shares([false; LEVELS], 10), [0; LEVELS]);
    }

    #[test]
    fn a_waiting_task_is_passed_over_a_bounded_number_of_times() {
        // Whatever the pattern of backlogs, a level that keeps tasks waiting gets a slot
        // within its bound.
        let mut picker = Picker::default();
        let mut passed = [0u32; LEVELS];
        for i in 0u32..10_000 {
            let waiting = [i % 3 != 0, true, true];
            let l = picker.pick(waiting).unwrap();
            for (x, p) in passed.iter_mut().enumerate() {
                *p = if x == l { 0 } else { *p + 1 };
            }
            assert!(
                passed[NORMAL] <= NORMAL_AFTER,
                "normal passed over {passed:?}"
            );
            assert!(passed[LOW] <= LOW_AFTER, "low passed over {passed:?}");
        }
    }

    #[test]
    fn a_plan_continues_the_rotation_of_the_last_one() {
        let mut picker = Picker::default();
        let a = picker.plan(5, [true; 3]);
        let b = picker.plan(5, [true; 3]);
        let sum: Vec<usize> = a.iter().zip(b).map(|(x, y)| x + y).collect();
        assert_eq!(sum, [7, 2, 1]);
    }
}
