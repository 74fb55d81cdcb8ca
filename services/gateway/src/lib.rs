//! The Wharf gateway: HTTP `/api/v1` and WebSocket `/ws/v1` in front of the queue.
//!
//! It is thin: it validates, publishes to JetStream and answers; it reads task state from the
//! database (falling back to the event stream for tasks the recorder has not reached yet). It
//! never calls an MCP server: all tool work goes through the queue. Every error leaves as RFC 9457
//! problem+json with a stable code (`problem.rs`).

pub mod audit;
pub mod auth;
mod catalog;
mod config;
mod dlq;
mod http;
mod keys;
pub mod limits;
pub mod nats_auth;
mod openapi;
mod ops;
mod problem;
mod resources;
mod serve;
mod tasks;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wharf_bus::Bus;
use wharf_contract::ErrorCode;
use wharf_store::Store;

pub use audit::AuditConfig;
pub use auth::{AuthConfig, AuthMode, JwtConfig};
pub use catalog::Catalog;
pub use limits::{LimitsConfig, Rate};
pub use problem::ApiError;
pub use serve::TlsConfig;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen; port 0 picks a free one (see [`Gateway::local_addr`]).
    pub listen: SocketAddr,
    /// Largest accepted request body and WebSocket message, in bytes.
    pub max_body_bytes: usize,
    /// `max_attempts` of a task that names none.
    pub default_max_attempts: u32,
    /// Defaults of particular queues, over the ones above.
    pub queues: std::collections::BTreeMap<String, QueueDefaults>,
    /// Who may call, and how they prove it.
    pub auth: AuthConfig,
    /// Rate limits and the per-tenant cap on unfinished tasks.
    pub limits: LimitsConfig,
    /// Origins a browser may call the API from (CORS); none when empty. `*` allows any.
    pub cors_origins: Vec<String>,
    /// Where the audit log goes.
    pub audit: AuditConfig,
    /// Serve HTTPS (and send HSTS) with this certificate; plain HTTP when `None`.
    pub tls: Option<TlsConfig>,
    /// Largest request head (request line and headers), in bytes (at least 8 KiB); 431 beyond.
    pub max_header_bytes: usize,
    /// Time a client has to send a request head (and finish a TLS handshake).
    pub header_timeout: std::time::Duration,
    /// Longest a request may take until its answer starts (streams then run on); 504 after.
    pub request_timeout: std::time::Duration,
    /// Life of a session created without `ttl_secs`.
    pub session_ttl: std::time::Duration,
    /// Answer nats-server's auth callout, letting tenants follow their tasks' events on NATS
    /// with their own credentials (see `nats_auth`).
    pub nats_auth: Option<nats_auth::NatsAuthConfig>,
}

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

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            default_max_attempts: 3,
            queues: Default::default(),
            // A gateway built without configuration is a local one (tests, `wharf dev`): open,
            // which `validate` allows on loopback addresses only.
            auth: AuthConfig {
                mode: Some(AuthMode::Open),
                ..AuthConfig::default()
            },
            limits: LimitsConfig::default(),
            cors_origins: Vec::new(),
            audit: AuditConfig::default(),
            tls: None,
            max_header_bytes: 16 * 1024,
            header_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(60),
            session_ttl: std::time::Duration::from_secs(24 * 3600),
            nats_auth: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bus(#[from] wharf_bus::Error),
    #[error("http server failed: {0}")]
    Serve(std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
}

impl GatewayConfig {
    /// Checks the per-queue defaults against the limits a submission must keep to, and that an
    /// open gateway listens on a loopback address only.
    pub fn validate(&self) -> Result<(), Error> {
        if self.auth.mode == Some(AuthMode::Open) && !self.listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "gateway.auth.mode = \"open\" lets anyone in, so it is allowed on a loopback \
                 address only, not {}; configure API keys or JWT (docs/security.md)",
                self.listen
            )));
        }
        // Revision 0 of the runtime settings keeps to the rules of every later one.
        config::validate(&self.runtime()).map_err(|(path, why)| {
            Error::Config(format!("gateway.{}: {why}", path.replace('/', ".")))
        })?;
        if let Some(n) = &self.nats_auth {
            n.keys().map_err(Error::Config)?;
        }
        if !(8 * 1024..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(Error::Config(
                "gateway.max_header_bytes must be between 8192 and 1048576".into(),
            ));
        }
        if self.header_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::Config(
                "gateway.header_timeout_secs and request_timeout_secs must be at least 1".into(),
            ));
        }
        for origin in &self.cors_origins {
            if origin != "*" && origin.parse::<axum::http::HeaderValue>().is_err() {
                return Err(Error::Config(format!(
                    "gateway.cors_origins: {origin:?} is not a valid origin"
                )));
            }
        }
        Ok(())
    }
}

/// What every handler shares. One `Arc`: axum clones the state for every middleware and
/// handler a request passes, and cloning the parts one by one (the NATS client alone is several
/// reference counts and a channel sender) cost more CPU than the request itself.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

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
    settings: std::sync::RwLock<Arc<Settings>>,
}

impl Shared {
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
    pub session_ttl: std::time::Duration,
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
            session_ttl: std::time::Duration::from_secs(runtime.session_ttl_secs),
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
        }
    }
}

/// A gateway bound to its port, ready to serve.
pub struct Gateway {
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: serve::Limits,
    stopping: CancellationToken,
    /// The audit writer, awaited at the end so the last entries are written.
    audit_writer: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Binds the port, makes sure the streams exist and starts following the tool catalog.
    pub async fn build(config: GatewayConfig, bus: Bus, store: Store) -> Result<Gateway, Error> {
        config.validate()?;
        wharf_telemetry::install_crypto();
        let authenticator =
            auth::Authenticator::new(config.auth.clone(), store.clone()).map_err(Error::Config)?;
        // Tokens signed by the provider's keys work from the first request, or once it answers.
        if let Err(e) = authenticator.refresh_jwks().await {
            tracing::warn!(error = %e, "cannot read the JWKS yet; trying again every 10 s");
        }
        let (audit, audit_writer) = audit::Audit::start(&config.audit, store.clone())
            .await
            .map_err(Error::Config)?;
        let tls = config
            .tls
            .as_ref()
            .map(serve::tls_acceptor)
            .transpose()
            .map_err(Error::Config)?;
        let limits = serve::Limits {
            max_header_bytes: config.max_header_bytes,
            max_headers: 100,
            header_timeout: config.header_timeout,
        };
        wharf_telemetry::metrics::install();
        bus.ensure_topology().await?;
        let catalog = Catalog::watch(&bus).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen,
                source,
            })?;
        let stopping = CancellationToken::new();
        if authenticator.mode() == AuthMode::Open {
            tracing::warn!(
                listen = %config.listen,
                "OPEN MODE: requests without credentials act as an admin of the default tenant. \
                 For local development only; this gateway listens on a loopback address."
            );
        }
        let state = AppState(Arc::new(Shared {
            bus,
            store,
            catalog,
            settings: std::sync::RwLock::new(Arc::new(Settings::new(
                0,
                config.runtime(),
                None,
                None,
            ))),
            config: Arc::new(config),
            stopping: stopping.clone(),
            status: tokio::sync::watch::Sender::new(None),
            auth: Arc::new(authenticator),
            audit,
        }));
        config::load_latest(&state).await;
        tokio::spawn(config::follow_changes(state.clone()));
        tokio::spawn(ops::refresh_status(state.clone()));
        tokio::spawn(auth::follow_revocations(state.clone()));
        tokio::spawn(auth::keep_jwks_fresh(state.clone()));
        tokio::spawn(limits::shrink_periodically(state.clone()));
        if let Some(n) = state.config.nats_auth.clone() {
            tokio::spawn(nats_auth::serve(state.clone(), n));
        }
        Ok(Gateway {
            listener,
            router: router(state),
            tls,
            limits,
            stopping,
            audit_writer,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` fires, then finishes the requests in flight.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        let stopping = self.stopping.clone();
        // Long-lived streams end with `stopping`, as the connections start closing.
        let linked = tokio::spawn(async move {
            shutdown.cancelled().await;
            stopping.cancel();
        });
        let served = serve::serve(
            self.listener,
            self.router,
            self.tls,
            self.limits,
            self.stopping.clone(),
        )
        .await;
        linked.abort();
        served.map_err(Error::Serve)?;
        // Every request has been answered; the writer ends once the last handle to it (held
        // by tasks that end with `stopping`) is gone.
        if let Some(writer) = self.audit_writer
            && tokio::time::timeout(std::time::Duration::from_secs(10), writer)
                .await
                .is_err()
        {
            tracing::error!("the audit writer did not finish within 10 s; entries may be lost");
        }
        Ok(())
    }
}

/// Every route of the gateway.
fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    // Everything but the health checks needs a caller: `auth::authenticate` runs first.
    let authenticated = Router::new()
        .route("/api/v1/tasks", post(tasks::create).get(tasks::list))
        .route("/api/v1/tasks/batch", post(tasks::create_batch))
        .route("/api/v1/tasks/{id}", get(tasks::get))
        .route("/api/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/api/v1/tasks/{id}/events", get(tasks::events))
        .route("/api/v1/dlq", get(dlq::list))
        .route("/api/v1/dlq/{id}", get(dlq::get))
        .route("/api/v1/dlq/{id}/replay", post(dlq::replay))
        .route("/api/v1/tools", get(resources::tools))
        .route("/api/v1/tools/{name}/call", post(resources::call))
        .route(
            "/api/v1/sessions",
            post(resources::create_session).get(resources::list_sessions),
        )
        .route(
            "/api/v1/sessions/{id}",
            get(resources::get_session).delete(resources::delete_session),
        )
        .route(
            "/api/v1/agents",
            post(resources::create_agent).get(resources::list_agents),
        )
        .route(
            "/api/v1/agents/{name}",
            get(resources::get_agent).put(resources::update_agent),
        )
        .route("/api/v1/workers", get(ops::workers))
        .route("/api/v1/queues", get(ops::queues))
        .route("/api/v1/keys", post(keys::create).get(keys::list))
        .route("/api/v1/keys/{id}", get(keys::get).delete(keys::revoke))
        .route("/api/v1/whoami", get(auth::whoami))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/config", get(config::get).put(config::update))
        .route("/api/v1/config/revisions", get(config::revisions))
        .route("/ws/v1/tasks", get(ws::upgrade))
        .route("/metrics", get(ops::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    // Routes here and in `openapi::operations` go together: a test compares the two lists.
    let mut router = Router::new()
        .merge(authenticated)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi::serve_document))
        .route("/api/v1/docs", get(openapi::docs_page))
        .route("/api/v1/docs/{file}", get(openapi::docs_asset))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::per_ip,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record_http,
        ));
    if let Some(cors) = cors(&state.config.cors_origins) {
        router = router.layer(cors);
    }
    if let Some(tls) = &state.config.tls
        && tls.hsts_max_age_secs > 0
    {
        let value = format!("max-age={}; includeSubDomains", tls.hsts_max_age_secs);
        router = router.layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            axum::http::HeaderValue::from_str(&value).expect("a valid header value"),
        ));
    }
    router = router.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        deadline,
    ));
    // A bug that panics in a handler still gets an answer (500 `internal`), not a dropped
    // connection; the panic is logged.
    router = router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        |_: Box<dyn std::any::Any + Send>| {
            ApiError::internal("a request handler panicked").into_response()
        },
    ));
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_announced_oversize,
        ))
        .layer(axum::middleware::from_fn(ops::measure))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Answers 413 at once to a request whose `Content-Length` is over `max_body_bytes`, before any
/// of its body is read (or a `100 Continue` asks for it). A body without a length is cut off at
/// the limit as it is read; either way the connection is closed with a lingering close
/// (`serve.rs`), so a client still sending reads the answer.
async fn refuse_announced_oversize(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = state.config.max_body_bytes;
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(n) if n > limit as u64 => ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the body is {n} bytes; at most {limit} are accepted (gateway.max_body_bytes)"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Answers 504 `timeout` when a request takes longer than `request_timeout` to start its
/// answer. Streams (SSE, WebSocket) start at once and then run as long as they need.
async fn deadline(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = state.config.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!(
                "the request took longer than {} s; it may have been carried out: look before \
                 retrying, or retry with the same idempotency key",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// The CORS layer for the configured origins, if any.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                axum::http::header::LOCATION,
                axum::http::header::RETRY_AFTER,
                HeaderName::from_static("ratelimit-limit"),
                HeaderName::from_static("ratelimit-remaining"),
                HeaderName::from_static("ratelimit-reset"),
                HeaderName::from_static("x-request-id"),
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

/// `GET /healthz`: the process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: NATS and the database both answer.
async fn readyz(State(state): State<AppState>) -> Response {
    let nats = state.bus.is_connected();
    let database = state.store.ping().await;
    let body = Json(serde_json::json!({ "nats": nats, "database": database }));
    if nats && database {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("nothing at {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_defaults_outside_the_limits_are_refused() {
        let with = |q: QueueDefaults| GatewayConfig {
            queues: [("emails".to_owned(), q)].into(),
            ..Default::default()
        };
        assert!(with(QueueDefaults::default()).validate().is_ok());
        for bad in [
            QueueDefaults {
                max_attempts: Some(0),
                ..Default::default()
            },
            QueueDefaults {
                timeout_secs: Some(100_000),
                ..Default::default()
            },
            QueueDefaults {
                retry: Some(wharf_contract::RetryPolicy {
                    initial_ms: 5_000,
                    max_ms: 1_000,
                }),
                ..Default::default()
            },
        ] {
            let e = with(bad.clone()).validate().unwrap_err().to_string();
            assert!(e.contains("gateway.queues.emails"), "{bad:?}: {e}");
        }
        let bad_name = GatewayConfig {
            queues: [("no.dots".to_owned(), QueueDefaults::default())].into(),
            ..Default::default()
        };
        assert!(bad_name.validate().is_err());
        // The file's session life keeps to the API's range: too short a default would make
        // every session created without ttl_secs a refusal.
        let short_sessions = GatewayConfig {
            session_ttl: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        let e = short_sessions.validate().unwrap_err().to_string();
        assert!(e.contains("gateway.session_ttl_secs"), "{e}");
    }

    #[test]
    fn an_open_gateway_listens_on_loopback_only() {
        let open = GatewayConfig::default();
        assert_eq!(open.auth.mode, Some(AuthMode::Open));
        assert!(open.validate().is_ok());
        let exposed = GatewayConfig {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..GatewayConfig::default()
        };
        let e = exposed.validate().unwrap_err().to_string();
        assert!(e.contains("loopback"), "{e}");
        let closed = GatewayConfig {
            auth: AuthConfig::default(),
            ..exposed
        };
        assert!(
            closed.validate().is_ok(),
            "required is the default of a configured gateway"
        );
    }
}
