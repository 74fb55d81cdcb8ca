//! The floor under the gateway (`raw_http`): what one task per HTTP request costs with nothing
//! but HTTP, JSON and one durable publish. An axum server in a process of its own
//! (`wharf http-floor`, hidden) takes `POST /api/v1/tasks`, parses the body, publishes it to a
//! file-storage work-queue stream with a message id and awaits the ack, and answers 202 with
//! the new id; the same load generator as the throughput scenario drives it. The gateway does
//! all that and more (authentication, limits, audit, the schema check, a second message), so
//! its µs per task against this server's shows what the rest costs.

use std::net::SocketAddr;

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::machine::CpuTimes;
use crate::scenarios::{echo_task, submit_http};
use crate::stats::merge;
use crate::{Options, wait_for_port};

const STREAM: &str = "BENCH_FLOOR";
const SUBJECT: &str = "bench.floor";

/// Serves the floor until the process is killed (`wharf http-floor`).
pub async fn serve(nats_url: &str, listen: SocketAddr) -> anyhow::Result<()> {
    let client = async_nats::connect(nats_url).await?;
    let js = jetstream::new(client);
    let app = Router::new()
        .route("/api/v1/tasks", post(submit))
        .with_state(js);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn submit(State(js): State<jetstream::Context>, body: Bytes) -> Response {
    // Parsed, as any handler must, though only its validity matters here.
    if serde_json::from_slice::<Value>(&body).is_err() {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    let id = uuid::Uuid::now_v7().to_string();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    let stored = async {
        js.publish_with_headers(SUBJECT, headers, body)
            .await?
            .await
            .map_err(anyhow::Error::from)
    };
    match stored.await {
        Ok(_) => (StatusCode::ACCEPTED, axum::Json(json!({ "id": id }))).into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Measures the floor with the throughput scenario's load: single-task requests over 64
/// keep-alive connections.
pub async fn http_floor(opts: &Options) -> anyhow::Result<Value> {
    let n = opts.count(50_000, 2_000);
    let dir = tempfile::tempdir()?;
    let nats = wharf_local::LocalNats::start(dir.path()).await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let port = wharf_local::free_port()?;
    let mut server = tokio::process::Command::new(&opts.wharf_bin)
        .args(["http-floor", "--nats", nats.url()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .kill_on_drop(true)
        .spawn()
        .context("starting wharf http-floor")?;
    let outcome = async {
        wait_for_port(port, "wharf http-floor").await?;
        let api = format!("http://127.0.0.1:{port}");
        let cpu = CpuTimes::now();
        let (_, took, ids, latency) = submit_http(&api, n, 64, &echo_task(100), 1).await?;
        let wall = took.as_secs_f64();
        let busy = CpuTimes::now().busy_since(&cpu, wall);
        anyhow::ensure!(ids.len() == n, "{} of {n} requests answered", ids.len());
        anyhow::Ok(merge(
            json!({
                "tasks": n,
                "http_connections": 64,
                "seconds": wall,
                "per_sec": n as f64 / wall,
                "cpu": busy,
            }),
            latency.summary(),
        ))
    }
    .await;
    let _ = server.kill().await;
    nats.stop().await;
    outcome
}
