//! What operators see of the platform itself: live workers and the state of each queue.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::task::Priority;

/// Version written into every [`WorkerInfo`] this build publishes.
pub const WORKER_INFO_VERSION: u32 = 1;

/// A live worker (`worker.v1`): what it announces in the workers bucket every few seconds, and
/// what `GET /api/v1/workers` lists. A worker that stops announcing (it died) is gone from the
/// bucket after `nats.worker_ttl_secs`; one that stops cleanly removes itself at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerInfo {
    pub v: u32,
    /// The worker's id (`--id`, else `<host>-<pid>`), as shown in `started` events.
    pub id: String,
    pub host: String,
    /// Version of the `wharf` build the worker runs.
    pub version: String,
    pub queues: Vec<String>,
    /// Qualified names of the tools it serves now (`<server>.<tool>`).
    pub tools: Vec<String>,
    /// Tasks it runs at once, per queue.
    pub concurrency: usize,
    /// Tasks running on it now, over every queue.
    pub in_flight: usize,
    pub started_at: DateTime<Utc>,
    /// When it last announced itself.
    pub seen_at: DateTime<Utc>,
}

/// `GET /api/v1/workers` answer, ordered by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// One level of a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueueLevel {
    pub priority: Priority,
    /// Tasks waiting for a worker (retries waiting out their delay included).
    pub waiting: u64,
    /// Tasks a worker holds now.
    pub in_flight: u64,
    /// Workers take no task from this level (`POST /api/v1/queues/{name}/pause`).
    #[serde(default)]
    pub paused: bool,
    /// Age of the oldest task still in the level, waiting or running; absent when it is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_age_secs: Option<f64>,
}

/// A queue's state: its levels summed, plus who serves it and how fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueueInfo {
    pub name: String,
    pub waiting: u64,
    pub in_flight: u64,
    /// The oldest of the levels' oldest tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_age_secs: Option<f64>,
    /// Live workers taking tasks from this queue.
    pub workers: usize,
    /// The queue is paused: it accepts tasks, and workers take none until it is resumed.
    #[serde(default)]
    pub paused: bool,
    /// Tasks of this queue that ended (any terminal state) in the last 60 seconds, from the
    /// history.
    pub finished_last_minute: u64,
    /// Of those, the tasks that ended `failed`.
    #[serde(default)]
    pub failed_last_minute: u64,
    /// High, normal and low, in that order.
    pub levels: Vec<QueueLevel>,
}

/// `GET /api/v1/queues` answer, ordered by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueueList {
    pub queues: Vec<QueueInfo>,
}

/// The platform at a glance (`system:status` on the WebSocket): live workers and every queue,
/// as `GET /api/v1/workers` and `GET /api/v1/queues` show them, read at `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemStatus {
    pub at: DateTime<Utc>,
    pub workers: Vec<WorkerInfo>,
    pub queues: Vec<QueueInfo>,
}
