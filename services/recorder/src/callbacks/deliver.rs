//! Delivering: take the due deliveries (each the first pending one of its task), sign each with
//! its tenant's secrets, POST it within the target policy, and write what came of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wharf_contract::DeliveryAttempt;
use wharf_store::{AttemptOutcome, Due, Store};
use wharf_webhooks::{Attempt, Sender};

use super::CallbackSettings;

/// How often due deliveries are looked for when nothing new was recorded.
const POLL: Duration = Duration::from_millis(250);
/// How long the tenants' secrets read from the database are used before being read again.
const SECRETS_FRESH: Duration = Duration::from_secs(5);
/// The longest wait between two attempts, and the longest `Retry-After` honoured.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// Delivers the recorded callbacks until `shutdown`; `wake` is notified when new ones are
/// recorded or an attempt ends, so they go out without waiting for the next look at the table.
pub(crate) async fn run(
    store: Store,
    settings: CallbackSettings,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let sender = match Sender::new(settings.policy.clone(), settings.timeout) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "callbacks cannot be delivered");
            return;
        }
    };
    let ctx = Arc::new(Context {
        store,
        sender,
        secrets: Secrets::default(),
        hosts: Mutex::default(),
        in_flight: Mutex::default(),
        wake: wake.clone(),
        per_host: settings.per_host.max(1),
        per_host_quota: settings
            .per_host_per_sec
            .filter(|r| *r > 0.0)
            .and_then(|r| governor::Quota::with_period(Duration::from_secs_f64(1.0 / r))),
        // Long enough for an attempt and the write of its outcome.
        lease: settings.timeout * 2 + Duration::from_secs(5),
    });
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    loop {
        take_due(&ctx, &slots).await;
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            () = shutdown.cancelled() => break,
        }
    }
    // Attempts in flight finish (each is bounded by the timeout) before the recorder stops.
    let _ = slots.acquire_many(settings.concurrency.max(1) as u32).await;
}

struct Context {
    store: Store,
    sender: Sender,
    secrets: Secrets,
    hosts: Mutex<HashMap<String, Arc<Gate>>>,
    /// Deliveries this recorder is attempting (waiting for their host included): not taken
    /// again should their lease end meanwhile.
    in_flight: Mutex<std::collections::HashSet<String>>,
    /// Told when an attempt ends: its slot is free, and its task's next delivery may be due.
    wake: Arc<tokio::sync::Notify>,
    per_host: usize,
    per_host_quota: Option<governor::Quota>,
    /// How long a delivery taken for an attempt stays this recorder's.
    lease: Duration,
}

/// Starts an attempt at each due delivery, while slots are free.
async fn take_due(ctx: &Arc<Context>, slots: &Arc<Semaphore>) {
    let free = slots.available_permits() as u64;
    if free == 0 {
        return;
    }
    let now = Utc::now();
    let due = match ctx.store.due_deliveries(now, free).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read due callback deliveries");
            return;
        }
    };
    for (delivery, seen) in due {
        if ctx.in_flight.lock().unwrap().contains(&delivery.id) {
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            return;
        };
        let lease_until = now + chrono::Duration::from_std(ctx.lease).unwrap_or_default();
        match ctx
            .store
            .claim_delivery(&delivery.id, seen, lease_until)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take a callback delivery");
                return;
            }
        }
        ctx.in_flight.lock().unwrap().insert(delivery.id.clone());
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let id = delivery.id.clone();
            attempt(&ctx, delivery).await;
            ctx.in_flight.lock().unwrap().remove(&id);
            drop(slot);
            ctx.wake.notify_one();
        });
    }
}

/// One attempt at one delivery, and what it leaves.
async fn attempt(ctx: &Context, due: Due) {
    let number = due.attempts + 1;
    let (at, result) = match ctx.secrets.of(&ctx.store, &due.tenant).await {
        Some(keys) if !keys.is_empty() => {
            let gate = ctx.host_gate(&host_of(&due.url));
            let _turn = gate.slots.acquire().await;
            if let Some(rate) = &gate.rate {
                rate.until_ready().await;
            }
            // The attempt's time is when it went out, after its turn at the host.
            let at = Utc::now();
            let body = body(&due);
            let headers = headers(&due, &keys, at.timestamp(), &body);
            let sent = ctx.sender.post(&due.url, headers, body).await;
            (at, sent)
        }
        _ => (
            Utc::now(),
            Attempt {
                status: None,
                error: Some(format!(
                    "tenant {:?} has no callback secrets (callbacks.{}.secrets in /api/v1/config)",
                    due.tenant, due.tenant
                )),
                latency: Duration::ZERO,
                retry_after: None,
                retry: true,
            },
        ),
    };
    let outcome = outcome_of(&result, number, &due);
    let record = DeliveryAttempt {
        attempt: number,
        at,
        status: result.status,
        error: result.error.clone(),
        latency_ms: result.latency.as_millis() as u64,
    };
    tracing::debug!(delivery = %due.id, attempt = number, status = ?result.status, ?outcome, "callback attempt");
    // Should this fail, the lease lapses and the delivery is attempted again: at least once.
    if let Err(e) = ctx.store.finish_attempt(&due.id, &record, outcome).await {
        tracing::warn!(delivery = %due.id, error = %e, "cannot record a callback attempt");
    }
}

/// Delivered on a 2xx; retried on what is worth retrying while time remains; failed otherwise.
fn outcome_of(result: &Attempt, number: u32, due: &Due) -> AttemptOutcome {
    if result.delivered() {
        return AttemptOutcome::Delivered;
    }
    if !result.retry {
        return AttemptOutcome::Failed;
    }
    let wait = result
        .retry_after
        .map(|w| w.min(LONGEST_WAIT))
        .unwrap_or_else(|| backoff(number));
    let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
    if next > due.retry_until {
        AttemptOutcome::Failed
    } else {
        AttemptOutcome::RetryAt(next)
    }
}

/// The wait after attempt `number`: 1 s doubling to an hour, give or take a fifth, so
/// deliveries that failed together do not come back together.
fn backoff(number: u32) -> Duration {
    let base = Duration::from_secs(1u64 << number.saturating_sub(1).min(12)).min(LONGEST_WAIT);
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

fn body(due: &Due) -> bytes::Bytes {
    serde_json::to_vec(&due.body)
        .expect("a body serialises")
        .into()
}

/// The Standard Webhooks headers of `body`, signed by each of the tenant's secrets.
fn headers(due: &Due, keys: &[Vec<u8>], timestamp: i64, body: &[u8]) -> http::HeaderMap {
    let signatures: Vec<String> = keys
        .iter()
        .map(|k| wharf_webhooks::sign(k, &due.id, timestamp, body))
        .collect();
    let mut h = http::HeaderMap::new();
    let content_type = if due.cloudevents {
        "application/cloudevents+json"
    } else {
        "application/json"
    };
    let put = |h: &mut http::HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put(&mut h, "content-type", content_type);
    put(&mut h, "webhook-id", &due.id);
    put(&mut h, "webhook-timestamp", &timestamp.to_string());
    put(&mut h, "webhook-signature", &signatures.join(" "));
    h
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
        })
        .unwrap_or_default()
}

/// What one host gets: at most `per_host` attempts at once, and a rate if configured.
struct Gate {
    slots: Semaphore,
    rate: Option<governor::DefaultDirectRateLimiter>,
}

impl Context {
    /// The gate of one host.
    fn host_gate(&self, host: &str) -> Arc<Gate> {
        let mut hosts = self.hosts.lock().unwrap();
        if hosts.len() > 10_000 {
            // Forget idle hosts (no attempt holds their gate).
            hosts.retain(|_, g| Arc::strong_count(g) > 1);
        }
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| {
                Arc::new(Gate {
                    slots: Semaphore::new(self.per_host),
                    rate: self.per_host_quota.map(governor::RateLimiter::direct),
                })
            })
            .clone()
    }
}

/// Each tenant's signing keys.
type Keys = HashMap<String, Vec<Vec<u8>>>;

/// The tenants' signing keys, from the newest configuration revision, and when they were read.
#[derive(Default)]
struct Secrets {
    cached: tokio::sync::Mutex<Option<(Instant, Keys)>>,
}

impl Secrets {
    async fn of(&self, store: &Store, tenant: &str) -> Option<Vec<Vec<u8>>> {
        let mut cached = self.cached.lock().await;
        let stale = cached
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() > SECRETS_FRESH);
        if stale {
            match store.config_revisions(1).await {
                Ok(newest) => {
                    let keys = newest
                        .into_iter()
                        .next()
                        .map(|r| {
                            r.config
                                .callbacks
                                .into_iter()
                                .map(|(t, c)| {
                                    let keys = c
                                        .secrets
                                        .iter()
                                        .filter_map(|s| wharf_webhooks::decode_secret(s).ok())
                                        .collect();
                                    (t, keys)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    *cached = Some((Instant::now(), keys));
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the callback secrets"),
            }
        }
        cached.as_ref().and_then(|(_, k)| k.get(tenant).cloned())
    }
}
