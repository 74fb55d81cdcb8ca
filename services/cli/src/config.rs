//! The one configuration struct, loaded from defaults, an optional TOML file and `WHARF_`
//! environment variables (later sources win). Nested keys use `__` in the environment, e.g.
//! `WHARF_WORKER__CONCURRENCY=64`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::sections::{CallbacksSection, HistorySection};
use wharf_worker::McpServerConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP and WebSocket API.
    pub http_addr: SocketAddr,
    /// Where `wharf dev` keeps its state (NATS store, SQLite database).
    pub data_dir: PathBuf,
    /// NATS server URL, possibly with credentials (`nats://user:password@host:4222`); the
    /// servers of a cluster as a list or comma-separated (`WHARF_NATS_URL=nats://a,nats://b`).
    /// `wharf dev` starts its own nats-server when this is unset.
    #[serde(default, deserialize_with = "one_or_many_urls")]
    pub nats_url: Option<Secret>,
    /// Database URL, `postgres://…` or `sqlite://…`. `wharf dev` uses SQLite in the data
    /// directory when this is unset.
    pub database_url: Option<Secret>,
    /// `pretty` or `json`; `wharf dev` defaults to pretty, the other commands to json.
    pub log_format: Option<LogFormatName>,
    pub nats: NatsConfig,
    pub gateway: GatewaySection,
    pub worker: WorkerSection,
    #[serde(default)]
    pub history: HistorySection,
    #[serde(default)]
    pub callbacks: CallbacksSection,
}

/// A value that must never be printed (it may hold a password).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// A URL, or several as a list or comma-separated, kept as one comma-separated string.
fn one_or_many_urls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    struct Urls;
    impl<'de> serde::de::Visitor<'de> for Urls {
        type Value = Option<Secret>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a URL, a comma-separated list of URLs, or a list of URLs")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Secret(v.to_owned())))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut urls: Vec<String> = Vec::new();
            while let Some(url) = seq.next_element::<String>()? {
                urls.push(url);
            }
            if urls.is_empty() {
                return Err(serde::de::Error::invalid_length(0, &"at least one URL"));
            }
            Ok(Some(Secret(urls.join(","))))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Urls)
        }
    }
    d.deserialize_any(Urls)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatName {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Replicas of every stream (1 for one server, 3 for a cluster).
    pub replicas: usize,
    /// How long task events are kept, in seconds.
    pub events_max_age_secs: u64,
    /// Lease of a running task without a heartbeat, in seconds (at least 3); workers heartbeat
    /// at a third of it. A dead worker's tasks go to another worker after this.
    pub ack_wait_secs: u64,
    /// How long an idempotency key keeps naming the task it created, in seconds.
    pub idempotency_window_secs: u64,
    /// How long a worker stays in `GET /api/v1/workers` after its last announcement, in
    /// seconds (at least 3); workers announce themselves every third of it.
    pub worker_ttl_secs: u64,
    /// How long a submission waits through a hiccup of JetStream (a stream leader's election, a
    /// reconnect), publishing again, before it is answered 503, in seconds (at least 1).
    pub submit_patience_secs: u64,
    /// The hub's JetStream domain, for a part connected to a leaf node without JetStream of its
    /// own (docs/deployment.md). Unset: the JetStream of the servers connected to.
    #[serde(default)]
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub max_body_bytes: usize,
    pub default_max_attempts: u32,
    /// Defaults per queue: `[gateway.queues.<name>]`.
    #[serde(default)]
    pub queues: std::collections::BTreeMap<String, QueueSection>,
    /// `[gateway.auth]`: API keys, JWT, roles (docs/security.md).
    #[serde(default)]
    pub auth: wharf_gateway::AuthConfig,
    /// `[gateway.limits]`: rate limits and the per-tenant cap on unfinished tasks.
    #[serde(default)]
    pub limits: wharf_gateway::LimitsConfig,
    /// Origins browsers may call the API from (CORS); `["*"]` for any.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// `[gateway.audit]`: the audit log's file, its encryption, the database copy.
    #[serde(default)]
    pub audit: wharf_gateway::AuditConfig,
    /// `[gateway.tls]`: serve HTTPS with this certificate and key (and send HSTS).
    #[serde(default)]
    pub tls: Option<wharf_gateway::TlsConfig>,
    /// Largest request head (request line and headers), in bytes; 431 beyond.
    pub max_header_bytes: usize,
    /// Seconds a client has to send a request head (and finish a TLS handshake).
    pub header_timeout_secs: u64,
    /// Seconds a request may take until its answer starts; 504 `timeout` after.
    pub request_timeout_secs: u64,
    /// Life of a session created without `ttl_secs`, in seconds.
    pub session_ttl_secs: u64,
    /// `[gateway.nats_auth]`: answer nats-server's auth callout so tenants can follow their
    /// tasks on NATS with their own credentials (docs/security.md).
    #[serde(default)]
    pub nats_auth: Option<wharf_gateway::nats_auth::NatsAuthConfig>,
    /// `[gateway.mcp]`: how `/mcp` answers MCP clients (docs/mcp.md).
    #[serde(default)]
    pub mcp: wharf_gateway::mcp::McpConfig,
}

/// `[gateway.queues.<name>]`: what tasks submitted to that queue get when they say nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    pub max_attempts: Option<u32>,
    pub timeout_secs: Option<u64>,
    /// Delay before the second attempt, doubling after each failure.
    pub retry_initial_ms: Option<u64>,
    /// Longest delay between attempts.
    pub retry_max_secs: Option<u64>,
    /// Level of the tasks that name none: `high`, `normal` or `low`.
    pub priority: Option<wharf_contract::Priority>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// Worker processes `wharf dev` runs in-process (each with its own MCP connections).
    pub count: usize,
    pub queues: Vec<String>,
    /// Tasks one worker runs at once.
    pub concurrency: usize,
    pub shutdown_grace_secs: u64,
    /// An attempt still running after this long gets a `started` event of its own; a shorter
    /// one reports its start with its outcome (one message fewer per task). 0: at once.
    pub started_event_after_ms: u64,
    /// MCP servers. When empty, the bundled demo server is used, named `demo`.
    pub servers: Vec<McpServerConfig>,
    /// Connect to the servers of the runtime configuration's MCP registry too.
    pub registry: bool,
    /// When not empty, only registry servers on these hosts (`host` or `host:port`).
    pub registry_hosts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(".wharf"),
            nats_url: None,
            database_url: None,
            log_format: None,
            nats: NatsConfig {
                replicas: 1,
                events_max_age_secs: 7 * 24 * 3600,
                ack_wait_secs: 6,
                idempotency_window_secs: 24 * 3600,
                worker_ttl_secs: 10,
                submit_patience_secs: 10,
                domain: None,
            },
            gateway: GatewaySection {
                max_body_bytes: 1024 * 1024,
                default_max_attempts: 3,
                queues: Default::default(),
                auth: Default::default(),
                limits: Default::default(),
                cors_origins: Vec::new(),
                audit: Default::default(),
                tls: None,
                max_header_bytes: 16 * 1024,
                header_timeout_secs: 10,
                request_timeout_secs: 60,
                session_ttl_secs: 24 * 3600,
                nats_auth: None,
                mcp: Default::default(),
            },
            worker: WorkerSection {
                count: 1,
                queues: vec![wharf_contract::DEFAULT_QUEUE.into()],
                concurrency: 256,
                shutdown_grace_secs: 30,
                started_event_after_ms: 1000,
                servers: Vec::new(),
                registry: true,
                registry_hosts: Vec::new(),
            },
            history: HistorySection::default(),
            callbacks: CallbacksSection::default(),
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (when given), then `WHARF_*` variables.
    pub fn load(file: Option<&PathBuf>) -> Result<Config, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            fig = fig.merge(Toml::file_exact(file));
        }
        const KEYS: [&str; 10] = [
            "http_addr",
            "data_dir",
            "nats_url",
            "database_url",
            "log_format",
            "nats",
            "gateway",
            "worker",
            "history",
            "callbacks",
        ];
        // Other WHARF_ variables (WHARF_API for the client commands, ...) are not config keys.
        let env = Env::prefixed("WHARF_").filter(|key| {
            let k = key.as_str().to_ascii_lowercase();
            KEYS.iter()
                .any(|t| k == *t || k.starts_with(&format!("{t}__")))
        });
        let config: Config = fig.merge(env.split("__")).extract().map_err(Box::new)?;
        config
            .check()
            .map_err(|m| Box::new(figment::Error::from(m)))?;
        Ok(config)
    }

    /// What the fields cannot say one by one. The database must keep a finished task at least
    /// as long as the events stream keeps its events: else a removed task would still be found
    /// by `GET` (from the stream) but not in the list.
    fn check(&self) -> Result<(), String> {
        let retention = u64::from(self.history.retention_days) * 24 * 3600;
        if retention > 0 && retention < self.nats.events_max_age_secs {
            return Err(format!(
                "history.retention_days ({} days) must keep finished tasks at least as long as \
                 the events stream keeps their events (nats.events_max_age_secs = {} s, {:.1} \
                 days); raise the retention, set it to 0 (keep everything), or shorten the stream's",
                self.history.retention_days,
                self.nats.events_max_age_secs,
                self.nats.events_max_age_secs as f64 / 86400.0,
            ));
        }
        Ok(())
    }

    /// Reads the URLs named by `WHARF_NATS_URL_FILE` and `WHARF_DATABASE_URL_FILE` (a file
    /// holding the URL, e.g. a mounted Kubernetes Secret), which win over the other sources.
    /// Secrets in files stay out of the environment, which every child process (a stdio MCP
    /// server, say) inherits.
    pub fn read_secret_files(
        &mut self,
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<(), String> {
        for (slot, name) in [
            (&mut self.nats_url, "WHARF_NATS_URL_FILE"),
            (&mut self.database_url, "WHARF_DATABASE_URL_FILE"),
        ] {
            if let Some(path) = var(name) {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{name}: cannot read {}: {e}", path.display()))?;
                let url = text.trim();
                if url.is_empty() {
                    return Err(format!("{name}: {} is empty", path.display()));
                }
                *slot = Some(Secret(url.to_owned()));
            }
        }
        Ok(())
    }

    pub fn topology(&self) -> wharf_bus::Topology {
        wharf_bus::Topology {
            replicas: self.nats.replicas,
            events_max_age: Duration::from_secs(self.nats.events_max_age_secs),
            ack_wait: Duration::from_secs(self.nats.ack_wait_secs.max(3)),
            idempotency_window: Duration::from_secs(self.nats.idempotency_window_secs.max(1)),
            worker_ttl: Duration::from_secs(self.nats.worker_ttl_secs.max(3)),
            submit_patience: Duration::from_secs(self.nats.submit_patience_secs.max(1)),
            domain: self.nats.domain.clone().filter(|d| !d.is_empty()),
            ..wharf_bus::Topology::default()
        }
    }

    /// Gateway settings. `dev`: under `wharf dev`, where authentication is open (on a loopback
    /// address) unless `gateway.auth.mode` says otherwise.
    pub fn gateway(&self, dev: bool) -> wharf_gateway::GatewayConfig {
        let mut auth = self.gateway.auth.clone();
        if dev && auth.mode.is_none() {
            auth.mode = Some(wharf_gateway::AuthMode::Open);
        }
        let mut audit = self.gateway.audit.clone();
        if dev && audit.file.is_none() {
            audit.file = Some(self.data_dir.join("audit.jsonl"));
        }
        wharf_gateway::GatewayConfig {
            auth,
            audit,
            tls: self.gateway.tls.clone(),
            max_header_bytes: self.gateway.max_header_bytes,
            header_timeout: Duration::from_secs(self.gateway.header_timeout_secs),
            request_timeout: Duration::from_secs(self.gateway.request_timeout_secs),
            session_ttl: Duration::from_secs(self.gateway.session_ttl_secs),
            nats_auth: self.gateway.nats_auth.clone(),
            mcp: self.gateway.mcp.clone(),
            callback_policy: self.callbacks.policy(dev),
            limits: self.gateway.limits.clone(),
            cors_origins: self.gateway.cors_origins.clone(),
            listen: self.http_addr,
            max_body_bytes: self.gateway.max_body_bytes,
            default_max_attempts: self.gateway.default_max_attempts,
            queues: self
                .gateway
                .queues
                .iter()
                .map(|(name, q)| {
                    let retry =
                        (q.retry_initial_ms.is_some() || q.retry_max_secs.is_some()).then(|| {
                            let default = wharf_contract::RetryPolicy::default();
                            wharf_contract::RetryPolicy {
                                initial_ms: q.retry_initial_ms.unwrap_or(default.initial_ms),
                                max_ms: q
                                    .retry_max_secs
                                    .map_or(default.max_ms, |s| s.saturating_mul(1000)),
                            }
                        });
                    let defaults = wharf_gateway::QueueDefaults {
                        max_attempts: q.max_attempts,
                        timeout_secs: q.timeout_secs,
                        retry,
                        priority: q.priority,
                    };
                    (name.clone(), defaults)
                })
                .collect(),
        }
    }

    /// Worker settings; `demo` is the command line that starts the bundled demo server, used
    /// when no server is configured.
    pub fn worker(&self, id: String, demo: McpServerConfig) -> wharf_worker::WorkerConfig {
        let servers = if self.worker.servers.is_empty() {
            vec![demo]
        } else {
            self.worker.servers.clone()
        };
        wharf_worker::WorkerConfig {
            id,
            queues: self.worker.queues.clone(),
            concurrency: self.worker.concurrency,
            servers,
            shutdown_grace: Duration::from_secs(self.worker.shutdown_grace_secs),
            started_event_after: Duration::from_millis(self.worker.started_event_after_ms),
            registry: wharf_worker::RegistryPolicy {
                enabled: self.worker.registry,
                allow_hosts: self.worker.registry_hosts.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in docs/configuration.md must load, so the page cannot rot.
    #[test]
    fn the_documented_example_loads() {
        let doc = include_str!("../../../docs/configuration.md");
        let toml = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/configuration.md has a toml example");
        let dir = std::env::temp_dir().join(format!("wharf-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wharf.toml");
        std::fs::write(&file, toml).unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.worker.servers.len(), 3);
        assert_eq!(config.worker.servers[2].name, "remote");
        assert!(matches!(
            &config.worker.servers[1].transport,
            wharf_worker::McpTransport::Stdio { command, .. } if command == "npx"
        ));
        assert_eq!(config.nats.ack_wait_secs, 6);
        assert_eq!(config.gateway.auth.roles["auditor"].len(), 3);
        assert_eq!(
            config
                .gateway
                .auth
                .jwt
                .as_ref()
                .map(|j| j.audience.as_str()),
            Some("wharf")
        );
        assert_eq!(config.gateway.limits.write.map(|r| r.per_sec), Some(100.0));
        assert_eq!(config.gateway.cors_origins.len(), 1);
        assert!(
            config.gateway(false).validate().is_ok(),
            "the example is a valid gateway configuration"
        );
        assert_eq!(
            config.gateway(true).auth.mode,
            Some(wharf_gateway::AuthMode::Required),
            "a mode given in the file holds under wharf dev too"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The configuration files of the Kubernetes manifests load, make a valid gateway, and
    /// give workers less time to finish than their pods get to stop.
    #[test]
    fn the_kubernetes_configurations_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/k8s");
        let worker = std::fs::read_to_string(root.join("base/worker.yaml")).unwrap();
        let pod_grace: u64 = worker
            .lines()
            .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("the worker pods' grace period");
        for file in ["base", "overlays/dev", "overlays/prod"] {
            let config = Config::load(Some(&root.join(file).join("wharf.toml")))
                .unwrap_or_else(|e| panic!("{file}/wharf.toml: {e}"));
            assert!(
                config.gateway(false).validate().is_ok(),
                "{file}/wharf.toml"
            );
            assert!(
                config.worker.shutdown_grace_secs + 10 <= pod_grace,
                "{file}: workers hand their tasks back before the pod is killed"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("wharf-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for bad in [
            "htp_addr = \"127.0.0.1:1\"\n",
            "[[worker.servers]]\nname = \"x\"\ntransport = \"stdio\"\ncommand = \"x\"\narg = []\n",
            "[[worker.servers]]\nname = \"x\"\ntransport = \"carrier-pigeon\"\n",
        ] {
            let file = dir.join("bad.toml");
            std::fs::write(&file, bad).unwrap();
            assert!(Config::load(Some(&file)).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_retention_must_outlast_the_events_stream() {
        let dir = std::env::temp_dir().join(format!("wharf-config-ret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wharf.toml");
        let load = |toml: &str| {
            std::fs::write(&file, toml).unwrap();
            Config::load(Some(&file))
        };
        // The stream keeps events 7 days by default.
        let err = load("[history]\nretention_days = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("history.retention_days (3 days)"), "{err}");
        assert!(err.contains("nats.events_max_age_secs = 604800 s"), "{err}");
        assert!(load("[history]\nretention_days = 7\n").is_ok());
        assert!(load("[history]\nretention_days = 0\n").is_ok());
        let shorter = "[history]\nretention_days = 3\n[nats]\nevents_max_age_secs = 86400\n";
        assert!(load(shorter).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_nats_url_may_name_several_servers() {
        let dir = std::env::temp_dir().join(format!("wharf-config-urls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wharf.toml");
        for (toml, want) in [
            (
                "nats_url = [\"nats://a:4222\", \"nats://b:4222\"]\n",
                Some("nats://a:4222,nats://b:4222"),
            ),
            (
                "nats_url = \"nats://a:4222,nats://b:4222\"\n",
                Some("nats://a:4222,nats://b:4222"),
            ),
            ("http_addr = \"127.0.0.1:1\"\n", None),
        ] {
            std::fs::write(&file, toml).unwrap();
            let config = Config::load(Some(&file)).unwrap();
            assert_eq!(
                config.nats_url.as_ref().map(|u| u.0.as_str()),
                want,
                "{toml}"
            );
        }
        std::fs::write(&file, "nats_url = []\n").unwrap();
        assert!(
            Config::load(Some(&file)).is_err(),
            "an empty list names no server"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn urls_may_come_from_files() {
        let dir = std::env::temp_dir().join(format!("wharf-config-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("db");
        std::fs::write(&file, "postgres://u:p@db/w\n").unwrap();
        let mut config = Config::default();
        let vars = |name: &str| (name == "WHARF_DATABASE_URL_FILE").then(|| file.clone().into());
        config.read_secret_files(vars).unwrap();
        assert_eq!(config.database_url.unwrap().0, "postgres://u:p@db/w");
        assert!(config.nats_url.is_none());
        let missing = |_: &str| Some(dir.join("absent").into());
        let e = Config::default().read_secret_files(missing).unwrap_err();
        assert!(e.starts_with("WHARF_NATS_URL_FILE: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_database_url_never_prints() {
        let config = Config {
            database_url: Some(Secret("postgres://u:hunter2@db/w".into())),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
        let config = Config {
            nats_url: Some(Secret("nats://wharf:hunter3@nats:4222".into())),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter3"));
    }
}
