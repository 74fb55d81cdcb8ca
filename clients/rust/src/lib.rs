//! Wharf's Rust SDK: a typed client of the gateway's HTTP API (`/api/v1`).
//!
//! It owns the HTTP side of talking to a gateway: paths, credentials, reading answers and
//! problems, following a task's events. The bodies are the contract's types
//! (`wharf_contract`), the same the gateway reads and writes, so a client and a gateway of one
//! build cannot disagree on a field. It never talks to NATS or the database: what it can do is
//! what the API lets its credential do.
//!
//! ```no_run
//! # async fn run() -> wharf_client::Result<()> {
//! use wharf_client::Client;
//! use wharf_contract::SubmitTask;
//!
//! let wharf = Client::new("http://127.0.0.1:8080")?.with_credential("wharf_…")?;
//! let task = SubmitTask::new("demo.echo").argument("message", "hello");
//! let accepted = wharf.submit(&task).await?;
//! let done = wharf.wait(accepted.task.id).await?;
//! println!("{:?}: {:?}", done.status, done.result);
//! # Ok(())
//! # }
//! ```
//!
//! Every call returns [`Error::Api`] with the gateway's problem (its stable `code`, the failing
//! fields) when the gateway refuses it. For what the typed calls do not cover (a header of
//! your own, a body built by hand), [`Client::request`] gives a request with the client's
//! base URL and credential applied.

mod error;
mod sse;

use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;
use wharf_contract::{
    Agent, AgentList, AgentSpec, ApiKeyInfo, ApiKeyList, AuditList, CallTool, ConfigHistory,
    ConfigView, CreateKey, CreateSession, CreatedKey, DeadLetter, DeadLetterList, DeletedSession,
    Delivery, DeliveryList, Identity, Problem, QueueInfo, QueueList, Session, SessionList,
    SubmitBatch, SubmitTask, TaskBatch, TaskList, TaskView, ToolList, UpdateConfig, WorkerList,
    WsServerMessage,
};

pub use error::{Error, Result};

/// A gateway, and who is asking.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// `Authorization: Bearer …`, built and checked once, marked sensitive.
    credential: Option<reqwest::header::HeaderValue>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("credential", &self.credential.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A submission the gateway took.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub task: TaskView,
    /// True when the idempotency key named a task submitted before (200): this is that task,
    /// and nothing new was queued.
    pub existing: bool,
}

/// The answer to a tool call.
#[derive(Debug, Clone)]
pub struct Called {
    pub task: TaskView,
    /// True when the task ended within the wait (200); false when it still runs (202).
    pub finished: bool,
}

/// Filters and page of `GET /api/v1/tasks`; all optional.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `<server>.<tool>`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Submitted at or after this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_after: Option<String>,
    /// Submitted before this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_before: Option<String>,
    /// `full` to have each task's `arguments`, `metadata` and `result` in the page; a page
    /// holds summaries without them otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Filter and page of `GET /api/v1/deliveries`; all optional.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Filters and page of `GET /api/v1/audit`; all optional.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Another tenant's log, or `*` for all (needs `tenants:admin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A page of a list: its size and where the previous one ended (`next_cursor`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Page {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A task's events as they happen, history first (see [`Client::follow`]).
pub type Events = std::pin::Pin<Box<dyn Stream<Item = Result<WsServerMessage>> + Send>>;

impl Client {
    /// A client of the gateway at `base` (e.g. `http://127.0.0.1:8080`), without credentials.
    pub fn new(base: &str) -> Result<Client> {
        // The HTTP client is built without a TLS provider of its own, so that one serves a
        // whole binary; install ring's unless the program chose one already.
        static CRYPTO: std::sync::Once = std::sync::Once::new();
        CRYPTO.call_once(|| {
            let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        });
        let base = checked_base(base)?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::Config(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            base,
            http,
            credential: None,
        })
    }

    /// The same gateway, asked with `credential`: an API key (`wharf_…`) or a JWT, sent as
    /// `Authorization: Bearer`.
    pub fn with_credential(&self, credential: &str) -> Result<Client> {
        let mut header = reqwest::header::HeaderValue::from_str(&format!("Bearer {credential}"))
            .map_err(|_| Error::Config("the credential holds characters a header cannot".into()))?;
        header.set_sensitive(true);
        Ok(Client {
            credential: Some(header),
            ..self.clone()
        })
    }

    /// Another gateway (e.g. a second instance behind the same load balancer), asked with
    /// the same credential; the connection pool is shared.
    pub fn at(&self, base: &str) -> Result<Client> {
        Ok(Client {
            base: checked_base(base)?,
            ..self.clone()
        })
    }

    /// The same gateway, asked without credentials.
    pub fn anonymous(&self) -> Client {
        Client {
            credential: None,
            ..self.clone()
        }
    }

    /// The gateway's base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `path` (from `/`) on the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` with the client's credential, for what the typed calls do not say.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.credential {
            Some(c) => req.header(reqwest::header::AUTHORIZATION, c.clone()),
            None => req,
        }
    }

    /// Sends `req` and reads a success as `T`; anything else is an [`Error`].
    async fn call<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<(StatusCode, T)> {
        let response = self.send(req).await?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&body)
            .map(|v| (status, v))
            .map_err(|e| Error::Decode(format!("{status}: {e}")))
    }

    /// Sends `req`; a non-success answer is an [`Error`].
    async fn send(&self, req: RequestBuilder) -> Result<reqwest::Response> {
        let response = req.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        Err(match serde_json::from_slice::<Problem>(&body) {
            Ok(p) => Error::api(p, retry_after),
            Err(_) => Error::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            },
        })
    }

    fn transport(&self, source: reqwest::Error) -> Error {
        Error::Transport {
            base: self.base.clone(),
            source,
        }
    }

    /// Sends `req` and reads a success as `T`, whatever its status.
    async fn read<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        Ok(self.call(req).await?.1)
    }

    /// Sends a submission (`req`): 202 is a new task, 200 the one its idempotency key names.
    async fn accepted(&self, req: RequestBuilder) -> Result<Accepted> {
        let (status, task) = self.call(req).await?;
        Ok(Accepted {
            task,
            existing: status == StatusCode::OK,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.read(self.request(Method::GET, path)).await
    }

    async fn get_with<T: DeserializeOwned>(&self, path: &str, query: &impl Serialize) -> Result<T> {
        self.read(self.request(Method::GET, path).query(query))
            .await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.read(self.request(Method::POST, path).json(body)).await
    }

    // Tasks.

    /// `POST /api/v1/tasks`: durably queued once this returns.
    pub async fn submit(&self, task: &SubmitTask) -> Result<Accepted> {
        let req = self.request(Method::POST, "/api/v1/tasks").json(task);
        self.accepted(req).await
    }

    /// `POST /api/v1/tasks/batch`: all stored, or none.
    pub async fn submit_batch(&self, tasks: Vec<SubmitTask>) -> Result<Vec<TaskView>> {
        let batch: TaskBatch = self
            .post("/api/v1/tasks/batch", &SubmitBatch { tasks })
            .await?;
        Ok(batch.tasks)
    }

    /// `GET /api/v1/tasks/{id}`
    pub async fn task(&self, id: Uuid) -> Result<TaskView> {
        self.get(&format!("/api/v1/tasks/{id}")).await
    }

    /// `GET /api/v1/tasks`: newest first.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<TaskList> {
        self.get_with("/api/v1/tasks", query).await
    }

    /// `POST /api/v1/tasks/{id}/cancel`
    pub async fn cancel(&self, id: Uuid) -> Result<TaskView> {
        self.read(self.request(Method::POST, &format!("/api/v1/tasks/{id}/cancel")))
            .await
    }

    /// `GET /api/v1/tasks/{id}/events`: the task's history, then its live events; the stream
    /// ends after the terminal event. An `error` the gateway ends a stream with (the
    /// credential revoked or expired) is an [`Error::Api`] item.
    pub async fn follow(&self, id: Uuid) -> Result<Events> {
        let req = self.request(Method::GET, &format!("/api/v1/tasks/{id}/events"));
        let response = self.send(req).await?;
        Ok(Box::pin(sse::messages(response.bytes_stream())))
    }

    /// Follows the task to its end, then reads it (the result or error is in the view);
    /// [`Error::StreamEnded`] if the stream ends first.
    pub async fn wait(&self, id: Uuid) -> Result<TaskView> {
        let mut events = self.follow(id).await?;
        loop {
            match events.next().await {
                Some(message) => {
                    if message?.is_terminal() {
                        break;
                    }
                }
                None => return Err(Error::StreamEnded(id)),
            }
        }
        // The read side may trail the event by a moment: read until it shows the end.
        for _ in 0..50 {
            let view = self.task(id).await?;
            if view.status.is_terminal() {
                return Ok(view);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.task(id).await
    }

    /// `POST /api/v1/tools/{name}/call?wait=`: runs the tool through the queue and waits up to
    /// `wait` (the gateway's default, 30 s, when `None`; at most 50 s) for it to end.
    pub async fn call_tool(
        &self,
        name: &str,
        call: &CallTool,
        wait: Option<Duration>,
    ) -> Result<Called> {
        let mut req = self
            .request(Method::POST, &format!("/api/v1/tools/{name}/call"))
            .json(call);
        if let Some(w) = wait {
            req = req.query(&[("wait", format!("{}ms", w.as_millis()))]);
        }
        let (status, task) = self.call(req).await?;
        Ok(Called {
            task,
            finished: status == StatusCode::OK,
        })
    }

    /// `GET /api/v1/tools`: the catalog the workers serve.
    pub async fn tools(&self) -> Result<ToolList> {
        self.get("/api/v1/tools").await
    }

    // Dead letters.

    /// `GET /api/v1/dlq`: oldest first.
    pub async fn dead_letters(&self, page: &Page) -> Result<DeadLetterList> {
        self.get_with("/api/v1/dlq", page).await
    }

    /// `GET /api/v1/dlq/{id}`
    pub async fn dead_letter(&self, task_id: Uuid) -> Result<DeadLetter> {
        self.get(&format!("/api/v1/dlq/{task_id}")).await
    }

    /// `POST /api/v1/dlq/{id}/replay`: the dead task again, as a new task.
    pub async fn replay(&self, task_id: Uuid) -> Result<Accepted> {
        let req = self.request(Method::POST, &format!("/api/v1/dlq/{task_id}/replay"));
        self.accepted(req).await
    }

    // Callback deliveries.

    /// `GET /api/v1/tasks/{id}/deliveries`: a task's deliveries in order, with every attempt.
    pub async fn task_deliveries(&self, task_id: Uuid) -> Result<DeliveryList> {
        self.get(&format!("/api/v1/tasks/{task_id}/deliveries"))
            .await
    }

    /// `GET /api/v1/deliveries`: the tenant's deliveries, newest first.
    pub async fn deliveries(&self, query: &DeliveryQuery) -> Result<DeliveryList> {
        self.get_with("/api/v1/deliveries", query).await
    }

    /// `POST /api/v1/deliveries/{id}/redeliver`: due again now.
    pub async fn redeliver(&self, id: &str) -> Result<Delivery> {
        self.post(
            &format!("/api/v1/deliveries/{id}/redeliver"),
            &serde_json::json!({}),
        )
        .await
    }

    // Sessions and agents.

    /// `POST /api/v1/sessions`
    pub async fn create_session(&self, session: &CreateSession) -> Result<Session> {
        self.post("/api/v1/sessions", session).await
    }

    /// `GET /api/v1/sessions`: live ones, newest first.
    pub async fn sessions(&self, page: &Page) -> Result<SessionList> {
        self.get_with("/api/v1/sessions", page).await
    }

    /// `GET /api/v1/sessions/{id}`
    pub async fn session(&self, id: Uuid) -> Result<Session> {
        self.get(&format!("/api/v1/sessions/{id}")).await
    }

    /// `DELETE /api/v1/sessions/{id}`: cancels its unfinished tasks.
    pub async fn delete_session(&self, id: Uuid) -> Result<DeletedSession> {
        let req = self.request(Method::DELETE, &format!("/api/v1/sessions/{id}"));
        self.read(req).await
    }

    /// `POST /api/v1/agents` (`spec.name` names it).
    pub async fn create_agent(&self, spec: &AgentSpec) -> Result<Agent> {
        self.post("/api/v1/agents", spec).await
    }

    /// `GET /api/v1/agents`
    pub async fn agents(&self) -> Result<AgentList> {
        self.get("/api/v1/agents").await
    }

    /// `GET /api/v1/agents/{name}`
    pub async fn agent(&self, name: &str) -> Result<Agent> {
        self.get(&format!("/api/v1/agents/{name}")).await
    }

    /// `PUT /api/v1/agents/{name}`: a new revision.
    pub async fn update_agent(&self, name: &str, spec: &AgentSpec) -> Result<Agent> {
        let req = self
            .request(Method::PUT, &format!("/api/v1/agents/{name}"))
            .json(spec);
        self.read(req).await
    }

    // Operations.

    /// `GET /readyz`: whether the gateway reaches NATS and its database (false on 503).
    pub async fn ready(&self) -> Result<bool> {
        let response = self
            .request(Method::GET, "/readyz")
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        Ok(response.status().is_success())
    }

    /// `GET /api/v1/workers`
    pub async fn workers(&self) -> Result<WorkerList> {
        self.get("/api/v1/workers").await
    }

    /// `GET /api/v1/queues`
    pub async fn queues(&self) -> Result<QueueList> {
        self.get("/api/v1/queues").await
    }

    /// `POST /api/v1/queues/{name}/pause`: workers take no more tasks from `queue` (it still
    /// accepts them). Needs `ops:write`.
    pub async fn pause_queue(&self, queue: &str) -> Result<QueueInfo> {
        let path = format!("/api/v1/queues/{queue}/pause");
        self.read(self.request(Method::POST, &path)).await
    }

    /// `POST /api/v1/queues/{name}/resume`: workers take tasks from `queue` again.
    pub async fn resume_queue(&self, queue: &str) -> Result<QueueInfo> {
        let path = format!("/api/v1/queues/{queue}/resume");
        self.read(self.request(Method::POST, &path)).await
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let response = self.send(self.request(Method::GET, "/metrics")).await?;
        response.text().await.map_err(|e| self.transport(e))
    }

    // Keys, identity, audit.

    /// `POST /api/v1/keys`: the secret is in this answer only.
    pub async fn create_key(&self, key: &CreateKey) -> Result<CreatedKey> {
        self.post("/api/v1/keys", key).await
    }

    /// `GET /api/v1/keys`: the tenant's, or `tenant`'s (needs `tenants:admin`).
    pub async fn keys(&self, tenant: Option<&str>) -> Result<ApiKeyList> {
        self.get_with("/api/v1/keys", &[("tenant", tenant)]).await
    }

    /// `GET /api/v1/keys/{id}`
    pub async fn key(&self, id: Uuid) -> Result<ApiKeyInfo> {
        self.get(&format!("/api/v1/keys/{id}")).await
    }

    /// `DELETE /api/v1/keys/{id}`: revoked on every gateway at once.
    pub async fn revoke_key(&self, id: Uuid) -> Result<ApiKeyInfo> {
        let req = self.request(Method::DELETE, &format!("/api/v1/keys/{id}"));
        self.read(req).await
    }

    /// `GET /api/v1/whoami`
    pub async fn whoami(&self) -> Result<Identity> {
        self.get("/api/v1/whoami").await
    }

    /// `GET /api/v1/audit`: newest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditList> {
        self.get_with("/api/v1/audit", query).await
    }

    // Runtime configuration.

    /// `GET /api/v1/config`
    pub async fn config(&self) -> Result<ConfigView> {
        self.get("/api/v1/config").await
    }

    /// `PUT /api/v1/config`: replaces revision `update.revision` (409 if it is not the latest).
    pub async fn update_config(&self, update: &UpdateConfig) -> Result<ConfigView> {
        let req = self.request(Method::PUT, "/api/v1/config").json(update);
        self.read(req).await
    }

    /// `GET /api/v1/config/revisions`: newest first.
    pub async fn config_revisions(&self, limit: Option<u32>) -> Result<ConfigHistory> {
        self.get_with("/api/v1/config/revisions", &[("limit", limit)])
            .await
    }
}

/// `base` without its trailing `/`, if it is an http(s) URL.
fn checked_base(base: &str) -> Result<String> {
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Error::Config(format!(
            "the gateway's URL must start with http:// or https://, not {base:?}"
        )));
    }
    Ok(base.trim_end_matches('/').to_owned())
}
