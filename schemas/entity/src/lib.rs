//! SeaORM entities: the tables the recorder writes and the gateway reads.
//!
//! The same entities serve Postgres (production) and SQLite (`wharf dev`). Only the store and the
//! migrations use them; workers never do. The JSON columns hold contract types serialised with
//! serde; the conversions live in `wharf-store`.

pub mod agent;
pub mod api_key;
pub mod audit_event;
pub mod callback_attempt;
pub mod callback_delivery;
pub mod config_revision;
pub mod session;
pub mod task;
pub mod task_event;
