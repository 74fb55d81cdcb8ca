//! `/ws/v1/tasks`: submit, subscribe and cancel over one WebSocket.
//!
//! Each subscription follows the task's event subject from its first event, so a late subscriber
//! gets the whole history and then the live events, in order, each once. A bad client message is
//! answered with an `error` message; the socket stays open.

use std::collections::HashMap;
use tracing::Instrument;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;
use wharf_contract::{ErrorCode, WsClientMessage, WsServerMessage};
use wharf_telemetry::TraceContext;

use crate::AppState;
use crate::auth::Principal;
use crate::limits::Class;
use crate::problem::ApiError;
use crate::tasks;

/// `GET /ws/v1/tasks`: the socket acts as the principal that opened it.
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    request_id: Option<axum::Extension<crate::audit::RequestId>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    credential: Option<axum::Extension<crate::auth::Credential>>,
    ws: WebSocketUpgrade,
) -> Response {
    let credential = credential.and_then(|c| c.0.0);
    // The socket's submissions and cancellations are audited under the upgrade's request id.
    let origin = Origin {
        request_id: request_id.map(|r| r.0.0).unwrap_or_default(),
        ip: peer.map(|p| p.0.0.ip().to_string()).unwrap_or_default(),
    };
    let max = state.config.max_body_bytes;
    // Small buffers: a subscriber mostly waits, and tungstenite's 128 KiB defaults made an idle
    // socket cost about 160 KB. Larger messages still arrive whole; the buffer only sets how
    // much is read at once. Every message is flushed as it is sent, so no write buffering.
    ws.max_message_size(max)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session(state, principal, credential, origin, socket))
}

/// Where a socket came from, for its audit entries.
struct Origin {
    request_id: String,
    ip: String,
}

struct Session {
    state: AppState,
    principal: Principal,
    /// What the socket was opened with: checked again before each message, so a revoked key
    /// or an expired token stops acting at once, not when the socket closes.
    credential: Option<String>,
    origin: Origin,
    out: mpsc::Sender<WsServerMessage>,
    subscriptions: HashMap<Uuid, JoinHandle<()>>,
    /// Forwarding `system:status`, after `system:subscribe`.
    system: Option<JoinHandle<()>>,
}

async fn session(
    state: AppState,
    principal: Principal,
    credential: Option<String>,
    origin: Origin,
    socket: WebSocket,
) {
    let connections = metrics::gauge!("wharf_websocket_connections");
    connections.increment(1.0);
    // Counted down however the session ends.
    let _open = scopeguard(move || connections.decrement(1.0));
    let (mut sink, mut incoming) = socket.split();
    let (out, mut outbox) = mpsc::channel::<WsServerMessage>(256);
    let writer = tokio::spawn(async move {
        while let Some(m) = outbox.recv().await {
            let text = serde_json::to_string(&m).expect("a message serialises");
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut s = Session {
        state,
        principal,
        credential,
        origin,
        out,
        subscriptions: HashMap::new(),
        system: None,
    };
    let stopping = s.state.stopping.clone();
    loop {
        let message = tokio::select! {
            m = incoming.next() => m,
            () = stopping.cancelled() => break,
        };
        let Some(Ok(message)) = message else { break };
        match message {
            Message::Text(text) => {
                if !s.handle(text.as_bytes()).await {
                    break;
                }
            }
            Message::Binary(_) => {
                s.refuse(
                    None,
                    None,
                    ApiError::new(ErrorCode::MalformedBody, "send JSON text messages"),
                )
                .await;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
        s.subscriptions.retain(|_, h| !h.is_finished());
    }
    for (_, h) in s.subscriptions.drain() {
        h.abort();
    }
    if let Some(h) = s.system.take() {
        h.abort();
    }
    drop(s);
    let _ = writer.await;
}

impl Session {
    /// Handles one client message; `false` when the socket must close.
    async fn handle(&mut self, text: &[u8]) -> bool {
        if let Some(c) = &self.credential
            && let Err(e) = self.state.auth.still_valid(c, &self.principal).await
        {
            self.refuse(None, None, e).await;
            return false;
        }
        let message: WsClientMessage = match tasks::parse_json(text) {
            Ok(m) => m,
            Err(e) => {
                self.refuse(None, None, e).await;
                return true;
            }
        };
        self.act(message).await;
        true
    }

    async fn act(&mut self, message: WsClientMessage) {
        // Submitting and cancelling draw on the tenant's write allowance, as over HTTP.
        if let WsClientMessage::Submit { reference, .. } = &message
            && let Err(e) = self
                .state
                .settings()
                .limits
                .admit(self.principal.tenant(), Class::Write)
        {
            return self.refuse(reference.clone(), None, e).await;
        }
        if let WsClientMessage::Cancel { task_id } = &message
            && let Err(e) = self
                .state
                .settings()
                .limits
                .admit(self.principal.tenant(), Class::Write)
        {
            return self.refuse(None, Some(*task_id), e).await;
        }
        match message {
            WsClientMessage::Submit { reference, task } => {
                // Each submission is a span of its own: the socket's request ended long ago.
                let span = tracing::info_span!(
                    "ws.submit",
                    otel.name = "WS task:submit",
                    otel.kind = "server",
                );
                let trace = wharf_telemetry::traces::context_of(&span, &TraceContext::new_root());
                let submitted =
                    tasks::submit_and_follow(&self.state, &self.principal, *task, trace)
                        .instrument(span)
                        .await;
                let (status, target, detail) = match &submitted {
                    Ok((view, _)) => (202, format!("/api/v1/tasks/{}", view.id), None),
                    Err(e) => (e.0.status, "/ws/v1/tasks".to_owned(), Some((*e.0).clone())),
                };
                self.audit("task.submit", status, target, detail).await;
                match submitted {
                    Ok((view, events)) => {
                        let id = view.id;
                        let accepted = WsServerMessage::Accepted {
                            task_id: id,
                            reference,
                            seq: None,
                            task: Some(Box::new(view)),
                        };
                        let _ = self.out.send(accepted).await;
                        // The submitter already has `task:accepted`, with the task itself.
                        let events = events
                            .filter(|m| {
                                std::future::ready(!matches!(m, WsServerMessage::Accepted { .. }))
                            })
                            .boxed();
                        // A repeat (same idempotency key) of a task this socket already follows.
                        if !self.following(id) {
                            self.forward(id, events);
                        }
                    }
                    Err(e) => self.refuse(reference, None, e).await,
                }
            }
            WsClientMessage::Subscribe { task_id } => self.subscribe(task_id),
            WsClientMessage::SystemSubscribe => {
                match self.principal.require(wharf_contract::Permission::OpsRead) {
                    Ok(()) => self.follow_status(),
                    Err(e) => self.refuse(None, None, e).await,
                }
            }
            WsClientMessage::SystemUnsubscribe => {
                if let Some(h) = self.system.take() {
                    h.abort();
                }
            }
            WsClientMessage::Cancel { task_id } => {
                let cancelled = tasks::request_cancel(&self.state, &self.principal, task_id).await;
                let (status, detail) = match &cancelled {
                    Ok(_) => (202, None),
                    Err(e) => (e.0.status, Some((*e.0).clone())),
                };
                let target = format!("/api/v1/tasks/{task_id}");
                self.audit("task.cancel", status, target, detail).await;
                match cancelled {
                    // The outcome arrives as the task's events: make sure the client sees them.
                    Ok(_) => self.subscribe(task_id),
                    Err(e) => self.refuse(None, Some(task_id), e).await,
                }
            }
        }
    }

    /// Sends `system:status` now, then each time the gateway refreshes it.
    fn follow_status(&mut self) {
        if self.system.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let state = self.state.clone();
        let out = self.out.clone();
        self.system = Some(tokio::spawn(async move {
            let mut feed = state.status.subscribe();
            feed.mark_unchanged();
            match crate::ops::status(&state).await {
                Ok(now) => {
                    if out
                        .send(WsServerMessage::SystemStatus(Box::new(now)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = out.send(client_error(None, None, e)).await;
                }
            }
            while feed.changed().await.is_ok() {
                let latest = feed.borrow_and_update().clone();
                if let Some(s) = latest {
                    let message = WsServerMessage::SystemStatus(Box::new((*s).clone()));
                    if out.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }

    /// Forwards a task's events to the socket, once per task per socket.
    fn subscribe(&mut self, id: Uuid) {
        if self.following(id) {
            return;
        }
        let state = self.state.clone();
        let principal = self.principal.clone();
        let out = self.out.clone();
        let handle = tokio::spawn(async move {
            let events = match tasks::follow(&state, &principal, id).await {
                Ok(events) => events,
                Err(e) => {
                    let _ = out.send(client_error(None, Some(id), e)).await;
                    return;
                }
            };
            forward_all(events, &out).await;
        });
        self.subscriptions.insert(id, handle);
    }

    /// Forwards the events of a task this socket just submitted.
    fn forward(&mut self, id: Uuid, events: BoxStream<'static, WsServerMessage>) {
        let out = self.out.clone();
        let handle = tokio::spawn(async move { forward_all(events, &out).await });
        self.subscriptions.insert(id, handle);
    }

    fn following(&self, id: Uuid) -> bool {
        self.subscriptions
            .get(&id)
            .is_some_and(|h| !h.is_finished())
    }

    /// Records what the socket did in the audit log (refusals for lack of a permission as
    /// `auth.forbidden`, as over HTTP).
    async fn audit(
        &self,
        action: &str,
        status: u16,
        target: String,
        refusal: Option<wharf_contract::Problem>,
    ) {
        let action = refusal
            .as_ref()
            .and_then(|p| crate::audit::refusal_action(p.code))
            .unwrap_or(action);
        let detail = refusal.map(|p| p.detail);
        let entry = crate::audit::entry(
            Some(&self.principal),
            action.to_owned(),
            status,
            target,
            &self.origin.request_id,
            &self.origin.ip,
            detail,
        );
        self.state.audit.record(entry).await;
    }

    async fn refuse(&self, reference: Option<String>, task_id: Option<Uuid>, e: ApiError) {
        let _ = self.out.send(client_error(reference, task_id, e)).await;
    }
}

async fn forward_all(
    events: impl futures::Stream<Item = WsServerMessage>,
    out: &mpsc::Sender<WsServerMessage>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(m) = events.next().await {
        if out.send(m).await.is_err() {
            return;
        }
    }
}

fn client_error(reference: Option<String>, task_id: Option<Uuid>, e: ApiError) -> WsServerMessage {
    WsServerMessage::ClientError {
        code: e.0.code.as_str().to_owned(),
        message: e.0.detail.clone(),
        reference,
        task_id,
        problem: Some(e.0),
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
