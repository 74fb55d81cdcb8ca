//! The HTTP listener of the processes without an API (`wharf worker`, `wharf recorder`):
//! Prometheus metrics and the health probes an orchestrator asks.

use anyhow::Context;
use axum::http::{StatusCode, header};
use axum::routing::get;
use wharf_bus::Bus;

/// Serves, on `addr` and in the background, `GET /metrics`, `GET /livez` (the process
/// answers: a liveness probe restarts it otherwise) and `GET /readyz` (connected to NATS; 503
/// while it is not). Liveness leaves NATS out on purpose: restarting a worker does not bring
/// NATS back, and a fleet restarting together while NATS is away only adds load when it returns.
pub async fn serve(addr: Option<std::net::SocketAddr>, bus: Bus) -> anyhow::Result<()> {
    let Some(addr) = addr else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics and probes on {addr}"))?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    wharf_telemetry::metrics::render(),
                )
            }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if bus.is_connected() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not connected to NATS")
                }
            }),
        );
    tracing::info!(%addr, "serving metrics and probes");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}
