//! The recorder's sections of the configuration: `[history]` (the database's history) and
//! `[callbacks]` (where task callbacks may go, read by the gateway too, and how they are
//! delivered).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[history]`: how long the database keeps finished tasks (docs/operations.md, "The history
/// at scale"). The recorder applies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySection {
    /// Days a finished task and its events stay after the task ended; 0 keeps them forever.
    /// Unfinished tasks are never removed.
    pub retention_days: u32,
    /// Seconds between two upkeep passes (partitions made ahead, expired tasks removed).
    pub upkeep_every_secs: u64,
    /// Days of partitions made ahead of today (Postgres).
    pub partitions_ahead_days: u32,
}

impl Default for HistorySection {
    fn default() -> Self {
        let d = wharf_recorder::HistorySettings::default();
        HistorySection {
            retention_days: d.policy.retention_days,
            upkeep_every_secs: d.every.as_secs(),
            partitions_ahead_days: d.policy.days_ahead,
        }
    }
}

impl HistorySection {
    pub fn settings(&self) -> wharf_recorder::HistorySettings {
        wharf_recorder::HistorySettings {
            policy: wharf_store::HistoryPolicy {
                retention_days: self.retention_days,
                days_ahead: self.partitions_ahead_days,
            },
            every: Duration::from_secs(self.upkeep_every_secs.max(1)),
        }
    }
}

/// `[callbacks]`: where task callbacks may go (the gateway refuses other URLs at submission,
/// the recorder checks again on every attempt), and how the recorder delivers them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbacksSection {
    /// Also call loopback, private and link-local addresses. Off, except under `wharf dev`,
    /// whose receivers are usually on the same machine.
    pub allow_private: Option<bool>,
    /// When not empty, only these hosts (`hooks.example.com`, or `*.example.com`).
    pub allowed_hosts: Vec<String>,
    /// Never these hosts.
    pub denied_hosts: Vec<String>,
    /// How long a delivery is retried after its event, in seconds.
    pub retry_for_secs: u64,
    /// How long one attempt may take, in seconds.
    pub timeout_secs: u64,
    /// Attempts in flight to one host at once, per recorder.
    pub per_host_concurrency: usize,
    /// Attempts started per second at one host, per recorder; 0 for no limit.
    pub per_host_per_sec: f64,
}

impl Default for CallbacksSection {
    fn default() -> Self {
        let d = wharf_recorder::CallbackSettings::default();
        CallbacksSection {
            allow_private: None,
            allowed_hosts: Vec::new(),
            denied_hosts: Vec::new(),
            retry_for_secs: d.retry_for.as_secs(),
            timeout_secs: d.timeout.as_secs(),
            per_host_concurrency: d.per_host,
            per_host_per_sec: 0.0,
        }
    }
}

impl CallbacksSection {
    pub fn policy(&self, dev: bool) -> wharf_webhooks::TargetPolicy {
        wharf_webhooks::TargetPolicy {
            allow_private: self.allow_private.unwrap_or(dev),
            allowed_hosts: self.allowed_hosts.clone(),
            denied_hosts: self.denied_hosts.clone(),
        }
    }

    pub fn settings(&self, dev: bool) -> wharf_recorder::CallbackSettings {
        wharf_recorder::CallbackSettings {
            policy: self.policy(dev),
            retry_for: Duration::from_secs(self.retry_for_secs.max(1)),
            timeout: Duration::from_secs(self.timeout_secs.clamp(1, 300)),
            per_host: self.per_host_concurrency.max(1),
            per_host_per_sec: (self.per_host_per_sec > 0.0).then_some(self.per_host_per_sec),
            ..wharf_recorder::CallbackSettings::default()
        }
    }
}
