//! Inbound webhooks: `POST /hooks/{name}` verifies a call's Standard Webhooks signature against
//! the hook's secrets, maps its JSON body to the arguments of the hook's tool, and submits the
//! task for the hook's tenant, with the same checks as `POST /api/v1/tasks`. The call's
//! `webhook-id` is the task's idempotency key, so a sender delivering the same event again
//! starts nothing new and is answered with the task the first delivery started.
//!
//! The signature is the caller's credential: the route sits outside the authenticated router,
//! behind the per-address limit, and counts against the hook's tenant's write limit.

mod settings;

pub use settings::{check_hooks, redact, restore_secrets, validate};
use wharf_webhooks::{decode_secret, signature};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use sha2::Digest;
use wharf_contract::hooks::{
    ArgumentSource, Hook, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER,
};
use wharf_contract::rules::KEY_CHARS;
use wharf_contract::{ErrorCode, FieldError, Permission, SubmitTask};

use crate::AppState;
use crate::auth::{Permissions, Principal};
use crate::http::JsonBody;
use crate::problem::{ApiError, Segment};
use crate::tasks::{Origin, submit, trace_of};

/// `POST /hooks/{name}`: 202 with the task started (200 with the one an earlier delivery of
/// the same `webhook-id` started); 401 `bad_signature` and nothing submitted when the
/// signature or its timestamp is not accepted; 422 naming the body's fields when what the
/// hook takes from them does not fit the tool.
pub async fn receive(
    State(state): State<AppState>,
    Segment(name): Segment,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let settings = state.settings();
    let Some(hook) = settings.runtime.hooks.get(&name) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no webhook named {name:?} (see hooks in GET /api/v1/config)"),
        ));
    };
    let bytes = body.raw()?;
    let message_id = verified(hook, &headers, &bytes)?;
    // From here on the call is the hook's: its tenant's limits apply, and the audit names it.
    let principal = Principal::new(
        format!("hook:{name}"),
        hook.tenant.clone(),
        vec!["hook".into()],
        Permissions::of(&[Permission::TasksSubmit]),
    );
    let answer = async {
        let allowance = settings
            .limits
            .admit(principal.tenant(), crate::limits::Class::Write)?;
        let request = submission(&state, &name, hook, message_id, &bytes)?;
        let (status, view) = submit(
            &state,
            &principal,
            request,
            Origin::Client,
            trace_of(&headers),
        )
        .await
        .map_err(|e| into_body(e, hook))?;
        let location = format!("/api/v1/tasks/{}", view.id);
        let mut response = (status, [(header::LOCATION, location)], Json(view)).into_response();
        if let Some(a) = allowance {
            a.apply(response.headers_mut());
        }
        Ok::<_, ApiError>(response)
    }
    .await;
    let mut response = answer.into_response();
    response.extensions_mut().insert(principal);
    Ok(response)
}

/// The call's `webhook-id` once its signature checks out against one of the hook's secrets.
fn verified<'a>(hook: &Hook, headers: &'a HeaderMap, body: &[u8]) -> Result<&'a str, ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = signature::Signed {
        id: text(WEBHOOK_ID_HEADER),
        timestamp: text(WEBHOOK_TIMESTAMP_HEADER),
        signatures: text(WEBHOOK_SIGNATURE_HEADER),
    };
    // Secrets were checked when the configuration was written; one that no longer decodes
    // simply matches nothing.
    let keys: Vec<Vec<u8>> = hook
        .secrets
        .iter()
        .filter_map(|s| decode_secret(s).ok())
        .collect();
    signature::verify(&signed, &keys, body, chrono::Utc::now().timestamp()).map_err(|why| {
        tracing::info!(reason = %why, "webhook call refused");
        ApiError::new(ErrorCode::BadSignature, why.to_string())
    })
}

/// The task a verified call asks for: the hook's tool with the arguments its mapping takes from
/// the body. A required argument whose pointer finds nothing in the body is refused here, naming
/// that place in the body.
fn submission(
    state: &AppState,
    name: &str,
    hook: &Hook,
    message_id: &str,
    body: &[u8],
) -> Result<SubmitTask, ApiError> {
    let from_body = hook
        .arguments
        .values()
        .any(|s| matches!(s, ArgumentSource::From(_)));
    let document: Value = if from_body {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                ErrorCode::MalformedBody,
                format!("the hook takes arguments from a JSON body, and this is not JSON: {e}"),
            )
        })?
    } else {
        Value::Null
    };
    let required = state.catalog.required_arguments(&hook.tool);
    let mut arguments = Map::new();
    let mut missing = Vec::new();
    for (argument, source) in &hook.arguments {
        match (source.resolve(&document), source) {
            (Some(value), _) => {
                arguments.insert(argument.clone(), value);
            }
            (None, ArgumentSource::From(pointer)) if required.contains(argument) => {
                missing.push(FieldError {
                    pointer: pointer.clone(),
                    detail: format!(
                        "nothing here; the hook takes the tool's required argument {argument:?} \
                         from it"
                    ),
                });
            }
            (None, _) => {}
        }
    }
    if !missing.is_empty() {
        let mut e = ApiError::new(ErrorCode::InvalidArguments, missing[0].detail.clone());
        e.0.errors = missing;
        return Err(e);
    }
    let mut request = SubmitTask::new(hook.tool.clone());
    request.arguments = arguments;
    request.agent.clone_from(&hook.agent);
    request.queue.clone_from(&hook.queue);
    request.priority = hook.priority;
    request.idempotency_key = Some(idempotency_key(name, message_id));
    request.metadata = Some(Map::from_iter([
        ("hook".to_owned(), Value::from(name)),
        ("webhook_id".to_owned(), Value::from(message_id)),
    ]));
    Ok(request)
}

/// The idempotency key of a hook's call: the hook and the message id, or the id's SHA-256 when
/// the two would be longer than a key may be.
fn idempotency_key(hook: &str, message_id: &str) -> String {
    let key = format!("hook:{hook}:{message_id}");
    if key.chars().count() as u64 <= *KEY_CHARS.end() {
        return key;
    }
    let digest = sha2::Sha256::digest(message_id.as_bytes());
    format!("hook:{hook}:sha256:{}", hex::encode(digest))
}

/// A refusal of the task, with each argument's pointer turned into the place in the call's body
/// it was taken from (`/arguments/repo` → `/repository/full_name`), so the sender sees what to
/// change in what it sent. Pointers at arguments that are constants stay as they are.
fn into_body(mut e: ApiError, hook: &Hook) -> ApiError {
    for field in &mut e.0.errors {
        let Some(rest) = field.pointer.strip_prefix("/arguments/") else {
            continue;
        };
        let (argument, inner) = rest.split_once('/').map_or((rest, ""), |(a, i)| (a, i));
        let argument = argument.replace("~1", "/").replace("~0", "~");
        if let Some(ArgumentSource::From(pointer)) = hook.arguments.get(&argument) {
            field.detail = format!("{} (the tool's argument {argument:?})", field.detail);
            field.pointer = if inner.is_empty() {
                pointer.clone()
            } else {
                format!("{pointer}/{inner}")
            };
        }
    }
    if let Some(first) = e.0.errors.first() {
        e.0.detail = format!("{}: {}", first.pointer, first.detail);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_point_into_the_body_the_sender_sent() {
        let hook = Hook {
            tenant: "t".into(),
            secrets: vec![],
            tool: "s.t".into(),
            agent: None,
            queue: None,
            priority: None,
            arguments: [
                ("n".to_owned(), ArgumentSource::From("/pull/number".into())),
                ("k".to_owned(), ArgumentSource::Value(Value::from(1))),
            ]
            .into(),
        };
        let mut e = ApiError::new(ErrorCode::InvalidArguments, "x");
        e.0.errors = vec![
            FieldError {
                pointer: "/arguments/n".into(),
                detail: "\"7\" is not of type \"integer\"".into(),
            },
            FieldError {
                pointer: "/arguments/k".into(),
                detail: "1 is less than the minimum of 2".into(),
            },
        ];
        let e = into_body(e, &hook);
        assert_eq!(e.0.errors[0].pointer, "/pull/number");
        assert!(e.0.errors[0].detail.contains("argument \"n\""));
        assert_eq!(e.0.errors[1].pointer, "/arguments/k");
        assert!(e.0.detail.starts_with("/pull/number: "));
    }

    #[test]
    fn long_message_ids_make_keys_of_a_valid_length() {
        assert_eq!(idempotency_key("h", "msg_1"), "hook:h:msg_1");
        let long = idempotency_key("h", &"x".repeat(400));
        assert!(long.starts_with("hook:h:sha256:"));
        assert!(long.len() as u64 <= *KEY_CHARS.end());
    }
}
