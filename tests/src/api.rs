//! The HTTP API of a test platform, through Wharf's Rust SDK (`wharf-client`): one client per
//! credential ([`Wharf::client`] anonymous, [`Wharf::client_with`] a key or token,
//! [`Wharf::client_for`] a new key of a tenant and role), typed calls for what a test does on
//! its way, and [`call`] / [`send`] for a test whose subject is the answer itself (its status,
//! headers and raw body).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;
use wharf_client::Client;
use wharf_contract::{CreateSession, TaskView};

use crate::{Wharf, eventually};

impl Wharf {
    /// The API asked without credentials (what that may do is the gateway's `auth.mode`; in
    /// the default open mode, an admin of the `default` tenant).
    pub fn client(&self) -> Client {
        self.client.clone().expect("the gateway has started")
    }

    /// The API asked with `credential` (an API key or token).
    pub fn client_with(&self, credential: &str) -> Client {
        self.client().with_credential(credential).unwrap()
    }

    /// The API asked with a new key of `tenant` with `role`.
    pub async fn client_for(&self, tenant: &str, role: &str) -> Client {
        self.client_with(&self.key(tenant, role).await)
    }

    /// A new API key of `tenant` with `role`, stored directly (as `wharf bootstrap-key` does):
    /// its secret.
    pub async fn key(&self, tenant: &str, role: &str) -> String {
        let (info, secret, hash) = wharf_gateway::auth::mint_key(
            format!("test-{role}"),
            tenant.into(),
            role.into(),
            "test".into(),
            None,
        );
        self.store.create_key(&info, &hash).await.unwrap();
        secret
    }

    /// A new session named `name` (`POST /api/v1/sessions`): its id.
    pub async fn session(&self, name: &str) -> String {
        let session = CreateSession {
            name: Some(name.into()),
            ..CreateSession::default()
        };
        let created = self.client().create_session(&session).await;
        created.expect("create a session").id.to_string()
    }

    /// Waits until the gateway lists `tool`.
    pub async fn wait_for_tool(&self, tool: &str) {
        wait_for_tool_at(&self.client(), tool).await;
    }

    /// `GET path` without credentials: the raw answer, for a test whose subject it is.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        let client = self.client();
        client.request(Method::GET, path).send().await.unwrap()
    }

    /// `POST /api/v1/tasks` with a JSON body: status and JSON answer.
    pub async fn submit(&self, body: Value) -> (StatusCode, Value) {
        let client = self.client();
        send(client.request(Method::POST, "/api/v1/tasks").json(&body)).await
    }

    /// Submits and returns the new task's id, asserting the 202.
    pub async fn submit_ok(&self, body: Value) -> Uuid {
        let (status, answer) = self.submit(body).await;
        assert_eq!(status, 202, "submit answered {answer}");
        answer["id"].as_str().unwrap().parse().unwrap()
    }

    /// `GET /api/v1/tasks/{id}`
    pub async fn get_task(&self, id: Uuid) -> TaskView {
        match self.client().task(id).await {
            Ok(view) => view,
            Err(e) => panic!("GET task {id}: {e}"),
        }
    }

    /// `POST /api/v1/tasks/{id}/cancel`: the answer's status.
    pub async fn cancel(&self, id: Uuid) -> StatusCode {
        let client = self.client();
        let path = format!("/api/v1/tasks/{id}/cancel");
        send(client.request(Method::POST, &path)).await.0
    }

    /// The gateway's `/metrics` scrape.
    pub async fn metrics(&self) -> String {
        match self.client().metrics().await {
            Ok(text) => text,
            Err(e) => panic!("GET /metrics: {e}"),
        }
    }
}

/// Waits until the gateway `client` asks lists `tool`.
pub async fn wait_for_tool_at(client: &Client, tool: &str) {
    eventually(
        &format!("tool {tool} in the catalog"),
        Duration::from_secs(30),
        || async {
            let tools = client.tools().await.ok()?;
            tools.tools.iter().any(|t| t.name == tool).then_some(())
        },
    )
    .await;
}

/// Sends `req`: the answer's status and JSON body (`null` when it has none).
pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `method path` as `client` asks, with `body` as JSON: the status, the headers and the body
/// (JSON when it parses, else a string; `null` for an event stream, whose body lasts as long
/// as its task and whose head is the answer).
pub async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = client.request(method, path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    if headers
        .get("content-type")
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
    {
        return (status, headers, Value::Null);
    }
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
