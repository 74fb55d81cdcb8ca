//! SeaORM migrations for the Wharf database, written once for Postgres and SQLite.
//!
//! Migrations only add: a released migration is never edited. The store runs them at start-up.

use sea_orm_migration::prelude::*;

mod m0001_tasks;
mod m0002_run_at;
mod m0003_priority;
mod m0004_finished_at_index;
mod m0005_tenants_and_keys;
mod m0006_audit;
mod m0007_sessions_agents;
mod m0008_config_revisions;
mod m0009_history_partitions;
mod m0010_callback_deliveries;
mod m0011_trace_id;
pub mod partitions;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_tasks::Migration),
            Box::new(m0002_run_at::Migration),
            Box::new(m0003_priority::Migration),
            Box::new(m0004_finished_at_index::Migration),
            Box::new(m0005_tenants_and_keys::Migration),
            Box::new(m0006_audit::Migration),
            Box::new(m0007_sessions_agents::Migration),
            Box::new(m0008_config_revisions::Migration),
            Box::new(m0009_history_partitions::Migration),
            Box::new(m0010_callback_deliveries::Migration),
            Box::new(m0011_trace_id::Migration),
        ]
    }
}
