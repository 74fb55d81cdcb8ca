//! Wharf's bundled demo MCP server, built with rmcp.
//!
//! It exists so that `wharf dev` has tools to run with nothing else installed, and so that tests
//! and benchmarks exercise a real MCP server process. Tools: `echo`, `sleep` (progress every step,
//! honours cancellation), `fail` (an MCP tool error) and `hash` (CPU-bound). It serves on
//! `rmcp::transport::stdio_pipes()`, which keeps many calls in flight on one connection cheap.
//!
//! When `WHARF_DEMO_LOG` names a file, the server appends one JSON line per notable happening
//! (a call started, a call cancelled), tagged with the Wharf task id the caller put in `_meta`,
//! so tests can check what the server itself saw. Of Wharf it uses only the contract's names.

use std::io::Write;
use std::time::Duration;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock as Content, Implementation, ProgressNotificationParam,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router,
};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use wharf_contract::{TASK_ID_META, TRACEPARENT_META};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EchoArgs {
    /// Text to send back.
    pub message: String,
    /// How many times to send it back, joined (1 by default; at most 100,000): a large result
    /// from a small request.
    #[serde(default)]
    #[schemars(range(min = 1, max = 100000))]
    pub times: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    /// How long to sleep, in seconds (0 to 3600).
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub seconds: f64,
    /// Number of progress notifications to send, evenly spaced (1 to 1000); one per second by
    /// default.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub steps: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailArgs {
    /// The error message the tool reports.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashArgs {
    /// Data to hash.
    pub data: String,
    /// How many times to apply SHA-256 (1 to 10,000,000).
    #[schemars(range(min = 1, max = 10_000_000))]
    pub rounds: u32,
}

/// The demo server.
#[derive(Debug, Clone)]
pub struct Demo {
    tool_router: rmcp::handler::server::router::tool::ToolRouter<Demo>,
}

impl Default for Demo {
    fn default() -> Self {
        Demo {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl Demo {
    #[tool(description = "Returns the message it is given")]
    async fn echo(&self, Parameters(args): Parameters<EchoArgs>) -> CallToolResult {
        let times = args.times.unwrap_or(1).clamp(1, 100_000) as usize;
        CallToolResult::success(vec![Content::text(args.message.repeat(times))])
    }

    #[tool(
        description = "Sleeps for a number of seconds, reporting progress at every step; stops early when cancelled"
    )]
    async fn sleep(
        &self,
        Parameters(args): Parameters<SleepArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        if !(0.0..=3600.0).contains(&args.seconds) || args.seconds.is_nan() {
            return Err(ErrorData::invalid_params(
                "seconds must be between 0 and 3600",
                None,
            ));
        }
        let steps = args
            .steps
            .unwrap_or_else(|| (args.seconds.ceil() as u32).max(1))
            .clamp(1, 1000);
        let task = task_id(&ctx);
        let traceparent = ctx.meta.get(TRACEPARENT_META).cloned();
        log_line(
            json!({"event": "started", "tool": "sleep", "task_id": task, "traceparent": traceparent}),
        );
        let step = Duration::from_secs_f64(args.seconds / f64::from(steps));
        let token = ctx.meta.get_progress_token();
        for done in 1..=steps {
            tokio::select! {
                () = tokio::time::sleep(step) => {}
                () = ctx.ct.cancelled() => {
                    log_line(json!({"event": "cancelled", "tool": "sleep", "task_id": task, "step": done}));
                    return Err(ErrorData::internal_error("cancelled", None));
                }
            }
            if let Some(token) = &token {
                let note = ProgressNotificationParam::new(token.clone(), f64::from(done))
                    .with_total(f64::from(steps))
                    .with_message(format!("step {done} of {steps}"));
                // A client that went away is noticed through cancellation; ignore send errors.
                let _ = ctx.peer.notify_progress(note).await;
            }
        }
        Ok(CallToolResult::success(vec![Content::text(format!(
            "slept {} seconds",
            args.seconds
        ))]))
    }

    #[tool(description = "Always fails with a tool error (isError: true)")]
    async fn fail(&self, Parameters(args): Parameters<FailArgs>) -> CallToolResult {
        let message = args
            .message
            .unwrap_or_else(|| "the demo tool failed as asked".into());
        CallToolResult::error(vec![Content::text(message)])
    }

    #[tool(description = "Applies SHA-256 to the data the given number of times (CPU-bound)")]
    async fn hash(
        &self,
        Parameters(args): Parameters<HashArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        if !(1..=10_000_000).contains(&args.rounds) {
            return Err(ErrorData::invalid_params(
                "rounds must be between 1 and 10000000",
                None,
            ));
        }
        let digest = tokio::task::spawn_blocking(move || {
            let mut digest: [u8; 32] = Sha256::digest(args.data.as_bytes()).into();
            for _ in 1..args.rounds {
                digest = Sha256::digest(digest).into();
            }
            digest
        })
        .await
        .map_err(|e| ErrorData::internal_error(format!("hash worker failed: {e}"), None))?;
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok(CallToolResult::success(vec![Content::text(hex)]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("wharf-demo", env!("CARGO_PKG_VERSION")))
            .with_instructions("Wharf's demo tools: echo, sleep, fail, hash")
    }
}

fn task_id(ctx: &RequestContext<RoleServer>) -> Option<String> {
    ctx.meta
        .get(TASK_ID_META)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

fn log_line(line: serde_json::Value) {
    let Some(path) = std::env::var_os("WHARF_DEMO_LOG") else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut file) = file {
        let _ = writeln!(file, "{line}");
    }
}

/// Serves the demo tools on this process's stdin and stdout until the client goes away.
pub async fn serve_stdio() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    log_line(json!({"event": "serving", "pid": std::process::id()}));
    let service = Demo::default()
        .serve(rmcp::transport::stdio_pipes())
        .await?;
    service.waiting().await?;
    Ok(())
}
