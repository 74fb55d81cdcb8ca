//! What every handler shares ([`AppState`]) and the runtime settings in force ([`Settings`]),
//! swapped whole when a new configuration revision is applied.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wharf_bus::Bus;
use wharf_store::Store;

use crate::{Catalog, GatewayConfig, audit, auth, limits};

/// What a queue gives the tasks submitted to it that do not say otherwise.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueDefaults {
    pub max_attempts: Option<u32>,
    pub timeout_secs: Option<u64>,
    /// Backoff between attempts; Wharf's default when `None`.
    pub retry: Option<wharf_contract::RetryPolicy>,
    /// Level of the tasks that name none; normal when `None`.
    pub priority: Option<wharf_contract::Priority>,
}

/// What every handler shares. One `Arc`: axum clones the state for every middleware and
/// handler a request passes, and cloning the parts one by one (the NATS client alone is several
/// reference counts and a channel sender) cost more CPU than the request itself.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub bus: Bus,
    pub store: Store,
    pub catalog: Catalog,
    pub config: Arc<GatewayConfig>,
    /// Fires when the gateway stops: long-lived streams (SSE, WebSocket) end with it.
    pub stopping: CancellationToken,
    /// The latest `system:status`, refreshed every few seconds while a WebSocket follows it.
    pub status: tokio::sync::watch::Sender<Option<Arc<wharf_contract::SystemStatus>>>,
    pub auth: Arc<auth::Authenticator>,
    pub audit: audit::Audit,
    /// The runtime settings in force (`/api/v1/config`), swapped whole when they change.
    pub(crate) settings: std::sync::RwLock<Arc<Settings>>,
    /// The worker list last read for the queue views, and when ([`Shared::recent_workers`]).
    pub(crate) workers_cache:
        tokio::sync::Mutex<Option<(std::time::Instant, Vec<wharf_contract::WorkerInfo>)>>,
}

/// How long a worker list read for the queue views is used again.
const WORKERS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Shared {
    /// The live workers, read from the workers bucket at most once a second for the queue
    /// views (`/api/v1/queues`, pausing, `system:status`, the metrics scrape). Each read of the
    /// bucket is a watch, a consumer the server makes and later drops; those views are asked
    /// often (an open console polls every 2 s) and, hammered, made consumers faster than the
    /// server dropped them, until it refused more. Concurrent callers wait for one read.
    /// Workers announce themselves every few seconds, so a second's staleness shows nothing new;
    /// `GET /api/v1/workers` still reads the bucket itself.
    pub async fn recent_workers(
        &self,
    ) -> Result<Vec<wharf_contract::WorkerInfo>, wharf_bus::Error> {
        let mut cached = self.workers_cache.lock().await;
        if let Some((at, workers)) = cached.as_ref()
            && at.elapsed() < WORKERS_FRESH
        {
            return Ok(workers.clone());
        }
        let workers = self.bus.workers().await?;
        *cached = Some((std::time::Instant::now(), workers.clone()));
        Ok(workers)
    }

    /// The runtime settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .expect("the settings lock is never poisoned")
            .clone()
    }

    /// Puts `new` in force, unless the settings in force are of its revision or a later one.
    pub fn replace_settings(&self, new: Settings) -> bool {
        let mut current = self.settings.write().expect("never poisoned");
        if new.revision <= current.revision {
            return false;
        }
        *current = Arc::new(new);
        true
    }
}

/// The settings an operator may change while the gateway runs: the configuration file's at
/// first (revision 0), then the newest revision of `/api/v1/config`.
pub struct Settings {
    pub revision: u64,
    /// As `GET /api/v1/config` shows them.
    pub runtime: wharf_contract::RuntimeConfig,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_by: Option<String>,
    pub queues: std::collections::BTreeMap<String, QueueDefaults>,
    /// Rebuilt at each change: allowances start whole again.
    pub limits: Arc<limits::Limits>,
}

impl Settings {
    pub fn new(
        revision: u64,
        runtime: wharf_contract::RuntimeConfig,
        updated_at: Option<chrono::DateTime<chrono::Utc>>,
        updated_by: Option<String>,
    ) -> Settings {
        let queues = runtime
            .queues
            .iter()
            .map(|(name, q)| (name.clone(), QueueDefaults::from_settings(q)))
            .collect();
        Settings {
            revision,
            limits: Arc::new(limits::Limits::new(runtime.limits.clone())),
            queues,
            runtime,
            updated_at,
            updated_by,
        }
    }
}

impl QueueDefaults {
    /// From the API's form of a queue's settings.
    pub fn from_settings(q: &wharf_contract::QueueSettings) -> QueueDefaults {
        let retry = (q.retry_initial_ms.is_some() || q.retry_max_ms.is_some()).then(|| {
            let default = wharf_contract::RetryPolicy::default();
            wharf_contract::RetryPolicy {
                initial_ms: q.retry_initial_ms.unwrap_or(default.initial_ms),
                max_ms: q.retry_max_ms.unwrap_or(default.max_ms),
            }
        });
        QueueDefaults {
            max_attempts: q.max_attempts,
            timeout_secs: q.timeout_secs,
            retry,
            priority: q.priority,
        }
    }

    /// The API's form of these settings.
    pub fn to_settings(&self) -> wharf_contract::QueueSettings {
        wharf_contract::QueueSettings {
            max_attempts: self.max_attempts,
            timeout_secs: self.timeout_secs,
            retry_initial_ms: self.retry.map(|r| r.initial_ms),
            retry_max_ms: self.retry.map(|r| r.max_ms),
            priority: self.priority,
        }
    }
}

impl GatewayConfig {
    /// The runtime settings the configuration file gives (revision 0).
    pub fn runtime(&self) -> wharf_contract::RuntimeConfig {
        wharf_contract::RuntimeConfig {
            limits: self.limits.clone(),
            queues: self
                .queues
                .iter()
                .map(|(n, q)| (n.clone(), q.to_settings()))
                .collect(),
            session_ttl_secs: self.session_ttl.as_secs(),
            mcp_servers: Default::default(),
            hooks: Default::default(),
            callbacks: Default::default(),
        }
    }
}
