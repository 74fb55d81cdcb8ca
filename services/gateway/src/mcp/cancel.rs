//! A client's `notifications/cancelled` for a `tools/call` in flight, turned into a cancel of
//! the call's task.
//!
//! Clients of MCP 2026-07-28 cancel a call by closing its stream (`call.rs` sees it). Older
//! clients send `notifications/cancelled` as a POST of its own, which in a stateless server
//! reaches no call: it may even land on another gateway than the one holding the call's
//! stream. So the gateway reads each POST to `/mcp` before rmcp does, and announces a
//! cancellation it finds to every gateway (a core NATS subject); the one running that call
//! (same caller, same request id) cancels its task. A call's entry outlives it by a minute,
//! for a cancellation that arrives after the client already closed its stream.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use uuid::Uuid;
use wharf_bus::Announcement;

use crate::AppState;
use crate::auth::Principal;
use crate::problem::ApiError;

/// How long a call's entry stays after the call ended without an outcome.
const GRACE: Duration = Duration::from_secs(60);

/// A `notifications/cancelled`: whose (tenant and actor) and for which request id (its JSON).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Cancellation {
    caller: String,
    request: String,
}

impl fmt::Display for Cancellation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}", self.caller, self.request)
    }
}

impl FromStr for Cancellation {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (caller, request) = s.split_once('\n').ok_or(())?;
        Ok(Cancellation {
            caller: caller.to_owned(),
            request: request.to_owned(),
        })
    }
}

/// Cancellations of MCP calls, announced to every gateway.
pub(crate) const MCP_CANCELLED: Announcement<Cancellation> =
    Announcement::on(wharf_contract::MCP_CANCELLED_SUBJECT);

fn caller_of(principal: &Principal) -> String {
    format!("{}/{}", principal.tenant(), principal.actor())
}

struct Entry {
    task: Uuid,
    principal: Principal,
    /// When the entry goes: `None` while its call runs.
    expires: Option<Instant>,
}

/// The calls this gateway runs, by caller and request id.
#[derive(Clone, Default)]
pub(crate) struct Calls(Arc<Mutex<HashMap<Cancellation, Entry>>>);

/// A call's place in [`Calls`]; dropping it starts the entry's grace period.
pub(crate) struct Registered {
    calls: Calls,
    key: Cancellation,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut calls = self.calls.0.lock().unwrap();
        if let Some(e) = calls.get_mut(&self.key) {
            e.expires = Some(Instant::now() + GRACE);
        }
    }
}

impl Calls {
    /// Notes that `principal`'s request `request` (a JSON-RPC id) runs as task `task`.
    pub fn register(
        &self,
        principal: &Principal,
        request: &rmcp::model::RequestId,
        task: Uuid,
    ) -> Registered {
        let key = Cancellation {
            caller: caller_of(principal),
            request: request_key(request),
        };
        let mut calls = self.0.lock().unwrap();
        let now = Instant::now();
        calls.retain(|_, e| e.expires.is_none_or(|t| t > now));
        calls.insert(
            key.clone(),
            Entry {
                task,
                principal: principal.clone(),
                expires: None,
            },
        );
        Registered {
            calls: self.clone(),
            key,
        }
    }

    fn take(&self, key: &Cancellation) -> Option<(Uuid, Principal)> {
        let mut calls = self.0.lock().unwrap();
        let e = calls.remove(key)?;
        e.expires
            .is_none_or(|t| t > Instant::now())
            .then_some((e.task, e.principal))
    }

    /// Cancels the tasks of the calls announced cancelled, until the gateway stops.
    pub async fn follow(self, state: AppState) {
        let mut announced = match state.bus.announcements(&MCP_CANCELLED).await {
            Ok(a) => Box::pin(a),
            Err(e) => {
                tracing::error!(error = %e, "MCP cancellations cannot be followed; only closing a call's stream cancels it");
                return;
            }
        };
        loop {
            let c = tokio::select! {
                () = state.stopping.cancelled() => return,
                c = announced.next() => match c {
                    Some(c) => c,
                    None => return,
                },
            };
            let Some((task, principal)) = self.take(&c) else {
                continue;
            };
            match crate::tasks::request_cancel(&state, &principal, task).await {
                Ok(_) => tracing::info!(task_id = %task, "MCP call cancelled by its client"),
                Err(e) => {
                    tracing::info!(task_id = %task, reason = %e.0.detail, "MCP call's cancellation not carried out")
                }
            }
        }
    }
}

/// The text form of a JSON-RPC id, as the cancellation's `requestId` spells it too.
fn request_key(id: &rmcp::model::RequestId) -> String {
    serde_json::to_string(id).unwrap_or_default()
}

/// Reads a POST to `/mcp` before rmcp does: a `notifications/cancelled` in it is announced
/// to every gateway. The request then goes on unchanged (rmcp answers it 202).
pub(super) async fn relay_cancellations(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                wharf_contract::ErrorCode::BodyTooLarge,
                format!(
                    "a request body holds at most {} bytes",
                    state.config.max_body_bytes
                ),
            )
            .into_response();
        }
    };
    for request in cancelled_requests(&bytes) {
        let c = Cancellation {
            caller: caller_of(&principal),
            request,
        };
        if let Err(e) = state.bus.announce(&MCP_CANCELLED, &c).await {
            tracing::warn!(error = %e, "an MCP cancellation could not be announced");
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The request ids a body's `notifications/cancelled` name (a batch may hold several).
fn cancelled_requests(body: &[u8]) -> Vec<String> {
    // Cheap test first: most bodies are not cancellations.
    if !body.windows(9).any(|w| w == b"cancelled") {
        return Vec::new();
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let messages = match value {
        serde_json::Value::Array(all) => all,
        one => vec![one],
    };
    messages
        .iter()
        .filter(|m| m["method"] == "notifications/cancelled")
        .filter_map(|m| m["params"].get("requestId"))
        .filter(|id| id.is_string() || id.is_number())
        .map(|id| id.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellations_are_found_in_bodies() {
        let one = br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"user"}}"#;
        assert_eq!(cancelled_requests(one), vec!["7"]);
        let batch = br#"[{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a"}},{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#;
        assert_eq!(cancelled_requests(batch), vec!["\"a\""]);
        let call = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":{"s":"cancelled"}}}"#;
        assert!(cancelled_requests(call).is_empty());
        // The id's text is the same whichever way it reaches the gateway.
        let id = rmcp::model::RequestId::Number(7);
        assert_eq!(request_key(&id), "7");
    }

    #[test]
    fn announcements_read_back() {
        let c = Cancellation {
            caller: "default/key:1".into(),
            request: "\"req-1\"".into(),
        };
        assert_eq!(c.to_string().parse::<Cancellation>(), Ok(c));
    }
}
