//! Rate limits (GCRA, with governor) and the per-tenant cap on unfinished tasks.
//!
//! Three limiters, each off unless configured:
//! - `per_ip`: every request from one client address, before authentication (so a flood of bad
//!   credentials is throttled too);
//! - `read`: `GET` requests, per tenant;
//! - `write`: every other request, and every WebSocket `task:submit` and `task:cancel`, per
//!   tenant.
//!
//! A refused request gets 429 `rate_limited` with `Retry-After`; every request a limiter counted
//! carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the
//! allowance is whole again), as in the IETF RateLimit header fields draft.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use wharf_contract::ErrorCode;

use crate::AppState;
use crate::problem::{Allowance, ApiError};

pub use wharf_contract::{LimitsConfig, Rate};

fn quota(rate: Rate) -> Quota {
    let burst = rate.burst.unwrap_or(rate.per_sec.ceil() as u32);
    let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
    Quota::with_period(Duration::from_secs_f64(1.0 / rate.per_sec))
        .expect("validated: a positive, finite rate")
        .allow_burst(burst)
}

/// Checks limits before they are used: `Err((name, why))`, `name` as in `limits.write`.
pub fn validate(limits: &LimitsConfig) -> Result<(), (String, String)> {
    for (name, rate) in [
        ("per_ip", limits.per_ip),
        ("read", limits.read),
        ("write", limits.write),
    ] {
        if let Some(r) = rate
            && (!wharf_contract::rules::RATE_PER_SEC.contains(&r.per_sec) || r.burst == Some(0))
        {
            return Err((
                format!("limits.{name}"),
                "per_sec must be between 0.001 and 1000000 and burst at least 1 (leave the \
                 limit out for none)"
                    .into(),
            ));
        }
    }
    if limits.tenant_max_unfinished == Some(0) {
        return Err((
            "limits.tenant_max_unfinished".into(),
            "must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Which allowance a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Read,
    Write,
}

impl Class {
    pub fn of(method: &Method) -> Class {
        if method == Method::GET || method == Method::HEAD {
            Class::Read
        } else {
            Class::Write
        }
    }
}

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

fn limiter<K: std::hash::Hash + Eq + Clone>(rate: Rate) -> Keyed<K> {
    RateLimiter::keyed(quota(rate)).with_middleware::<StateInformationMiddleware>()
}

/// Every limiter of a gateway.
pub struct Limits {
    config: LimitsConfig,
    per_ip: Option<Keyed<IpAddr>>,
    read: Option<Keyed<String>>,
    write: Option<Keyed<String>>,
    /// Per tenant: unfinished tasks as last counted, when, and how many this gateway accepted
    /// since.
    unfinished: Mutex<HashMap<String, (u64, Instant, u64)>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .finish()
    }
}

/// How long a tenant's count of unfinished tasks is trusted before it is read again.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);

impl Limits {
    pub fn new(config: LimitsConfig) -> Limits {
        Limits {
            per_ip: config.per_ip.map(limiter),
            read: config.read.map(limiter),
            write: config.write.map(limiter),
            unfinished: Mutex::new(HashMap::new()),
            config,
        }
    }

    /// Counts an attempt from `ip` against the address's allowance (`per_ip`), for what does
    /// not come through the HTTP middleware (NATS connections asking the auth callout).
    pub fn admit_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.per_ip {
            Some(limiter) => check(limiter, &ip, "this address").map(|_| ()),
            None => Ok(()),
        }
    }

    /// Counts a request of `tenant` against its class's allowance.
    pub fn admit(&self, tenant: &str, class: Class) -> Result<Option<Allowance>, ApiError> {
        let limiter = match class {
            Class::Read => &self.read,
            Class::Write => &self.write,
        };
        let Some(limiter) = limiter else {
            return Ok(None);
        };
        check(limiter, &tenant.to_owned(), "this tenant")
    }

    /// Refuses a submission of `adding` tasks that would take `tenant` over its cap. The count
    /// comes from the database (what the recorder has seen), read at most once a second per
    /// tenant, plus what this gateway accepted since: a burst across several gateways may pass
    /// the cap by what the others accepted within that second.
    pub async fn admit_tasks(
        &self,
        store: &wharf_store::Store,
        tenant: &str,
        adding: u64,
    ) -> Result<(), ApiError> {
        let Some(cap) = self.config.tenant_max_unfinished else {
            return Ok(());
        };
        let known = self
            .unfinished
            .lock()
            .expect("never poisoned")
            .get(tenant)
            .filter(|(_, at, _)| at.elapsed() < RECOUNT_EVERY)
            .map(|(n, _, since)| n + since);
        let now = match known {
            Some(n) => n,
            None => {
                // Boxed: read once a second at most, it would otherwise make every
                // submission's future larger by the database read's.
                let n = Box::pin(store.unfinished(tenant)).await?;
                self.unfinished
                    .lock()
                    .expect("never poisoned")
                    .insert(tenant.to_owned(), (n, Instant::now(), 0));
                n
            }
        };
        if now + adding > cap {
            return Err(ApiError::new(
                ErrorCode::TooManyTasks,
                format!(
                    "this tenant has {now} tasks queued or running and may have at most {cap}; \
                     submit again when some have ended"
                ),
            )
            .retry_after(Duration::from_secs(1)));
        }
        if let Some(entry) = self
            .unfinished
            .lock()
            .expect("never poisoned")
            .get_mut(tenant)
        {
            entry.2 += adding;
        }
        Ok(())
    }

    /// Forgets idle keys, so the limiters' memory follows the active callers only.
    pub fn shrink(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
        }
        for l in [&self.read, &self.write].into_iter().flatten() {
            l.retain_recent();
        }
        self.unfinished
            .lock()
            .expect("never poisoned")
            .retain(|_, (_, at, _)| at.elapsed() < RECOUNT_EVERY * 60);
    }
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &Keyed<K>,
    key: &K,
    who: &str,
) -> Result<Option<Allowance>, ApiError> {
    match limiter.check_key(key) {
        Ok(snapshot) => {
            let quota = snapshot.quota();
            let remaining = snapshot.remaining_burst_capacity();
            let used = quota.burst_size().get() - remaining;
            Ok(Some(Allowance {
                limit: quota.burst_size().get(),
                remaining,
                reset: quota.replenish_interval() * used,
            }))
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let quota = not_until.quota();
            Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many requests from {who}: at most {} at once, then one every {:.3} s; \
                     retry in {:.1} s",
                    quota.burst_size(),
                    quota.replenish_interval().as_secs_f64(),
                    wait.as_secs_f64()
                ),
            )
            .retry_after(wait)
            .rate_limit(Allowance {
                limit: quota.burst_size().get(),
                remaining: 0,
                reset: wait,
            }))
        }
    }
}

/// Counts every request against its client address's allowance, before anything else runs.
pub async fn per_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Load balancers probe the health checks from a few addresses, often.
    if matches!(request.uri().path(), "/healthz" | "/livez" | "/readyz") {
        return next.run(request).await;
    }
    let limits = state.settings().limits.clone();
    let Some(limiter) = &limits.per_ip else {
        return next.run(request).await;
    };
    let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    else {
        return next.run(request).await;
    };
    match check(limiter, &peer.ip(), "this address") {
        Ok(allowance) => {
            let mut response = next.run(request).await;
            // The tenant's allowance, if any, is the one a client acts on; keep it.
            if let Some(a) = allowance
                && !response.headers().contains_key("ratelimit-limit")
            {
                a.apply(response.headers_mut());
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// Forgets idle callers once a minute, until the gateway stops.
pub async fn shrink_periodically(state: AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = every.tick() => state.settings().limits.shrink(),
            () = state.stopping.cancelled() => return,
        }
    }
}
