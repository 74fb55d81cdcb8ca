//! `/ws/v1/tasks`: submit, subscribe and cancel over one WebSocket.
//!
//! Each subscription follows the task's event subject from its first event, so a late subscriber
//! gets the whole history and then the live events, in order, each once. A bad client message is
//! answered with an `error` message; the socket stays open.

use std::collections::HashMap;
use tracing::Instrument;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
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
use crate::serve::Received;
use crate::tasks::{self, client_error};

/// `GET /ws/v1/tasks`: the socket acts as the principal that opened it.
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    request_id: Option<axum::Extension<crate::audit::RequestId>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    credential: Option<axum::Extension<crate::auth::Credential>>,
    received: Option<axum::Extension<crate::serve::Received>>,
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
    // A frame is refused as soon as its header announces more than the limit, not once that
    // much has arrived.
    let received = received.map(|r| r.0).unwrap_or_default();
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session(state, principal, credential, origin, received, socket))
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
    received: Received,
    socket: WebSocket,
) {
    let connections = metrics::gauge!("wharf_websocket_connections");
    connections.increment(1.0);
    // Counted down however the session ends.
    let _open = scopeguard(move || connections.decrement(1.0));
    let (sink, incoming) = socket.split();
    let (out, outbox) = mpsc::channel::<WsServerMessage>(256);
    // How the socket closes, once the session knows: sent after the messages still queued.
    let (closing, close_with) = tokio::sync::oneshot::channel::<Option<CloseFrame>>();
    let writer = tokio::spawn(write(sink, outbox, close_with));
    let mut s = Session {
        state,
        principal,
        credential,
        origin,
        out,
        subscriptions: HashMap::new(),
        system: None,
    };
    let close = s.read(incoming, received).await;
    for (_, h) in s.subscriptions.drain() {
        h.abort();
    }
    if let Some(h) = s.system.take() {
        h.abort();
    }
    let _ = closing.send(close);
    drop(s);
    let _ = writer.await;
}

/// Sends the session's messages as they come, then its close frame, if it has one.
async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut outbox: mpsc::Receiver<WsServerMessage>,
    close_with: tokio::sync::oneshot::Receiver<Option<CloseFrame>>,
) {
    while let Some(m) = outbox.recv().await {
        let text = serde_json::to_string(&m).expect("a message serialises");
        if sink.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
    if let Ok(Some(frame)) = close_with.await {
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    let _ = sink.close().await;
}

/// Tells a message that is still arriving after `limit` (a slow or stalled sender, a frame
/// header announcing more than ever comes) from a socket that is merely quiet: the bytes the
/// connection received since the last whole message. Bounded like a slow request head.
struct Arriving {
    received: Received,
    /// Bytes received when the last message was whole.
    mark: u64,
    /// When bytes past the mark were first seen.
    since: Option<std::time::Instant>,
    limit: std::time::Duration,
}

impl Arriving {
    fn new(received: Received, limit: std::time::Duration) -> Arriving {
        Arriving {
            mark: received.bytes(),
            received,
            since: None,
            limit: limit.max(std::time::Duration::from_secs(1)),
        }
    }

    /// A message (or the end) came in whole.
    fn done(&mut self) {
        self.mark = self.received.bytes();
        self.since = None;
    }

    /// True when part of a message has been waiting for the rest for `limit` or longer.
    fn stalled(&mut self) -> bool {
        if self.received.bytes() <= self.mark {
            self.since = None;
            return false;
        }
        self.since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
            >= self.limit
    }
}

/// A close frame; the reason is cut to fit the 123 bytes a close frame allows.
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].into(),
    }
}

/// The close frame that answers a read error: 1009 for a message over the size limit, 1002 for
/// a protocol violation, 1007 for text that is not UTF-8; none when the connection itself
/// failed (there is nobody to tell).
fn close_for(e: axum::Error) -> Option<CloseFrame> {
    use tungstenite::error::{Error as WsError, ProtocolError};
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>()? {
        WsError::Capacity(c) => Some(close_frame(
            close_code::SIZE,
            &format!("{c} (gateway.max_body_bytes)"),
        )),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(p) => Some(close_frame(close_code::PROTOCOL, &p.to_string())),
        WsError::Utf8(_) => Some(close_frame(
            close_code::INVALID,
            "a text message is not UTF-8",
        )),
        _ => None,
    }
}

impl Session {
    /// Reads and handles the client's messages until the session ends; how the socket closes.
    /// The gateway stopping, the credential lapsing (its key revoked, its expiry passed), a
    /// message arriving too slowly and a broken frame end it, whether or not the client is
    /// sending anything.
    async fn read(
        &mut self,
        mut incoming: futures::stream::SplitStream<WebSocket>,
        received: Received,
    ) -> Option<CloseFrame> {
        let stopping = self.state.stopping.clone();
        let lapsed = self.state.auth.lapse(&self.principal);
        tokio::pin!(lapsed);
        let mut arriving = Arriving::new(received, self.state.config.header_timeout);
        let mut check = tokio::time::interval(arriving.limit / 2);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                m = incoming.next() => m,
                () = stopping.cancelled() => {
                    return Some(close_frame(close_code::AWAY, "the gateway is stopping"));
                }
                refusal = &mut lapsed => {
                    let reason = refusal.0.detail.clone();
                    self.refuse(None, None, refusal).await;
                    return Some(close_frame(close_code::POLICY, &reason));
                }
                _ = check.tick() => {
                    if arriving.stalled() {
                        let why = format!(
                            "a message took longer than {} s to arrive",
                            arriving.limit.as_secs_f64()
                        );
                        return Some(close_frame(close_code::POLICY, &why));
                    }
                    continue;
                }
            };
            arriving.done();
            match message {
                Some(Ok(Message::Text(text))) => {
                    if !self.handle(text.as_bytes()).await {
                        return Some(close_frame(
                            close_code::POLICY,
                            "the credential no longer holds",
                        ));
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let e = ApiError::new(ErrorCode::MalformedBody, "send JSON text messages");
                    self.refuse(None, None, e).await;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return None,
                Some(Err(e)) => return close_for(e),
            }
            self.subscriptions.retain(|_, h| !h.is_finished());
        }
    }

    /// Handles one client message; `false` when the socket must close.
    async fn handle(&mut self, text: &[u8]) -> bool {
        if let Some(c) = &self.credential
            && let Err(e) = self.state.auth.still_valid(c, &self.principal).await
        {
            self.refuse(None, None, e).await;
            return false;
        }
        let message: WsClientMessage = match crate::http::parse_json(text) {
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
        let writes = match &message {
            WsClientMessage::Submit { reference, .. } => Some((reference.clone(), None)),
            WsClientMessage::Cancel { task_id } => Some((None, Some(*task_id))),
            _ => None,
        };
        if let Some((reference, task_id)) = writes
            && let Err(e) = self
                .state
                .settings()
                .limits
                .admit(self.principal.tenant(), Class::Write)
        {
            return self.refuse(reference, task_id, e).await;
        }
        match message {
            WsClientMessage::Submit { reference, task } => self.submit(reference, *task).await,
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
            WsClientMessage::Cancel { task_id } => self.cancel(task_id).await,
        }
    }

    /// `task:submit`: answered `task:accepted` (or an error), then the task's events follow.
    async fn submit(&mut self, reference: Option<String>, task: wharf_contract::SubmitTask) {
        // Each submission is a span of its own: the socket's request ended long ago.
        let span = tracing::info_span!(
            "ws.submit",
            otel.name = "WS task:submit",
            otel.kind = "server",
        );
        let trace = wharf_telemetry::traces::context_of(&span, &TraceContext::new_root());
        let submitted = tasks::submit_and_follow(&self.state, &self.principal, task, trace)
            .instrument(span)
            .await;
        let (status, target, detail) = match &submitted {
            Ok((view, _)) => (202, format!("/api/v1/tasks/{}", view.id), None),
            Err(e) => (e.0.status, "/ws/v1/tasks".to_owned(), Some((*e.0).clone())),
        };
        self.audit("task.submit", status, target, detail).await;
        let (view, events) = match submitted {
            Ok(submitted) => submitted,
            Err(e) => return self.refuse(reference, None, e).await,
        };
        let id = view.id;
        let accepted = WsServerMessage::Accepted {
            task_id: id,
            at: view.created_at,
            reference,
            seq: None,
            task: Some(Box::new(view)),
        };
        let _ = self.out.send(accepted).await;
        // The submitter already has `task:accepted`, with the task itself.
        let events = events
            .filter(|m| std::future::ready(!matches!(m, WsServerMessage::Accepted { .. })))
            .boxed();
        // A repeat (same idempotency key) of a task this socket already follows.
        if !self.following(id) {
            self.forward(id, events);
        }
    }

    /// `task:cancel`: the outcome arrives as the task's events, which the socket then follows.
    async fn cancel(&mut self, task_id: Uuid) {
        let cancelled = tasks::request_cancel(&self.state, &self.principal, task_id).await;
        let (status, detail) = match &cancelled {
            Ok(_) => (202, None),
            Err(e) => (e.0.status, Some((*e.0).clone())),
        };
        let target = format!("/api/v1/tasks/{task_id}");
        self.audit("task.cancel", status, target, detail).await;
        match cancelled {
            Ok(_) => self.subscribe(task_id),
            Err(e) => self.refuse(None, Some(task_id), e).await,
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
