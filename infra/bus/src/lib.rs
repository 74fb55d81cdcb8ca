//! Wharf's use of NATS JetStream: topology, publishing, consuming.
//!
//! This crate turns the names and wire types of `wharf-contract` into JetStream operations: it
//! creates the streams, consumers and key-value buckets (idempotently, at every start), publishes
//! tasks and events with `Nats-Msg-Id` for de-duplication and the trace context in a header, and
//! reads a task's event history. It never spells a subject itself (the contract does) and knows
//! nothing of HTTP, SQL or MCP.

use std::time::Duration;

mod buckets;
mod control;
mod delivery;
mod dlq;
mod history;
mod idempotency;
mod ops;
pub mod retry;
mod secrets;
mod submit;
mod topology;

pub use buckets::Published;
pub use control::{Announcement, CONFIG_CHANGED, KEY_REVOKED};
pub use delivery::{Delivery, RETRY_SOON};
pub use history::decode_event;
pub use idempotency::Claim;
pub use secrets::{redact_url, scrub_url, url_secrets};

use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, HeaderValue};
use wharf_contract::{ATTEMPTS_USED_HEADER, EVENTS_STREAM, SCHEMA_HEADER, TRACEPARENT_HEADER};

pub use async_nats::jetstream::Message;
pub use async_nats::jetstream::consumer::PullConsumer;

/// Failures talking to NATS. The message says which operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to nats at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("{op}: {message}")]
    Nats { op: &'static str, message: String },
    #[error("malformed message on {subject}: {source}")]
    Decode {
        subject: String,
        source: wharf_contract::event::DecodeError,
    },
}

/// Turns a client error into [`Error::Nats`] naming the operation: `.map_err(nats("..."))`.
pub(crate) fn nats<E: std::fmt::Display>(op: &'static str) -> impl Fn(E) -> Error + Copy {
    move |e| Error::Nats {
        op,
        message: e.to_string(),
    }
}

/// How the streams and buckets are laid out; every field has a working default.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Replicas of every stream and bucket (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    /// How long task events are kept.
    pub events_max_age: Duration,
    /// Window in which a re-published message with the same `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
    /// How long a delivered task stays leased without a heartbeat before it is redelivered.
    pub ack_wait: Duration,
    /// How long cancellation requests are remembered.
    pub cancel_ttl: Duration,
    /// How long an idempotency key keeps naming the task it created.
    pub idempotency_window: Duration,
    /// How long a worker stays listed after its last announcement; it announces itself every
    /// third of this.
    pub worker_ttl: Duration,
    /// How long a submission rides out a hiccup of JetStream (a stream's leader being elected,
    /// a reconnect to another server) before it is refused with 503. A leader that steps down
    /// gracefully is replaced well within the default; one that crashed takes a Raft election
    /// (seconds), which this is meant to outlast too.
    pub submit_patience: Duration,
    /// The JetStream domain to ask, when the server connected to is not the one that stores the
    /// streams: a worker on a leaf node names the hub's domain (docs/deployment.md).
    pub domain: Option<String>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            replicas: 1,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(6),
            cancel_ttl: Duration::from_secs(7 * 24 * 3600),
            idempotency_window: Duration::from_secs(24 * 3600),
            worker_ttl: Duration::from_secs(10),
            submit_patience: Duration::from_secs(10),
            domain: None,
        }
    }
}

/// A connection to NATS with a JetStream context.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    topology: Topology,
    /// The idempotency bucket, opened once (opening asks the server for the stream's info).
    idempotency: std::sync::Arc<tokio::sync::OnceCell<kv::Store>>,
}

/// Room kept in every message for its headers (schema, message id, traceparent) and, for a
/// task, the dead letter that may one day hold it (the task with its last error around it).
pub const MESSAGE_HEADROOM: usize = 4096;

/// The length of `value` as JSON, without keeping the bytes: to tell whether it fits in a
/// message before sending it.
pub fn encoded_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("wire types serialise");
    count.0
}

/// Header values for a message.
pub(crate) fn headers(schema: &'static str, traceparent: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(SCHEMA_HEADER, HeaderValue::from(schema));
    if let Some(tp) = traceparent {
        h.insert(TRACEPARENT_HEADER, HeaderValue::from(tp));
    }
    h
}

/// Attempts a task used before this message was (re)published; 0 for a first publish.
pub fn attempts_used(message: &async_nats::Message) -> u32 {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(ATTEMPTS_USED_HEADER))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// The trace context carried by a message, if any.
pub fn traceparent_of(message: &async_nats::Message) -> Option<String> {
    message
        .headers
        .as_ref()?
        .get(TRACEPARENT_HEADER)
        .map(|v| v.as_str().to_owned())
}

impl Bus {
    /// Connects to `url`, naming the connection `name` (shown in the server's monitoring).
    /// `url` may name several servers of a cluster, comma-separated: the client picks one,
    /// learns the others from it, and moves to another when its server goes away.
    pub async fn connect(url: &str, name: &str, topology: Topology) -> Result<Bus, Error> {
        let failed = |source| Error::Connect {
            url: redact_url(url),
            source,
        };
        let urls = secrets::url_list(url).unwrap_or_else(|| vec![url.trim()]);
        let addrs = urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                failed(async_nats::ConnectError::with_source(
                    async_nats::ConnectErrorKind::ServerParse,
                    e,
                ))
            })?;
        // Credentials in the URL (`nats://user:password@host`, `nats://token@host`) are sent
        // as such: the client library would otherwise leave them out. With several URLs, the
        // first that carries any speaks for all (a cluster has one set of users).
        let mut options = async_nats::ConnectOptions::new();
        if let Some(addr) = addrs.iter().find(|a| a.username().is_some()) {
            match (addr.username(), addr.password()) {
                (Some(user), Some(password)) => {
                    options =
                        options.user_and_password(secrets::decode(user), secrets::decode(password));
                }
                (Some(token), None) => options = options.token(secrets::decode(token)),
                _ => {}
            }
        }
        let client = options
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(addrs)
            .await
            .map_err(failed)?;
        let api = match &topology.domain {
            Some(domain) => format!("$JS.{domain}.API"),
            None => "$JS.API".to_owned(),
        };
        let js = jetstream::ContextBuilder::new()
            .api_prefix(api)
            .timeout(Duration::from_secs(10))
            .max_ack_inflight(16_384)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Bus {
            client,
            js,
            topology,
            idempotency: Default::default(),
        })
    }

    /// The core NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The largest message the server takes, headers and payload together (nats-server's
    /// `max_payload`, 1 MiB unless configured otherwise), as its last `INFO` said.
    pub fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    /// The largest task or event body Wharf publishes: [`Bus::max_payload`] less
    /// [`MESSAGE_HEADROOM`].
    pub fn body_room(&self) -> usize {
        self.max_payload().saturating_sub(MESSAGE_HEADROOM)
    }

    /// True when the connection to the server is up.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The events stream, without asking the server for its info.
    pub(crate) async fn events_stream(&self) -> Result<jetstream::stream::Stream<()>, Error> {
        self.stream(EVENTS_STREAM).await
    }

    /// Stream `name`, without asking the server for its info.
    pub(crate) async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream<()>, Error> {
        self.js
            .get_stream_no_info(name)
            .await
            .map_err(nats("open a stream"))
    }
}
