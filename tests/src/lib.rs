//! The Wharf test kit: real parts, started per test, stopped when the test ends.
//!
//! [`Wharf::start`] gives a test its own nats-server (free port, own store directory), its own
//! Postgres database (cloned from a migrated template in the cluster named by
//! `WHARF_TEST_DATABASE_URL`, which `./test.sh` starts), and a gateway, recorder and workers
//! in-process, each stoppable on its own. MCP servers are real processes: the bundled demo server
//! is the `wharf` binary itself (`wharf mcp-demo`). Nothing is shared between tests, so they run
//! in parallel.

//!
//! By concern: `platform.rs` (the parts and what a test reads of NATS and the database),
//! `api.rs` (the HTTP API, through `wharf-client`: one client per credential), `ws.rs` (the
//! WebSocket), `mcp.rs` (MCP servers), `tls.rs` (certificates, an HTTPS proxy, a round-robin TCP proxy), `rig.rs` (a
//! platform of separate processes, for the tests that break them with signals).

use std::path::PathBuf;
use std::time::{Duration, Instant};

mod api;
mod mcp;
mod nats;
mod platform;
pub mod rig;
mod tls;
mod ws;

pub use anyhow;
pub use api::{call, send, wait_for_tool_at};
pub use mcp::{EverythingHttp, demo_server, everything_stdio, node_server};
pub use nats::{NatsEvents, nats_refusal, tenant_nats};
pub use platform::{Options, Part, Wharf, empty_database, fresh_database};
pub use tls::{certificate, round_robin_proxy, tls_proxy};
pub use wharf_client::Client;
pub use ws::WsClient;

/// Polls `check` every 25 ms until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `wharf` binary of this build (the demo MCP server and the separate-process modes).
pub fn wharf_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WHARF_BIN") {
        return PathBuf::from(bin);
    }
    // target/<profile>/deps/it-<hash> -> target/<profile>/wharf
    let exe = std::env::current_exe().expect("the test binary has a path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("wharf"))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p wharf` (./test.sh does)",
        bin.display()
    );
    bin
}
