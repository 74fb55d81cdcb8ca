//! Dead letters: a task that failed for good is kept, with its last error, for inspection and
//! replay; so is a task message no worker can read. A letter is stored before the terminal
//! event, and withdrawn when another attempt's outcome turns out to be the task's.

use serde_json::Value;
use wharf_bus::{Delivery, Message, RETRY_SOON};
use wharf_contract::event::DecodeError;
use wharf_contract::{
    DEAD_LETTER_VERSION, DeadLetter, EventKind, Task, TaskError, TaskErrorCode, TaskEvent,
    UNKNOWN_TENANT, msg_id,
};

use crate::Shared;

/// Keeps a task that failed for good as a dead letter, with its last error.
pub(super) async fn keep(
    shared: &Shared,
    task: &Task,
    attempt: u32,
    error: &TaskError,
) -> Result<(), wharf_bus::Error> {
    let letter = DeadLetter {
        v: DEAD_LETTER_VERSION,
        task_id: task.id,
        queue: task.queue.clone(),
        task: Some(task.clone()),
        payload: None,
        error: error.clone(),
        attempts: attempt,
        worker: shared.id.clone(),
        dead_at: chrono::Utc::now(),
        seq: None,
    };
    store(shared, &letter).await?;
    tracing::warn!(code = %error.code, "the task failed for good; kept as a dead letter");
    Ok(())
}

/// Removes the dead letter this attempt stored when the outcome recorded is another attempt's,
/// unless that outcome is a dead-lettered failure itself.
pub(super) async fn withdraw(shared: &Shared, id: uuid::Uuid) {
    let outcome = shared.bus.terminal_event(id).await;
    let kept = matches!(
        &outcome,
        Ok(Some(TaskEvent { kind: EventKind::Failed { error }, .. })) if error.dead_letter
    );
    if kept {
        return;
    }
    match outcome {
        Ok(_) => {
            if let Err(e) = shared.bus.remove_dead_letter(id).await {
                tracing::warn!(error = %e, "could not withdraw the dead letter");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the outcome; the dead letter stays"),
    }
}

/// Stores a dead letter, trying a few times.
async fn store(shared: &Shared, letter: &DeadLetter) -> Result<(), wharf_bus::Error> {
    let stored = super::STORE
        .run(|| Box::pin(shared.bus.publish_dead_letter(letter)))
        .await;
    if let Err(e) = &stored {
        tracing::warn!(error = %e, "could not store the dead letter");
    }
    stored
}

/// A task message this worker cannot read. A newer wire version goes back to the queue for a
/// newer worker; anything else ends the task `failed` (when its id can be read) so it does not
/// stay queued forever, and is then dropped.
pub(super) async fn unreadable(shared: &Shared, message: &Message, attempt: u32, e: DecodeError) {
    if let DecodeError::Version(v) = e {
        // Hold it a little (well inside the lease) so old workers do not spin on it, then put
        // it back without using an attempt.
        tracing::warn!(
            version = v,
            "a task of a newer wire version: leaving it to a newer worker"
        );
        let _ = Delivery::KeepAlive.settle(message).await;
        tokio::time::sleep(shared.heartbeat).await;
        if let Err(e) = shared.bus.hand_back(message, attempt - 1).await {
            tracing::warn!(error = %e, "could not hand the task back");
        }
        return;
    }
    tracing::error!(subject = %message.subject, error = %e, "dropping an unreadable task message");
    let id = serde_json::from_slice::<Value>(&message.payload)
        .ok()
        .and_then(|v| v.get("id")?.as_str()?.parse::<uuid::Uuid>().ok());
    let settled = match id {
        Some(id) => fail_unreadable(shared, message, attempt, id, &e).await,
        None => Delivery::GiveUp,
    };
    let _ = settled.settle(message).await;
}

/// Ends the task of an unreadable message `failed` (`bad_message`) with its dead letter: given
/// up once both are stored, tried again shortly otherwise.
async fn fail_unreadable(
    shared: &Shared,
    message: &Message,
    attempt: u32,
    id: uuid::Uuid,
    e: &DecodeError,
) -> Delivery {
    let error = TaskError {
        dead_letter: true,
        ..TaskError::new(
            TaskErrorCode::BadMessage,
            format!("the task message cannot be read: {e}"),
        )
    };
    let letter = DeadLetter {
        v: DEAD_LETTER_VERSION,
        task_id: id,
        queue: queue_of(message),
        task: None,
        payload: Some(String::from_utf8_lossy(&message.payload).into_owned()),
        error: error.clone(),
        attempts: attempt,
        worker: shared.id.clone(),
        dead_at: chrono::Utc::now(),
        seq: None,
    };
    let event = TaskEvent::new(id, attempt, EventKind::Failed { error });
    // The message cannot say whose task it was; its submitted event can.
    let tenant = match shared.bus.tenant_of(id).await {
        Ok(Some(t)) => t,
        Ok(None) => UNKNOWN_TENANT.to_owned(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the unreadable task's tenant; trying later");
            return Delivery::RetryAfter(RETRY_SOON);
        }
    };
    let stored = store(shared, &letter).await.is_ok()
        && match shared
            .bus
            .publish_event(&tenant, &event, &msg_id::terminal(id), None)
            .await
        {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
    if stored {
        Delivery::GiveUp
    } else {
        Delivery::RetryAfter(RETRY_SOON)
    }
}

/// The queue a task message was taken from (see `wharf_contract::task_subject`).
fn queue_of(message: &Message) -> String {
    wharf_contract::parse_task_subject(&message.subject)
        .map_or_else(|| message.subject.to_string(), |(q, _)| q.to_owned())
}
