//! From events to deliveries: each event whose task's callback asks for it becomes a delivery
//! row, written in the same transaction as the event's projection (`Store::record_batch`), so a
//! delivery is recorded before its event is acknowledged, and a batch applied twice records
//! nothing twice (a row's key is its event's). Reading the events once, with the projection,
//! replaced a consumer of their own, which took every event of every task through nats-server
//! and the recorder a second time, callback or not (docs/performance.md).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_bus::Bus;
use wharf_contract::callbacks::{delivery_id, start_delivery_id};
use wharf_contract::{CALLBACK_HEADER, Callback, EventKind, NO_CALLBACK, TaskEvent};
use wharf_store::NewDelivery;

/// Tasks whose callback (or lack of one) is remembered; past this, the oldest half is forgotten
/// (a forgotten task's callback is read again from its `submitted` event).
const REMEMBERED: usize = 100_000;

/// Callbacks read from the stream at once for one batch.
const LOOKUPS_AT_ONCE: usize = 32;

/// What a batch of events calls for.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The deliveries to record with the batch.
    pub deliveries: Vec<NewDelivery>,
    /// Events whose task's callback could not be read just now (NATS away): recorded, but to be
    /// delivered again later, when it can be.
    pub unsure: HashSet<u64>,
}

/// What an event's message says besides the event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Envelope<'a> {
    /// The task's tenant, from the subject.
    pub tenant: &'a str,
    /// The publisher said the task has no callback (`wharf_contract::CALLBACK_HEADER`).
    pub no_callback: bool,
}

impl<'a> Envelope<'a> {
    pub fn of(message: &'a wharf_bus::Message) -> Envelope<'a> {
        let said = |h: &async_nats::HeaderMap| {
            h.get(CALLBACK_HEADER)
                .is_some_and(|v| v.as_str() == NO_CALLBACK)
        };
        Envelope {
            tenant: wharf_contract::tenant_of_event_subject(&message.subject).unwrap_or_default(),
            no_callback: message.headers.as_ref().is_some_and(said),
        }
    }
}

/// Turns the events a recorder projects into the deliveries their tasks' callbacks ask for.
pub(crate) struct Planner {
    bus: Bus,
    retry_for: Duration,
    known: Mutex<Callbacks>,
}

impl Planner {
    pub fn new(bus: Bus, retry_for: Duration) -> Planner {
        Planner {
            bus,
            retry_for,
            known: Mutex::new(Callbacks::default()),
        }
    }

    /// The deliveries `events` (in stream order, each with its message's envelope) call for. A
    /// task's callback comes from its `submitted` event: usually one this recorder met before
    /// (in this batch or an earlier one), else read from the stream, unless the event's
    /// publisher said the task has none.
    pub async fn plan(&self, events: &[(u64, TaskEvent)], envelopes: &[Envelope<'_>]) -> Plan {
        let mut missing = HashSet::new();
        {
            let mut known = self.known.lock().expect("not poisoned");
            for ((_, event), envelope) in events.iter().zip(envelopes) {
                match &event.kind {
                    EventKind::Submitted { task } => {
                        known.remember(event.task_id, task.callback.clone());
                    }
                    // No callback asks for these: nothing to look up.
                    EventKind::CancelRequested { .. } => {}
                    _ if known.known(event.task_id).is_some() => {}
                    _ if envelope.no_callback => known.remember(event.task_id, None),
                    _ => {
                        missing.insert(event.task_id);
                    }
                }
            }
        }
        metrics::counter!("wharf_recorder_callback_lookups_total").increment(missing.len() as u64);
        // Several at once: with two recorders sharing the consumer, a task's `submitted`
        // event often went to the other one, and each read is a round trip to NATS that the
        // batch's projection waits for.
        let looked_up: Vec<_> = futures::stream::iter(missing)
            .map(|task| async move { (task, callback_of(&self.bus, task).await) })
            .buffer_unordered(LOOKUPS_AT_ONCE)
            .collect()
            .await;
        let mut unreadable = HashSet::new();
        let mut found = Vec::with_capacity(looked_up.len());
        for (task, callback) in looked_up {
            match callback {
                Ok(callback) => found.push((task, callback)),
                Err(e) => {
                    tracing::warn!(error = %e, task_id = %task, "cannot read a task's callback; its events will come again");
                    unreadable.insert(task);
                }
            }
        }
        let mut known = self.known.lock().expect("not poisoned");
        for (task, callback) in found {
            known.remember(task, callback);
        }
        let mut plan = Plan::default();
        for ((seq, event), envelope) in events.iter().zip(envelopes) {
            let tenant = envelope.tenant;
            if matches!(
                event.kind,
                EventKind::Submitted { .. } | EventKind::CancelRequested { .. }
            ) {
                continue;
            }
            if unreadable.contains(&event.task_id) {
                plan.unsure.insert(*seq);
                continue;
            }
            if let Some(callback) = known.known(event.task_id).flatten() {
                if event.started.is_some() {
                    // A start reported with this event: its own delivery, then the event's.
                    let (started, ended) = event.clone().unfold();
                    let ids = [start_delivery_id, delivery_id];
                    for (e, id) in started.iter().chain([&ended]).zip(ids) {
                        if callback.wants(&e.kind) {
                            let id = id(e.task_id, *seq);
                            plan.deliveries
                                .push(self.delivery(id, *seq, e, tenant, &callback));
                        }
                    }
                } else if callback.wants(&event.kind) {
                    let id = delivery_id(event.task_id, *seq);
                    plan.deliveries
                        .push(self.delivery(id, *seq, event, tenant, &callback));
                }
            }
            if event.terminal_status().is_some() {
                known.forget(event.task_id);
            }
        }
        plan
    }

    fn delivery(
        &self,
        id: String,
        seq: u64,
        event: &TaskEvent,
        tenant: &str,
        callback: &Callback,
    ) -> NewDelivery {
        NewDelivery {
            body: body(event, &id, tenant, callback.cloudevents),
            id,
            task_id: event.task_id,
            tenant: tenant.to_owned(),
            seq,
            event: event.kind_name().to_owned(),
            url: callback.url.clone(),
            cloudevents: callback.cloudevents,
            retry_until: event.at
                + chrono::Duration::from_std(self.retry_for).unwrap_or(chrono::Duration::days(1)),
        }
    }
}

/// A task's callback, from its `submitted` event in the stream: its first event (one direct
/// get), or, should that event have been stored after another, found in the whole history.
async fn callback_of(bus: &Bus, task: Uuid) -> Result<Option<Callback>, String> {
    let first = bus.first_event(task).await.map_err(|e| e.to_string())?;
    if let Some(EventKind::Submitted { task }) = first.map(|e| e.kind) {
        return Ok(task.callback);
    }
    let history = bus.history(task).await.map_err(|e| e.to_string())?;
    Ok(history.into_iter().find_map(|(_, e)| match e.kind {
        EventKind::Submitted { task } => task.callback,
        _ => None,
    }))
}

/// What is POSTed for one event: Wharf's envelope (`type`, `timestamp`, `data`, as the Standard
/// Webhooks specification suggests), or a CloudEvents 1.0 structured-mode event.
pub(super) fn body(event: &TaskEvent, id: &str, tenant: &str, cloudevents: bool) -> Value {
    let data = serde_json::to_value(event).expect("an event serialises");
    let kind = event.kind_name();
    if cloudevents {
        json!({
            "specversion": "1.0",
            "id": id,
            "source": format!("wharf/tenants/{tenant}"),
            "type": format!("dev.wharf.task.{kind}"),
            "subject": event.task_id.to_string(),
            "time": event.at,
            "datacontenttype": "application/json",
            "data": data,
        })
    } else {
        json!({
            "type": format!("task.{kind}"),
            "timestamp": event.at,
            "data": data,
        })
    }
}

/// The callbacks of tasks seen lately (`None`: the task has none).
#[derive(Debug, Default)]
struct Callbacks {
    known: HashMap<Uuid, Option<Callback>>,
}

impl Callbacks {
    fn known(&self, task: Uuid) -> Option<Option<Callback>> {
        self.known.get(&task).cloned()
    }

    fn remember(&mut self, task: Uuid, callback: Option<Callback>) {
        if self.known.len() >= REMEMBERED {
            // Task ids are UUIDv7: the smaller half is the older half.
            let mut ids: Vec<Uuid> = self.known.keys().copied().collect();
            ids.sort_unstable();
            for id in &ids[..ids.len() / 2] {
                self.known.remove(id);
            }
        }
        self.known.insert(task, callback);
    }

    fn forget(&mut self, task: Uuid) {
        self.known.remove(&task);
    }
}
