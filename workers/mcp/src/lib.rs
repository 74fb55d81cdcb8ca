//! The Wharf worker: takes tasks from JetStream queues and runs each by calling a tool on an MCP
//! server, publishing what happens as task events.
//!
//! A worker is stateless: it talks to NATS and to MCP servers, never to the database, and needs
//! nothing but a NATS URL and its MCP server list. Any number of workers share a queue through one
//! durable pull consumer. A worker holds a task leased with in-progress acks while it runs and
//! acknowledges it only after the task's terminal event is stored, so a worker that dies loses
//! nothing: JetStream redelivers the task once the lease runs out.

pub mod mcp;
mod registry;
mod run;
mod stdio;
mod take;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wharf_bus::Bus;
use wharf_contract::NAME_RULE;
use wharf_contract::ops::WORKER_INFO_VERSION;
use wharf_contract::tool::TOOL_SERVER_VERSION;
use wharf_contract::{Priority, ToolInfo, ToolServer, WorkerInfo, valid_name};

pub use mcp::{McpServer, McpServerConfig, McpTransport};
pub use registry::RegistryPolicy;

/// What a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Shown in events (`task:started`) and logs.
    pub id: String,
    /// Queues to take tasks from.
    pub queues: Vec<String>,
    /// Tasks run at once by this process, per queue.
    pub concurrency: usize,
    /// MCP servers whose tools this worker serves.
    pub servers: Vec<McpServerConfig>,
    /// How long in-flight tasks may take to finish after shutdown is asked for.
    pub shutdown_grace: Duration,
    /// How long an attempt runs before its `started` event is stored on its own; a shorter one
    /// reports its start with the event that ends it (zero: every start at once). A
    /// redelivered attempt always announces itself at once.
    pub started_event_after: Duration,
    /// Whether (and to which hosts) this worker connects to the servers of the runtime
    /// configuration's MCP registry.
    pub registry: RegistryPolicy,
}

impl WorkerConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if self.queues.is_empty() {
            return Err(Error::Config("a worker needs at least one queue".into()));
        }
        if let Some(q) = self.queues.iter().find(|q| !valid_name(q)) {
            return Err(Error::Config(format!("queue name {q:?} {NAME_RULE}")));
        }
        if let Some(s) = self.servers.iter().find(|s| !valid_name(&s.name)) {
            return Err(Error::Config(format!(
                "mcp server name {:?} {NAME_RULE}",
                s.name
            )));
        }
        if let Some(h) = self.registry.allow_hosts.iter().find(|h| {
            h.is_empty() || h.contains('/') || h.contains('@') || h.contains(char::is_whitespace)
        }) {
            return Err(Error::Config(format!(
                "registry host {h:?} must be a host name or address, with an optional :port"
            )));
        }
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid worker configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Bus(#[from] wharf_bus::Error),
}

/// Tasks cancelled (remembered from the cancel bucket) and tasks running here.
struct Cancels {
    requested: Mutex<HashSet<Uuid>>,
    running: Mutex<HashMap<Uuid, CancellationToken>>,
    /// How long the cancel bucket remembers a request.
    horizon: Duration,
    prune_at: AtomicUsize,
}

/// Past this many remembered cancellations (and twice as many as were left by the last
/// pruning), the ones older than [`Cancels::horizon`] are forgotten (task ids carry their
/// submission time).
const CANCELS_PRUNE_AT: usize = 100_000;

impl Cancels {
    fn request(&self, id: Uuid) {
        let mut requested = self.requested.lock().unwrap();
        requested.insert(id);
        if requested.len() > self.prune_at.load(Ordering::Relaxed) {
            let horizon = std::time::SystemTime::now() - self.horizon;
            requested.retain(|id| {
                id.get_timestamp()
                    .map(|t| {
                        let (s, n) = t.to_unix();
                        std::time::UNIX_EPOCH + Duration::new(s, n) > horizon
                    })
                    .unwrap_or(true)
            });
            self.prune_at
                .store(CANCELS_PRUNE_AT.max(requested.len() * 2), Ordering::Relaxed);
        }
        drop(requested);
        if let Some(token) = self.running.lock().unwrap().get(&id) {
            token.cancel();
        }
    }

    /// Registers a running task; the token fires when it is (or already was) cancelled.
    fn register(&self, id: Uuid) -> CancellationToken {
        let token = CancellationToken::new();
        self.running.lock().unwrap().insert(id, token.clone());
        if self.requested.lock().unwrap().contains(&id) {
            token.cancel();
        }
        token
    }

    /// The task stopped running here.
    fn unregister(&self, id: Uuid) {
        self.running.lock().unwrap().remove(&id);
    }

    /// The task's terminal event is stored: its cancellation request can be forgotten.
    fn forget(&self, id: Uuid) {
        self.requested.lock().unwrap().remove(&id);
    }
}

/// The MCP servers a worker serves now, by name: those of its configuration file, and those of
/// the registry it took on.
type Servers = Arc<RwLock<HashMap<String, Arc<McpServer>>>>;

/// What every task handler shares.
struct Shared {
    bus: Bus,
    id: String,
    servers: Servers,
    cancels: Cancels,
    heartbeat: Duration,
    /// See [`WorkerConfig::started_event_after`].
    started_event_after: Duration,
    /// Fires when the shutdown grace period is over: running tasks are handed back.
    abandon: CancellationToken,
}

impl Shared {
    /// The server named `name`, if this worker serves it now.
    fn server(&self, name: &str) -> Option<Arc<McpServer>> {
        self.servers.read().unwrap().get(name).cloned()
    }
}

/// A worker process's task loop.
pub struct Worker {
    config: WorkerConfig,
    bus: Bus,
}

impl Worker {
    pub fn new(config: WorkerConfig, bus: Bus) -> Result<Worker, Error> {
        config.validate()?;
        wharf_telemetry::metrics::install();
        wharf_telemetry::install_crypto();
        Ok(Worker { config, bus })
    }

    /// Runs until `shutdown` fires, then stops taking tasks and gives in-flight ones the grace
    /// period to finish. Tasks still running after it are handed back at once (republished
    /// without using an attempt, see `Bus::hand_back`) for another worker to run.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Worker { config, bus } = self;
        bus.ensure_topology().await?;
        let consumers = queue_consumers(&bus, &config.queues).await?;
        // MCP connections live until the process stops, not just until shutdown is asked for:
        // in-flight tasks still need them during the grace period.
        let servers_stop = CancellationToken::new();
        let (tools_tx, tools_rx) = mpsc::unbounded_channel();
        let servers = start_servers(&config, &tools_tx, &servers_stop);
        let serving: Serving = Arc::default();
        let registry = config.registry.enabled.then(|| {
            tokio::spawn(registry::follow(
                bus.clone(),
                config.clone(),
                servers.clone(),
                serving.clone(),
                tools_tx.clone(),
                servers_stop.clone(),
            ))
        });
        drop(tools_tx);
        tokio::spawn(advertise(
            bus.clone(),
            config.queues.clone(),
            tools_rx,
            servers.clone(),
            serving.clone(),
        ));
        let shared = Arc::new(Shared {
            bus: bus.clone(),
            id: config.id.clone(),
            servers,
            cancels: Cancels {
                requested: Mutex::default(),
                running: Mutex::default(),
                horizon: bus.topology().cancel_ttl,
                prune_at: CANCELS_PRUNE_AT.into(),
            },
            heartbeat: bus.topology().ack_wait / 3,
            started_event_after: config.started_event_after,
            abandon: CancellationToken::new(),
        });
        let cancel_watch = follow_cancels(&bus, &shared).await?;
        let (loops, all_slots) = start_taking(consumers, &shared, config.concurrency, &shutdown);
        // The announcements are part of this future, not a task of their own: a worker that is
        // dropped (in-process, as a killed process would be) stops announcing with it.
        let announcing = announce(bus.clone(), config.clone(), all_slots.clone(), serving);
        let work = async {
            tracing::info!(worker = %config.id, queues = ?config.queues, concurrency = config.concurrency, "worker running");
            shutdown.cancelled().await;
            for l in loops {
                let _ = l.await;
            }
            drain(&config, &shared, &all_slots).await;
        };
        tokio::select! {
            () = work => {}
            () = announcing => unreachable!("announcing never ends"),
        }
        cancel_watch.abort();
        if let Some(r) = registry {
            r.abort();
        }
        if let Err(e) = bus.withdraw_worker(&config.id).await {
            tracing::warn!(error = %e, "could not withdraw from the worker list; it lapses on its own");
        }
        servers_stop.cancel();
        Ok(())
    }
}

/// The MCP servers of the configuration file, each connecting in the background.
fn start_servers(
    config: &WorkerConfig,
    tools: &mpsc::UnboundedSender<mcp::ToolsUpdate>,
    stop: &CancellationToken,
) -> Servers {
    let servers = config
        .servers
        .iter()
        .map(|s| {
            let server = McpServer::start(s.clone(), tools.clone(), stop.clone());
            (s.name.clone(), server)
        })
        .collect();
    Arc::new(RwLock::new(servers))
}

/// Starts taking tasks from every queue. Each queue has its own slots, so a backlog in one
/// never holds up another; the loops end when `shutdown` fires.
fn start_taking(
    consumers: Vec<(String, [wharf_bus::PullConsumer; 3])>,
    shared: &Arc<Shared>,
    concurrency: usize,
    shutdown: &CancellationToken,
) -> (Vec<tokio::task::JoinHandle<()>>, Vec<Arc<Semaphore>>) {
    let mut loops = Vec::new();
    let mut all_slots = Vec::new();
    for (queue, consumer) in consumers {
        let slots = Arc::new(Semaphore::new(concurrency));
        all_slots.push(slots.clone());
        loops.push(tokio::spawn(take::consume(
            queue,
            consumer,
            shared.clone(),
            slots,
            shutdown.clone(),
        )));
    }
    (loops, all_slots)
}

/// The three consumers (one per level) of each queue.
async fn queue_consumers(
    bus: &Bus,
    queues: &[String],
) -> Result<Vec<(String, [wharf_bus::PullConsumer; 3])>, Error> {
    let mut out = Vec::new();
    for q in queues {
        let [high, normal, low] = Priority::ALL;
        let levels = [
            bus.queue_consumer(q, high).await?,
            bus.queue_consumer(q, normal).await?,
            bus.queue_consumer(q, low).await?,
        ];
        out.push((q.clone(), levels));
    }
    Ok(out)
}

/// Learns every cancellation made so far (before the first task is taken), then follows new
/// ones until the returned task is aborted.
async fn follow_cancels(
    bus: &Bus,
    shared: &Arc<Shared>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let (now, live) = bus.watch_cancels().await?;
    for id in now {
        shared.cancels.request(id);
    }
    let shared = shared.clone();
    let mut live = Box::pin(live);
    Ok(tokio::spawn(async move {
        while let Some(id) = live.next().await {
            shared.cancels.request(id);
        }
    }))
}

/// Waits for the running tasks to finish, for the grace period; then hands the rest back and
/// waits (at most 5 s more) for that.
async fn drain(config: &WorkerConfig, shared: &Shared, all_slots: &[Arc<Semaphore>]) {
    let all = u32::try_from(config.concurrency).unwrap_or(u32::MAX);
    let drain = || futures::future::join_all(all_slots.iter().map(|s| s.acquire_many(all)));
    if tokio::time::timeout(config.shutdown_grace, drain())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over: handing the running tasks back");
        shared.abandon.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), drain()).await;
    }
}

/// The tools this worker serves now, by server: what it announces in the worker list.
pub(crate) type Serving = Arc<Mutex<std::collections::BTreeMap<String, Vec<String>>>>;

/// Announces this worker in the worker list every third of the list's TTL, with its tools and
/// the tasks it runs, until dropped.
async fn announce(bus: Bus, config: WorkerConfig, slots: Vec<Arc<Semaphore>>, serving: Serving) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let started_at = chrono::Utc::now();
    let mut every = tokio::time::interval(bus.topology().worker_ttl / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let info = WorkerInfo {
            v: WORKER_INFO_VERSION,
            id: config.id.clone(),
            host: host.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            queues: config.queues.clone(),
            tools: serving
                .lock()
                .unwrap()
                .values()
                .flatten()
                .cloned()
                .collect(),
            concurrency: config.concurrency,
            in_flight: slots
                .iter()
                .map(|s| config.concurrency.saturating_sub(s.available_permits()))
                .sum(),
            started_at,
            seen_at: chrono::Utc::now(),
        };
        if let Err(e) = bus.announce_worker(&info).await {
            tracing::warn!(error = %e, "could not announce this worker");
        }
    }
}

/// Publishes each server's tools to the catalog whenever its connection (re)starts; not those of
/// a connection this worker no longer serves.
async fn advertise(
    bus: Bus,
    queues: Vec<String>,
    mut updates: mpsc::UnboundedReceiver<mcp::ToolsUpdate>,
    servers: Servers,
    serving: Serving,
) {
    while let Some((server, generation, tools)) = updates.recv().await {
        // Only the connection now serving this name: not one stopped since (a registry server
        // removed or changed while it connected).
        let from_registry = match servers.read().unwrap().get(&server) {
            Some(s) if s.generation() == generation => s.from_registry(),
            _ => continue,
        };
        serving.lock().unwrap().insert(
            server.clone(),
            tools
                .iter()
                .map(|t| format!("{server}.{}", t.name))
                .collect(),
        );
        let entry = ToolServer {
            v: TOOL_SERVER_VERSION,
            server: server.clone(),
            queues: queues.clone(),
            tools: tools
                .into_iter()
                .map(|t| ToolInfo {
                    name: format!("{server}.{}", t.name),
                    server: server.clone(),
                    description: t.description.map(|d| d.to_string()),
                    input_schema: serde_json::Value::Object((*t.input_schema).clone()),
                    title: t.title,
                    output_schema: t
                        .output_schema
                        .map(|o| serde_json::Value::Object((*o).clone())),
                    annotations: t.annotations.and_then(|a| serde_json::to_value(a).ok()),
                })
                .collect(),
            updated_at: chrono::Utc::now(),
            registry: from_registry,
        };
        if let Err(e) = bus.advertise_tools(&entry).await {
            tracing::warn!(server = %server, error = %e, "could not advertise tools");
        }
    }
}
