//! One trace per task: the request, the publish, the worker's attempt, the MCP call (whose
//! `_meta` carries the call's context), the terminal event's publish and the recorder's
//! projection are spans of one trace, each the child of the one that caused it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
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
    /// The first span exported that `matches`.
    fn find(&self, matches: impl Fn(&SpanData) -> bool) -> Option<SpanData> {
        self.0.lock().unwrap().iter().find(|s| matches(s)).cloned()
    }

    /// The span `name` of `task`, waited for until it is exported.
    async fn exported(&self, name: &str, task: &str) -> SpanData {
        let what = format!("the span {name:?} of task {task}");
        eventually(&what, Duration::from_secs(15), || async {
            self.named(name, task)
        })
        .await
    }

    fn named(&self, name: &str, task: &str) -> Option<SpanData> {
        self.find(|s| {
            s.name == name
                && (s.attributes.is_empty()
                    || !s.attributes.iter().any(|kv| kv.key.as_str() == "task_id")
                    || s.attributes
                        .iter()
                        .any(|kv| kv.key.as_str() == "task_id" && kv.value.as_str() == task))
        })
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
    let recorded = spans.exported("record succeeded", &task).await;
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
    let publish = spans.exported("publish task", &ws_task).await;
    let submit = spans
        .find(|s| s.name == "WS task:submit" && id_of(s) == publish.parent_span_id)
        .expect("the publish is a child of the WebSocket submission's span");
    assert_eq!(
        submit.span_context.trace_id(),
        publish.span_context.trace_id()
    );

    // A submission through the NATS service continues its caller's trace as HTTP does.
    let caller = TraceContext::new_root();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", caller.header().as_str());
    let body = json!({"tool": "demo.echo", "arguments": {"message": "nats"}});
    let reply = w
        .bus
        .client()
        .request_with_headers(
            wharf_contract::nats_api_subject("default", "submit"),
            headers,
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    let nats_task = answer["id"].as_str().expect("a task").to_owned();
    let attempt = spans.exported("attempt demo.echo", &nats_task).await;
    let request = spans
        .find(|s| s.name == "NATS tasks.submit")
        .expect("the NATS request is a span");
    let trace = TraceId::from_bytes(caller.trace_id.to_be_bytes());
    assert_eq!(request.span_context.trace_id(), trace);
    assert_eq!(
        request.parent_span_id,
        SpanId::from_bytes(caller.span_id.to_be_bytes())
    );
    assert_eq!(
        attempt.span_context.trace_id(),
        trace,
        "the worker's attempt too"
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

/// `wharf worker` and `wharf recorder` processes given an OTLP endpoint (the standard
/// variable) send their spans there over OTLP/HTTP: here, a listener of the test's that keeps
/// every request body.
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

    // The worker and the recorder export, each in a process of its own; the gateway (in this
    // test's process) does not, so the task's messages carry no traceparent and both continue
    // the trace the task names.
    let mut w = Wharf::start().await;
    w.wait_for_tool("demo.echo").await;
    w.workers.pop().unwrap().stop().await;
    w.recorder.take().unwrap().stop().await;
    let exporting = |part: &str| {
        w.process(&[part])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_SERVICE_NAME", format!("wharf-{part}-under-test"))
            .spawn()
            .unwrap()
    };
    let (_worker, _recorder) = (exporting("worker"), exporting("recorder"));
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "traced"}}))
        .await;
    let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
    let trace = u128::from_str_radix(done.trace_id.as_deref().unwrap(), 16).unwrap();
    let trace = trace.to_be_bytes().to_vec();
    let task = id.to_string();
    // Every span of the task each process exported (the batch exporter sends every few
    // seconds), by name: the worker's attempt and MCP call, the recorder's projection of
    // each event.
    let spans_of = |service: &str| {
        let mut spans = std::collections::BTreeMap::new();
        for (head, body) in received.lock().unwrap().iter() {
            assert!(head.starts_with("POST /v1/traces "), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/x-protobuf"),
                "{head}"
            );
            let request = <ExportTraceServiceRequest as prost::Message>::decode(&body[..]).unwrap();
            for resource in request.resource_spans {
                let named = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .any(|kv| kv.key == "service.name" && text(kv) == Some(service));
                let all = resource.scope_spans.into_iter().flat_map(|s| s.spans);
                for span in all.filter(|_| named) {
                    if span
                        .attributes
                        .iter()
                        .any(|kv| kv.key == "task_id" && text(kv) == Some(task.as_str()))
                    {
                        spans.insert(span.name.clone(), span);
                    }
                }
            }
        }
        spans
    };
    let worker = eventually("the worker's spans", Duration::from_secs(30), || async {
        Some(spans_of("wharf-worker-under-test")).filter(|s| s.contains_key("attempt demo.echo"))
    })
    .await;
    let recorder = eventually("the recorder's spans", Duration::from_secs(30), || async {
        Some(spans_of("wharf-recorder-under-test"))
            .filter(|s| s.contains_key("record submitted") && s.contains_key("record succeeded"))
    })
    .await;
    // Each span is in the task's trace, and each process's first span hangs off the context
    // that reached it: the task's trace, or the worker's attempt through the outcome's header.
    for (name, span) in worker.iter().chain(&recorder) {
        assert_eq!(span.trace_id, trace, "{name} is in another trace");
    }
    // The attempt and the projection of `submitted` hang off one root: the trace's, which
    // the gateway did not record.
    let attempt = &worker["attempt demo.echo"];
    assert!(
        !attempt.parent_span_id.is_empty(),
        "the attempt continues the task's trace"
    );
    assert_eq!(
        recorder["record submitted"].parent_span_id,
        attempt.parent_span_id
    );
    assert_eq!(recorder["record succeeded"].parent_span_id, attempt.span_id);
    w.shutdown().await;
}

/// An OTLP attribute's value when it is a string.
fn text(kv: &opentelemetry_proto::tonic::common::v1::KeyValue) -> Option<&str> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}
