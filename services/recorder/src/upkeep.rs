//! The history's upkeep, beside the projection: at start and then every
//! [`HistorySettings::every`], partitions are made ahead and expired tasks removed
//! (`wharf_store::Store::maintain_history`), and callback deliveries that ended before the
//! retention removed. Several recorders may run it; the store lets one at a time do the work
//! (removing deliveries twice at once is harmless). A failed pass is logged and tried again at the next.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_store::{HistoryPolicy, Store};

/// `[history]`: the retention and how often the upkeep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    pub policy: HistoryPolicy,
    pub every: Duration,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            policy: HistoryPolicy::default(),
            every: Duration::from_secs(3600),
        }
    }
}

/// Makes today's and the coming days' partitions before the first event is recorded (the
/// rest of the upkeep, dropping old days, runs beside the projection). A fresh database has
/// only the default partitions: rows recorded there before the day's partition exists are
/// moved into it when it is made, and a read racing that move could miss them.
pub(crate) async fn days_ahead(store: &Store, policy: &HistoryPolicy) {
    let ahead_only = HistoryPolicy {
        retention_days: 0,
        ..*policy
    };
    if let Err(e) = store
        .maintain_history(&ahead_only, chrono::Utc::now())
        .await
    {
        tracing::warn!(error = %e, "cannot make the coming days' partitions; the upkeep tries again");
    }
}

/// Runs passes until `shutdown`.
pub(crate) async fn run(store: Store, settings: HistorySettings, shutdown: CancellationToken) {
    loop {
        pass(&store, &settings.policy).await;
        tokio::select! {
            () = tokio::time::sleep(settings.every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn pass(store: &Store, policy: &HistoryPolicy) {
    prune_deliveries(store, policy).await;
    let started = std::time::Instant::now();
    match store.maintain_history(policy, chrono::Utc::now()).await {
        Ok(done) if !done.ran => {
            tracing::debug!("history upkeep: another recorder is at it");
        }
        Ok(done) => {
            metrics::counter!("wharf_history_partitions_dropped_total")
                .increment(done.dropped.len() as u64);
            metrics::counter!("wharf_history_tasks_deleted_total").increment(done.deleted);
            let (created, dropped) = (done.created.join(","), done.dropped.join(","));
            tracing::info!(
                created,
                dropped,
                kept = done.kept,
                deleted = done.deleted,
                ms = started.elapsed().as_millis() as u64,
                "history upkeep"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "history upkeep failed; trying again at the next pass")
        }
    }
}

/// Callback deliveries that ended go with the history's retention (none while it keeps
/// everything); ten thousand at a time, the rest at the next passes.
async fn prune_deliveries(store: &Store, policy: &HistoryPolicy) {
    if policy.retention_days == 0 {
        return;
    }
    let before = chrono::Utc::now() - chrono::Duration::days(i64::from(policy.retention_days));
    match store.prune_deliveries(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            deliveries = n,
            "callback deliveries past the retention removed"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot remove old callback deliveries"),
    }
}
