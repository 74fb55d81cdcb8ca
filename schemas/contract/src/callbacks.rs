//! Outbound callbacks: a task may name a URL that Wharf POSTs chosen events of the task to,
//! signed per the Standard Webhooks specification with its tenant's secrets, at least once and
//! in order, with each attempt kept in a delivery log.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::EventKind;

/// Where a task's events go, and which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    /// `http://` or `https://`, at most 2,048 bytes, no credentials in it; the callback
    /// policy decides which hosts and addresses may be called.
    #[schemars(length(max = crate::rules::URL_BYTES), regex(pattern = "^https?://"))]
    pub url: String,
    /// The events to send; only the terminal one (`succeeded`, `failed` or `cancelled`) when
    /// absent.
    #[serde(default = "terminal_only", skip_serializing_if = "is_terminal_only")]
    #[schemars(length(min = 1, max = 8))]
    pub events: Vec<CallbackEvent>,
    /// Send each event as a CloudEvents 1.0 structured-mode body
    /// (`application/cloudevents+json`) instead of Wharf's own envelope.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cloudevents: bool,
}

fn terminal_only() -> Vec<CallbackEvent> {
    vec![CallbackEvent::Terminal]
}

fn is_terminal_only(events: &[CallbackEvent]) -> bool {
    events == [CallbackEvent::Terminal]
}

/// An event a callback may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackEvent {
    /// Whichever of `succeeded`, `failed`, `cancelled` ends the task.
    Terminal,
    Started,
    Progress,
    AttemptFailed,
    Succeeded,
    Failed,
    Cancelled,
}

impl CallbackEvent {
    /// Whether an event of `kind` is one this asks for.
    pub fn matches(self, kind: &EventKind) -> bool {
        matches!(
            (self, kind),
            (
                CallbackEvent::Terminal,
                EventKind::Succeeded { .. }
                    | EventKind::Failed { .. }
                    | EventKind::Cancelled { .. },
            ) | (CallbackEvent::Started, EventKind::Started { .. })
                | (CallbackEvent::Progress, EventKind::Progress(_))
                | (
                    CallbackEvent::AttemptFailed,
                    EventKind::AttemptFailed { .. }
                )
                | (CallbackEvent::Succeeded, EventKind::Succeeded { .. })
                | (CallbackEvent::Failed, EventKind::Failed { .. })
                | (CallbackEvent::Cancelled, EventKind::Cancelled { .. })
        )
    }
}

impl Callback {
    /// Whether this callback asks for an event of `kind`.
    pub fn wants(&self, kind: &EventKind) -> bool {
        self.events.iter().any(|e| e.matches(kind))
    }
}

/// A tenant's callback settings (`callbacks.<tenant>` in `/api/v1/config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantCallbacks {
    /// Standard Webhooks secrets (`whsec_` and the base64 of 24 to 64 bytes) the tenant's
    /// callbacks are signed with: every delivery carries a signature by each, so a receiver can
    /// move to a new secret while the old one still works.
    #[schemars(length(min = 1, max = crate::rules::HOOK_SECRETS), inner(length(max = 200), regex(pattern = "^whsec_[A-Za-z0-9+/]+={0,2}$")))]
    pub secrets: Vec<String>,
    /// The callback of the tenant's tasks that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Callback>,
}

/// The callback settings of every tenant, by tenant.
pub type CallbackSettings = BTreeMap<String, TenantCallbacks>;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet: waiting for its turn or its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: the receiver refused it (a 4xx other than 429, a redirect), the policy
    /// refused the target, or retries ran out. `POST /api/v1/deliveries/{id}/redeliver` tries
    /// again.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// One event of one task to one callback URL, and every attempt at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Delivery {
    /// Also the `webhook-id` of every attempt: `<task id>-<event sequence>`.
    pub id: String,
    pub task_id: Uuid,
    pub tenant: String,
    /// The event's type (`succeeded`, `progress`, ...).
    pub event: String,
    /// The event's sequence in the events stream: a task's deliveries go out in this order.
    pub seq: u64,
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// When the next attempt is due (pending deliveries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Retries stop after this time.
    pub retry_until: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Each attempt, oldest first (on a single delivery's read; absent in lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<DeliveryAttempt>,
    /// The last attempt's status code, if the receiver answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// What went wrong the last time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryAttempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's answer, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// `GET /api/v1/tasks/{id}/deliveries` and `GET /api/v1/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The webhook id of the delivery of event `seq` of task `id`: the same on every attempt.
pub fn delivery_id(task: Uuid, seq: u64) -> String {
    format!("{task}-{seq}")
}

/// The webhook id of the delivery of a `started` event reported along with event `seq` of task
/// `id` (see [`crate::TaskEvent::unfold`]): the two share a sequence, not an id.
pub fn start_delivery_id(task: Uuid, seq: u64) -> String {
    format!("{task}-{seq}-started")
}
