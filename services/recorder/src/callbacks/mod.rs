//! Task callbacks, delivered by the recorder: `record.rs` plans, for each batch the projection
//! records, a delivery for each event a task's callback asks for, written in the batch's own
//! transaction (so before the event is acknowledged); `deliver.rs` takes the due deliveries
//! (in order per task), POSTs each one signed, and writes the attempt and what follows from it
//! (delivered, retried with backoff, or failed). The database is the deliveries' queue, so a
//! recorder that dies loses none: its leases lapse and another recorder delivers them.

mod deliver;
mod record;

pub(crate) use deliver::run;
pub(crate) use record::{Envelope, Plan, Planner};

use std::time::Duration;

use wharf_webhooks::TargetPolicy;

/// `[callbacks]`: where callbacks may go and how long they are retried.
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    pub policy: TargetPolicy,
    /// How long a delivery is retried after its event (24 h by default).
    pub retry_for: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Attempts in flight to one host at once, so a slow receiver holds up only itself.
    pub per_host: usize,
    /// Attempts started per second at one host, if limited (a receiver that asks to be
    /// called no faster).
    pub per_host_per_sec: Option<f64>,
    /// Attempts in flight from one recorder at once.
    pub concurrency: usize,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            policy: TargetPolicy::default(),
            retry_for: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            per_host: 4,
            per_host_per_sec: None,
            concurrency: 64,
        }
    }
}
