//! The Wharf gateway: HTTP `/api/v1` and WebSocket `/ws/v1` in front of the queue.
//!
//! It is thin: it validates, publishes to JetStream and answers; it reads task state from the
//! database (falling back to the event stream for tasks the recorder has not reached yet). It
//! never calls an MCP server: all tool work goes through the queue. Every error leaves as RFC 9457
//! problem+json with a stable code (`problem.rs`).

mod agents;
pub mod audit;
pub mod auth;
mod callbacks;
mod catalog;
mod config;
pub mod console;
mod dlq;
pub mod hooks;
mod http;
mod keys;
pub mod limits;
pub mod mcp;
pub mod nats_api;
pub mod nats_auth;
mod openapi;
mod ops;
mod problem;
mod queues;
mod router;
mod serve;
mod sessions;
mod state;
mod tasks;
mod tools;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wharf_bus::Bus;
use wharf_store::Store;

pub use audit::AuditConfig;
pub use auth::{AuthConfig, AuthMode, JwtConfig};
pub use catalog::Catalog;
pub use limits::{LimitsConfig, Rate};
pub use problem::ApiError;
pub use serve::TlsConfig;
pub use state::{AppState, QueueDefaults, Settings, Shared};

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
    /// How `/mcp` answers.
    pub mcp: mcp::McpConfig,
    /// Where task callbacks may point (`[callbacks]`): a submission naming another target is
    /// refused.
    pub callback_policy: wharf_webhooks::TargetPolicy,
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
            mcp: mcp::McpConfig::default(),
            callback_policy: wharf_webhooks::TargetPolicy::default(),
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
        let authenticator = auth::Authenticator::new(config.auth.clone(), store.clone())
            .map_err(|e| Error::Config(e.to_string()))?;
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
        // The queues it is configured with get their consumers now, so that an autoscaler sees
        // their backlog before any worker started (other queues once a worker serves them).
        bus.ensure_queue_consumers(wharf_contract::DEFAULT_QUEUE)
            .await;
        for queue in config.queues.keys() {
            bus.ensure_queue_consumers(queue).await;
        }
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
            workers_cache: tokio::sync::Mutex::new(None),
        }));
        config::load_latest(&state).await;
        tokio::spawn(config::follow_changes(state.clone()));
        tokio::spawn(ops::refresh_status(state.clone()));
        tokio::spawn(auth::follow_revocations(state.clone()));
        tokio::spawn(auth::keep_jwks_fresh(state.clone()));
        tokio::spawn(limits::shrink_periodically(state.clone()));
        tokio::spawn(nats_api::serve(state.clone()));
        if let Some(n) = state.config.nats_auth.clone() {
            tokio::spawn(nats_auth::serve(state.clone(), n));
        }
        Ok(Gateway {
            listener,
            router: router::router(state),
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
