//! The MCP facade's cost: the same quick tool called through `/mcp` (an rmcp client speaking
//! MCP 2026-07-28 over streamable HTTP) and through `POST /api/v1/tools/{name}/call`, one call
//! at a time, the two alternating so that both see the same machine.

use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{Value, json};

use crate::Options;
use crate::platform::{Platform, Shape};
use crate::stats::{Samples, merge};

const TOOL: &str = "demo.echo";

/// The scenario: one result line per way of calling.
pub async fn mcp_facade(opts: &Options) -> anyhow::Result<Vec<Value>> {
    let platform = Platform::start(opts, &Shape::default()).await?;
    let outcome = measure(opts, &platform).await;
    platform.stop(false).await;
    outcome
}

async fn measure(opts: &Options, platform: &Platform) -> anyhow::Result<Vec<Value>> {
    // One pooled HTTP client each, kept alive, as a real client of either API would.
    let http = reqwest::Client::new();
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", platform.api)),
    );
    let mcp = ()
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await?;
    let arguments = json!({"message": "hello"});
    let rest = {
        let (http, url) = (
            http.clone(),
            format!("{}/api/v1/tools/{TOOL}/call", platform.api),
        );
        let body = json!({ "arguments": arguments });
        move || {
            let call = http.post(&url).json(&body).send();
            async move { matches!(call.await, Ok(r) if r.status().as_u16() == 200) }
        }
    };
    let params = CallToolRequestParams::new(TOOL)
        .with_arguments(arguments.as_object().cloned().unwrap_or_default());
    let over_mcp = || {
        let call = mcp.call_tool(params.clone());
        async move { matches!(call.await, Ok(r) if r.is_error != Some(true)) }
    };
    let calls = opts.count(3000, 300);
    // Warm-up: connections, the gateway's caches, the worker's MCP session.
    let _ = alternate(calls / 10, &rest, &over_mcp).await;
    let started = Instant::now();
    let (rest_took, mcp_took) = alternate(calls, &rest, &over_mcp).await;
    let seconds = started.elapsed().as_secs_f64();
    mcp.cancel().await?;
    let line = |request: &str, (samples, errors): (Samples, usize)| {
        merge(
            json!({
                "request": request,
                "tool": TOOL,
                "calls": samples.len() + errors,
                "errors": errors,
                "seconds": seconds,
            }),
            samples.summary(),
        )
    };
    Ok(vec![
        line(&format!("POST /api/v1/tools/{TOOL}/call"), rest_took),
        line(&format!("MCP tools/call {TOOL} (/mcp)"), mcp_took),
    ])
}

/// Calls `a` then `b`, `n` times; the latencies of each (of the calls that succeeded) and
/// their failures.
async fn alternate<A, AF, B, BF>(n: usize, a: &A, b: &B) -> ((Samples, usize), (Samples, usize))
where
    A: Fn() -> AF,
    AF: Future<Output = bool>,
    B: Fn() -> BF,
    BF: Future<Output = bool>,
{
    let (mut sa, mut sb) = (Samples::with_capacity(n), Samples::with_capacity(n));
    let (mut ea, mut eb) = (0, 0);
    for _ in 0..n {
        timed(a, &mut sa, &mut ea).await;
        timed(b, &mut sb, &mut eb).await;
    }
    ((sa, ea), (sb, eb))
}

async fn timed<F, Fut>(call: &F, samples: &mut Samples, errors: &mut usize)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let at = Instant::now();
    let ok = tokio::time::timeout(Duration::from_secs(30), call()).await;
    match ok {
        Ok(true) => samples.push(at.elapsed()),
        _ => *errors += 1,
    }
}
