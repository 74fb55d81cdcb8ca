//! End-to-end tests against real nats-server, Postgres and MCP server processes.

mod audit;
mod bad_input;
mod batch;
mod delayed;
mod dlq;
mod docs_page;
mod faults;
mod follow;
mod idempotency;
mod mcp;
mod metrics;
mod observability;
mod ops;
mod priority;
mod processes;
mod projection;
mod queue;
mod recovery;
mod resources;
mod security;
mod serving;
mod sse;
mod tasks;
mod tokens;
mod traces;
mod ws;
