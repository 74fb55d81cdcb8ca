//! One trace per task: the request, the publish, the worker's attempt, the MCP call (whose
//! `_meta` carries the call's context), the terminal event's publish and the recorder's
//! projection are spans of one trace, each the child of the one that caused it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use reqwest::Method;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use wharf_contract::TaskStatus;
use wharf_telemetry::TraceContext;
use wharf_testkit::{Wharf, eventually};

/// Keeps every exported span in memory.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Collected {
    fn named(&self, name: &str, task: &str) -> Option<SpanData> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|s| {
                s.name == name
                    && (s.attributes.is_empty()
                        || !s.attributes.iter().any(|kv| kv.key.as_str() == "task_id")
                        || s.attributes
                            .iter()
                            .any(|kv| kv.key.as_str() == "task_id" && kv.value.as_str() == task))
            })
            .cloned()
    }
}

#[tokio::test]
async fn one_task_is_one_trace_from_the_request_to_the_history() {
    // Installed before the platform starts, in this test's own process (nextest runs each test
    // in a process of its own), so every part of it exports here.
    let spans = Collected::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(wharf_telemetry::traces::layer_for(provider.clone()))
        .init();
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;

    let caller = TraceContext::new_root();
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tasks")
        .header("traceparent", caller.header())
        .json(&json!({"tool": "demo.sleep", "arguments": {"seconds": 0.1, "steps": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id: uuid::Uuid = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    w.wait_recorded(id, TaskStatus::Succeeded).await;
    let task = id.to_string();
    // The projection's spans end when the recorder commits its batch.
    let recorded = eventually("the projection spans", Duration::from_secs(15), || async {
        spans.named("record succeeded", &task)
    })
    .await;
    let get = |name: &str| {
        spans
            .named(name, &task)
            .unwrap_or_else(|| panic!("no span {name:?} among {:?}", names(&spans)))
    };
    let http = get("POST /api/v1/tasks");
    let publish = get("publish task");
    let attempt = get("attempt demo.sleep");
    let call = get("tools/call sleep");
    let terminal = get("publish succeeded");
    let submitted = get("record submitted");

    let trace = TraceId::from_bytes(caller.trace_id.to_be_bytes());
    for s in [
        &http, &publish, &attempt, &call, &terminal, &submitted, &recorded,
    ] {
        assert_eq!(
            s.span_context.trace_id(),
            trace,
            "{} is in another trace",
            s.name
        );
    }
    let id_of = |s: &SpanData| s.span_context.span_id();
    assert_eq!(
        http.parent_span_id,
        SpanId::from_bytes(caller.span_id.to_be_bytes()),
        "the request continues the caller's trace"
    );
    assert_eq!(publish.parent_span_id, id_of(&http));
    assert_eq!(
        attempt.parent_span_id,
        id_of(&publish),
        "through the task's NATS header"
    );
    assert_eq!(call.parent_span_id, id_of(&attempt));
    assert_eq!(terminal.parent_span_id, id_of(&attempt));
    assert_eq!(
        submitted.parent_span_id,
        id_of(&publish),
        "through the event's NATS header"
    );
    assert_eq!(recorded.parent_span_id, id_of(&attempt));

    // The MCP server got the call's own context in `_meta`.
    let started = w
        .demo_log_for(id)
        .into_iter()
        .find(|l| l["event"] == "started")
        .expect("the demo server logged the call");
    let expected = format!("00-{}-{}-01", trace, id_of(&call));
    assert_eq!(started["traceparent"], expected);

    // A WebSocket submission starts its trace at a span of its own.
    let mut ws = wharf_testkit::WsClient::connect(&w).await;
    ws.send(json!({"type": "task:submit", "task": {"tool": "demo.echo", "arguments": {"message": "ws"}}}))
        .await;
    let accepted = ws.next().await;
    let ws_task = accepted["task_id"].as_str().unwrap().to_owned();
    let publish = eventually(
        "the WebSocket task's publish",
        Duration::from_secs(10),
        || async { spans.named("publish task", &ws_task) },
    )
    .await;
    let submit = spans
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.name == "WS task:submit" && id_of(s) == publish.parent_span_id)
        .cloned()
        .expect("the publish is a child of the WebSocket submission's span");
    assert_eq!(
        submit.span_context.trace_id(),
        publish.span_context.trace_id()
    );
    w.shutdown().await;
    let _ = provider.shutdown();
}

fn names(spans: &Collected) -> Vec<String> {
    spans
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.name.to_string())
        .collect()
}

/// A request the fake collector received: its head and body.
type Request = (String, Vec<u8>);

/// A `wharf worker` process given an OTLP endpoint (the standard variable) sends its spans
/// there over OTLP/HTTP: here, a listener of the test's that keeps every request body.
#[tokio::test]
async fn a_worker_process_exports_its_spans_over_otlp() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let received: Arc<Mutex<Vec<Request>>> = Arc::default();
    let got = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = collector.accept().await {
            let got = got.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(socket);
                loop {
                    let mut head = Vec::new();
                    let mut line = String::new();
                    while conn.read_line(&mut line).await.unwrap_or(0) > 2 {
                        head.push(std::mem::take(&mut line));
                    }
                    if head.is_empty() {
                        return;
                    }
                    let length = head
                        .iter()
                        .find_map(|h| {
                            let (k, v) = h.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    conn.read_exact(&mut body).await.unwrap();
                    got.lock().unwrap().push((head.join(""), body));
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    conn.get_mut().write_all(ok).await.unwrap();
                }
            });
        }
    });

    let mut w = Wharf::start().await;
    w.wait_for_tool("demo.echo").await;
    w.workers.pop().unwrap().stop().await;
    let _worker = w
        .process(&["worker", "--id", "traced"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "wharf-worker-under-test")
        .spawn()
        .unwrap();
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "traced"}}))
        .await;
    w.wait_recorded(id, TaskStatus::Succeeded).await;
    let task = id.to_string();
    // The batch exporter sends every few seconds.
    let (head, body) = eventually(
        "spans at the collector",
        Duration::from_secs(30),
        || async {
            received
                .lock()
                .unwrap()
                .iter()
                .find(|(_, body)| body.windows(task.len()).any(|w| w == task.as_bytes()))
                .cloned()
        },
    )
    .await;
    assert!(head.starts_with("POST /v1/traces "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-protobuf"),
        "{head}"
    );
    let service = b"wharf-worker-under-test";
    assert!(
        body.windows(service.len()).any(|w| w == service),
        "the service name is set"
    );
    w.shutdown().await;
}
