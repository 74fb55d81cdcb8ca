//! From the events stream to deliveries: each event whose task's callback asks for it becomes
//! a delivery row, and only then is the event acknowledged (at least once: a crash in between
//! records it again, which the row's key makes a no-op).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wharf_bus::{Bus, Delivery, decode_event};
use wharf_contract::callbacks::delivery_id;
use wharf_contract::{Callback, EventKind, TaskEvent};
use wharf_store::{NewDelivery, Store};

use super::CallbackSettings;

/// Tasks whose callback (or lack of one) is remembered; past this, the oldest half is forgotten
/// (a forgotten task's callback is read again from its `submitted` event).
const REMEMBERED: usize = 100_000;

pub(super) async fn run(
    bus: Bus,
    store: Store,
    settings: CallbackSettings,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut callbacks = Callbacks::default();
    loop {
        let consumer = match bus.callbacks_consumer().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read events for callbacks; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(500)
            .expires(Duration::from_secs(10))
            .heartbeat(Duration::from_millis(2500))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read events for callbacks; retrying");
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                m = messages.next() => m,
                () = shutdown.cancelled() => return,
            };
            let Some(Ok(message)) = message else {
                break;
            };
            let settle = match decode_event(&message) {
                Ok((seq, event)) => {
                    let tenant = wharf_contract::tenant_of_event_subject(&message.subject)
                        .unwrap_or_default()
                        .to_owned();
                    match consider(&bus, &store, &settings, &mut callbacks, seq, &tenant, event)
                        .await
                    {
                        Ok(true) => {
                            wake.notify_one();
                            Delivery::DoneUnconfirmed
                        }
                        Ok(false) => Delivery::DoneUnconfirmed,
                        // The database or NATS is away: the event comes back after ack_wait.
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot record a callback delivery; the event will come again");
                            continue;
                        }
                    }
                }
                // Unreadable or of a newer version: not this recorder's to judge.
                Err(_) => Delivery::DoneUnconfirmed,
            };
            if let Err(e) = settle.settle(&message).await {
                tracing::debug!(error = %e, "cannot acknowledge an event for callbacks");
            }
        }
    }
}

/// Records a delivery if the event's task has a callback that asks for it; whether it did.
async fn consider(
    bus: &Bus,
    store: &Store,
    settings: &CallbackSettings,
    callbacks: &mut Callbacks,
    seq: u64,
    tenant: &str,
    event: TaskEvent,
) -> Result<bool, String> {
    if let EventKind::Submitted { task } = &event.kind {
        callbacks.remember(event.task_id, task.callback.clone());
        return Ok(false);
    }
    // No callback asks for these: nothing to look up.
    if matches!(event.kind, EventKind::CancelRequested { .. }) {
        return Ok(false);
    }
    let callback = match callbacks.known(event.task_id) {
        Some(c) => c,
        None => {
            let found = callback_of(bus, event.task_id).await?;
            callbacks.remember(event.task_id, found.clone());
            found
        }
    };
    let terminal = event.terminal_status().is_some();
    let Some(callback) = callback.filter(|c| c.wants(&event.kind)) else {
        if terminal {
            callbacks.forget(event.task_id);
        }
        return Ok(false);
    };
    let delivery = NewDelivery {
        id: delivery_id(event.task_id, seq),
        task_id: event.task_id,
        tenant: tenant.to_owned(),
        seq,
        event: event.kind_name().to_owned(),
        url: callback.url.clone(),
        cloudevents: callback.cloudevents,
        body: body(&event, seq, tenant, callback.cloudevents),
        retry_until: event.at
            + chrono::Duration::from_std(settings.retry_for).unwrap_or(chrono::Duration::days(1)),
    };
    store
        .record_delivery(&delivery)
        .await
        .map_err(|e| e.to_string())?;
    if terminal {
        callbacks.forget(event.task_id);
    }
    Ok(true)
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
pub(super) fn body(event: &TaskEvent, seq: u64, tenant: &str, cloudevents: bool) -> Value {
    let data = serde_json::to_value(event).expect("an event serialises");
    let kind = event.kind_name();
    if cloudevents {
        json!({
            "specversion": "1.0",
            "id": delivery_id(event.task_id, seq),
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
#[derive(Default)]
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
