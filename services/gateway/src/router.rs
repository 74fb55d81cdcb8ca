//! The router: every route with its handler, and the layers every request passes (the
//! per-address limit, authentication, audit, CORS, HSTS, the deadline, the body limit).

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use wharf_contract::ErrorCode;

use crate::problem::ApiError;
use crate::{
    AppState, agents, audit, auth, callbacks, config, console, dlq, hooks, keys, limits, mcp,
    openapi, ops, queues, sessions, tasks, tools, ws,
};

/// Every route of the gateway.
pub(crate) fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    // Everything but the health checks needs a caller: `auth::authenticate` runs first.
    let authenticated = Router::new()
        .route("/api/v1/tasks", post(tasks::create).get(tasks::list))
        .route("/api/v1/tasks/batch", post(tasks::create_batch))
        .route("/api/v1/tasks/{id}", get(tasks::get))
        .route("/api/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/api/v1/tasks/{id}/events", get(tasks::events))
        .route("/api/v1/tasks/{id}/deliveries", get(callbacks::of_task))
        .route("/api/v1/deliveries", get(callbacks::list))
        .route(
            "/api/v1/deliveries/{id}/redeliver",
            post(callbacks::redeliver),
        )
        .route("/api/v1/dlq", get(dlq::list))
        .route("/api/v1/dlq/{id}", get(dlq::get))
        .route("/api/v1/dlq/{id}/replay", post(dlq::replay))
        .route("/api/v1/tools", get(tools::list))
        .route("/api/v1/tools/{name}/call", post(tools::call))
        .route(
            "/api/v1/sessions",
            post(sessions::create).get(sessions::list),
        )
        .route(
            "/api/v1/sessions/{id}",
            get(sessions::get).delete(sessions::delete),
        )
        .route("/api/v1/agents", post(agents::create).get(agents::list))
        .route(
            "/api/v1/agents/{name}",
            get(agents::get).put(agents::update),
        )
        .route("/api/v1/workers", get(ops::workers))
        .route("/api/v1/queues", get(ops::queues))
        .route("/api/v1/queues/{name}/pause", post(queues::pause))
        .route("/api/v1/queues/{name}/resume", post(queues::resume))
        .route("/api/v1/keys", post(keys::create).get(keys::list))
        .route("/api/v1/keys/{id}", get(keys::get).delete(keys::revoke))
        .route("/api/v1/whoami", get(auth::whoami))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/config", get(config::get).put(config::update))
        .route("/api/v1/config/revisions", get(config::revisions))
        .route("/ws/v1/tasks", get(ws::upgrade))
        .route("/metrics", get(ops::metrics))
        .merge(mcp::routes(&state))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    // Routes here and in `openapi::operations` go together: a test compares the two lists.
    let mut router = Router::new()
        .merge(authenticated)
        .merge(mcp::public_routes())
        // A webhook's signature is its credential (`hooks::receive`).
        .route("/hooks/{name}", post(hooks::receive))
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi::serve_document))
        .route("/api/v1/docs", get(openapi::docs_page))
        .route("/api/v1/docs/{file}", get(openapi::docs_asset))
        // The web console at `/`, and its files and screens where no route matched.
        .merge(console::routes())
        .fallback(console::fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::per_ip,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record_http,
        ));
    if let Some(cors) = cors(&state.config.cors_origins) {
        router = router.layer(cors);
    }
    if let Some(tls) = &state.config.tls
        && tls.hsts_max_age_secs > 0
    {
        let value = format!("max-age={}; includeSubDomains", tls.hsts_max_age_secs);
        router = router.layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            axum::http::HeaderValue::from_str(&value).expect("a valid header value"),
        ));
    }
    router = router.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        deadline,
    ));
    // A bug that panics in a handler still gets an answer (500 `internal`), not a dropped
    // connection; the panic is logged.
    router = router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        |_: Box<dyn std::any::Any + Send>| {
            ApiError::internal("a request handler panicked").into_response()
        },
    ));
    router
        .layer(axum::middleware::from_fn(ops::measure))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Answers 504 `timeout` when a request takes longer than `request_timeout` to start its
/// answer. Streams (SSE, WebSocket) start at once and then run as long as they need.
async fn deadline(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = state.config.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!(
                "the request took longer than {} s; it may have been carried out: look before \
                 retrying, or retry with the same idempotency key",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// The CORS layer for the configured origins, if any.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                axum::http::header::LOCATION,
                axum::http::header::RETRY_AFTER,
                HeaderName::from_static("ratelimit-limit"),
                HeaderName::from_static("ratelimit-remaining"),
                HeaderName::from_static("ratelimit-reset"),
                HeaderName::from_static("x-request-id"),
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

/// `GET /healthz` and `GET /livez` (the name Kubernetes' liveness probes use): the process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: NATS and the database both answer.
async fn readyz(State(state): State<AppState>) -> Response {
    let nats = state.bus.is_connected();
    let database = state.store.ping().await;
    let body = Json(serde_json::json!({ "nats": nats, "database": database }));
    if nats && database {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}
