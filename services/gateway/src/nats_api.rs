//! The NATS service API: a program already on NATS submits (one task or a batch), reads and
//! cancels tasks with a request instead of HTTP. Every gateway serves the NATS Services API
//! service `wharf` in one queue group (discoverable with `$SRV.PING`, `$SRV.INFO` and
//! `$SRV.STATS`), so each request is answered by one of them.
//!
//! The tenant is the subject's: `wharf.api.<tenant>.tasks.<endpoint>`. NATS decides who may
//! publish there: a tenant's own program connects through the auth callout
//! ([`crate::nats_auth`]), whose user may publish to its own tenant's endpoints that its
//! permissions allow, and nothing else; the platform's own connections are trusted as they are
//! on every other subject. The requests then pass the same checks as HTTP: validation, the
//! catalog, idempotency keys (the `Idempotency-Key` header or the body's), the tenant's rate
//! limits and cap, and the audit log. A refusal carries the service error headers
//! (`Nats-Service-Error`, `Nats-Service-Error-Code` with the HTTP status) and the same problem
//! document as its body.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tracing::Instrument;
use wharf_contract::{
    ErrorCode, IDEMPOTENCY_KEY_HEADER, NATS_API_QUEUE_GROUP, NATS_API_SERVICE, Permission,
    STATUS_HEADER, SubmitBatch, SubmitTask, TRACEPARENT_HEADER, TaskRef, nats_api_filter,
    tenant_of_api_subject, valid_name,
};
use wharf_telemetry::TraceContext;

use crate::AppState;
use crate::auth::{Permissions, Principal};
use crate::http::parse_json;
use crate::limits::Class;
use crate::problem::ApiError;
use crate::tasks;

/// Requests handled at once by one gateway; more wait their turn.
const MAX_CONCURRENT: usize = 256;

/// One endpoint of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Submit,
    Batch,
    Get,
    Cancel,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Submit,
        Endpoint::Batch,
        Endpoint::Get,
        Endpoint::Cancel,
    ];

    /// Its name, the last token of its subject.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Submit => "submit",
            Endpoint::Batch => "batch",
            Endpoint::Get => "get",
            Endpoint::Cancel => "cancel",
        }
    }

    /// The permission a caller needs to use it (the auth callout grants the endpoint's subject
    /// only to a tenant user that has it).
    pub fn permission(self) -> Permission {
        match self {
            Endpoint::Submit | Endpoint::Batch => Permission::TasksSubmit,
            Endpoint::Get => Permission::TasksRead,
            Endpoint::Cancel => Permission::TasksCancel,
        }
    }

    /// The audit log's name of what it does (reads are not recorded).
    fn action(self) -> Option<&'static str> {
        match self {
            Endpoint::Submit => Some("task.submit"),
            Endpoint::Batch => Some("task.submit_batch"),
            Endpoint::Cancel => Some("task.cancel"),
            Endpoint::Get => None,
        }
    }
}

/// Serves the NATS service until the gateway stops.
pub async fn serve(state: AppState) {
    let client = state.bus.client();
    let service = client
        .service_builder()
        .description("Wharf tasks: submit, batch, get, cancel (docs/nats.md)")
        .queue_group(NATS_API_QUEUE_GROUP)
        .start(NATS_API_SERVICE, env!("CARGO_PKG_VERSION"))
        .await;
    let service = match service {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the NATS service API");
            return;
        }
    };
    let mut endpoints = Vec::new();
    for endpoint in Endpoint::ALL {
        let added = service
            .endpoint_builder()
            .name(endpoint.name())
            .add(nats_api_filter(endpoint.name()))
            .await;
        match added {
            Ok(e) => endpoints.push(e.map(move |r| (endpoint, r)).boxed()),
            Err(e) => {
                tracing::error!(endpoint = endpoint.name(), error = %e, "cannot serve a NATS endpoint");
                return;
            }
        }
    }
    let mut requests = futures::stream::select_all(endpoints);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    tracing::debug!("serving the NATS service API");
    loop {
        let (endpoint, request) = tokio::select! {
            r = requests.next() => match r {
                Some(r) => r,
                None => break,
            },
            () = state.stopping.cancelled() => break,
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            handle(&state, endpoint, request).await;
        });
    }
    if let Err(e) = service.stop().await {
        tracing::debug!(error = %e, "NATS service stopped");
    }
}

/// Answers one request, and records it in the audit log.
async fn handle(state: &AppState, endpoint: Endpoint, request: async_nats::service::Request) {
    let message = &request.message;
    let tenant = tenant_of_api_subject(message.subject.as_str())
        .filter(|t| valid_name(t))
        .unwrap_or_default()
        .to_owned();
    let principal = Principal::new(
        format!("nats:{tenant}"),
        tenant.clone(),
        vec!["nats".into()],
        Permissions::of(&[endpoint.permission()]),
    );
    let headers = message.headers.clone().unwrap_or_default();
    let answer = if tenant.is_empty() {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "{} names no tenant (wharf.api.<tenant>.tasks.<endpoint>)",
                message.subject
            ),
        ))
    } else {
        answer(state, &principal, endpoint, &headers, &message.payload).await
    };
    let (status, detail, target) = match &answer {
        Ok((status, _, target)) => (*status, None, target.clone()),
        Err(e) => (
            e.0.status,
            Some(e.0.detail.clone()),
            message.subject.to_string(),
        ),
    };
    let (reply, reply_headers) = reply(answer);
    if let Err(e) = request.respond_with_headers(Ok(reply), reply_headers).await {
        tracing::debug!(error = %e, "cannot answer a NATS service request");
    }
    if let Some(action) = endpoint.action()
        && status != 429
    {
        let entry = crate::audit::entry(
            Some(&principal),
            action.into(),
            status,
            target,
            "",
            "",
            detail,
        );
        state.audit.record(entry).await;
    }
}

/// The status, body and audit target of a request's answer.
type Answer = Result<(u16, Vec<u8>, String), ApiError>;

async fn answer(
    state: &AppState,
    principal: &Principal,
    endpoint: Endpoint,
    headers: &HeaderMap,
    payload: &[u8],
) -> Answer {
    let class = if endpoint == Endpoint::Get {
        Class::Read
    } else {
        Class::Write
    };
    state.settings().limits.admit(principal.tenant(), class)?;
    // As an HTTP request is: a span of its own when spans are exported (a child of the caller's
    // `traceparent`), whose context the task carries; else a child of the caller's context.
    let traceparent = header(headers, TRACEPARENT_HEADER);
    let span = if wharf_telemetry::traces::exporting() {
        let span = tracing::info_span!(
            "nats.request",
            otel.name = %format_args!("NATS tasks.{}", endpoint.name()),
            otel.kind = "server",
        );
        if let Some(caller) = traceparent.and_then(TraceContext::parse) {
            wharf_telemetry::traces::set_parent(&span, &caller);
        }
        span
    } else {
        tracing::Span::none()
    };
    let trace = crate::tasks::trace_in(&span, traceparent);
    respond(state, principal, endpoint, headers, payload, trace)
        .instrument(span)
        .await
}

/// [`answer`] once admitted, in the request's span.
async fn respond(
    state: &AppState,
    principal: &Principal,
    endpoint: Endpoint,
    headers: &HeaderMap,
    payload: &[u8],
    trace: TraceContext,
) -> Answer {
    let location = |id: &uuid::Uuid| format!("/api/v1/tasks/{id}");
    match endpoint {
        Endpoint::Submit => {
            let mut req: SubmitTask = parse_json(payload)?;
            if let Some(key) = header(headers, IDEMPOTENCY_KEY_HEADER) {
                tasks::idempotency_header(&mut req, key.as_bytes())?;
            }
            let (status, view) =
                tasks::submit(state, principal, req, tasks::Origin::Client, trace).await?;
            Ok((status.as_u16(), json(&view), location(&view.id)))
        }
        Endpoint::Batch => {
            let req: SubmitBatch = parse_json(payload)?;
            let batch = tasks::submit_batch(state, principal, req, &trace).await?;
            Ok((202, json(&batch), "/api/v1/tasks/batch".into()))
        }
        Endpoint::Get => {
            let TaskRef { id } = parse_json(payload)?;
            let view = tasks::find_owned(state, principal, id).await?;
            Ok((200, json(&view), location(&id)))
        }
        Endpoint::Cancel => {
            let TaskRef { id } = parse_json(payload)?;
            let view = tasks::request_cancel(state, principal, id).await?;
            Ok((202, json(&view), format!("{}/cancel", location(&id))))
        }
    }
}

/// A header's first value, its name in any case (NATS headers keep the case they were sent in).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| AsRef::<str>::as_ref(k).eq_ignore_ascii_case(name))
        .and_then(|(_, values)| values.first())
        .map(|v| v.as_str())
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("an answer serialises")
}

/// The reply's body and headers: `Wharf-Status` and the answer, or the service error headers
/// (with `Retry-After` when the refusal has one) and the problem document.
fn reply(answer: Answer) -> (Bytes, HeaderMap) {
    let mut headers = HeaderMap::new();
    match answer {
        Ok((status, body, _)) => {
            headers.insert(STATUS_HEADER, status.to_string().as_str());
            (body.into(), headers)
        }
        Err(e) => {
            let status = e.0.status;
            // One line: a header value may not hold a line break.
            let description = e.0.detail.replace(['\r', '\n'], " ");
            let body = serde_json::to_vec(&e.0).expect("a problem serialises");
            if let Some(secs) = e.wait_secs() {
                headers.insert("Retry-After", secs.to_string().as_str());
            }
            headers.insert(STATUS_HEADER, status.to_string().as_str());
            headers.insert("Content-Type", "application/problem+json");
            headers.insert(
                async_nats::service::NATS_SERVICE_ERROR,
                description.as_str(),
            );
            headers.insert(
                async_nats::service::NATS_SERVICE_ERROR_CODE,
                status.to_string().as_str(),
            );
            (body.into(), headers)
        }
    }
}
