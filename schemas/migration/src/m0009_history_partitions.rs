//! The history at scale. On Postgres, `tasks` and `task_events` become partitioned tables, one
//! partition per UTC day of submission (see `partitions.rs`), so old history goes by dropping a
//! day's partitions whole instead of deleting rows. The tables as they were are not copied:
//! they become one partition each, holding every id up to the end of the day the migration
//! ran, so the migration costs an index build over `task_events` and a scan, not a rewrite.
//! `task_events` is keyed by `(task_id, seq)` from here on: a key of a partitioned table must
//! hold its partition column (a sequence still names one event).
//!
//! On both backends: an index of the unfinished tasks alone, which the per-tenant cap counts
//! and `?unfinished` lists, and which the retention asks of each partition it would drop.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::partitions::{DAY_MS, LEGACY_SUFFIX, day_start, uuid_at};

#[derive(DeriveMigrationName)]
pub struct Migration;

const UNFINISHED_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS idx_tasks_unfinished ON tasks (tenant, id) WHERE status_rank < 2";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() != DbBackend::Postgres {
            db.execute_unprepared(UNFINISHED_INDEX).await?;
            return Ok(());
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| DbErr::Migration(e.to_string()))?
            .as_millis() as i64;
        // The old tables keep everything submitted up to the end of today.
        let legacy_end = uuid_at(day_start(now_ms) + DAY_MS);
        for step in partitioned() {
            db.execute_unprepared(&step).await?;
        }
        // An empty old table is dropped; one with rows becomes the first partition. Rows of a
        // later id (a clock ahead) go through the parent to the default partition first, as
        // the old partition's range cannot hold them.
        for (table, column) in crate::partitions::TABLES {
            let old = format!("{table}_{LEGACY_SUFFIX}");
            let any = db
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!("SELECT 1 FROM {old} LIMIT 1"),
                ))
                .await?;
            if any.is_none() {
                db.execute_unprepared(&format!("DROP TABLE {old}")).await?;
                continue;
            }
            if table == "task_events" {
                // A partition takes its parent's key, (task_id, seq), in place of its own.
                db.execute_unprepared(&format!(
                    "ALTER TABLE {old} DROP CONSTRAINT task_events_unpartitioned_pkey"
                ))
                .await?;
            }
            for step in [
                format!("INSERT INTO {table} SELECT * FROM {old} WHERE {column} >= '{legacy_end}'"),
                format!("DELETE FROM {old} WHERE {column} >= '{legacy_end}'"),
                format!(
                    "ALTER TABLE {table} ATTACH PARTITION {old} \
                     FOR VALUES FROM (MINVALUE) TO ('{legacy_end}')"
                ),
            ] {
                db.execute_unprepared(&step).await?;
            }
        }
        // The old index of events by task is the new key's twin on the old partition.
        db.execute_unprepared("DROP INDEX IF EXISTS idx_task_events_unpartitioned_task")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP INDEX IF EXISTS idx_tasks_unfinished")
                .await?;
            return Ok(());
        }
        Err(DbErr::Migration(
            "the partitioned history cannot be turned back into plain tables; restore the \
             database from a backup taken before this migration"
                .into(),
        ))
    }
}

/// The statements that move the old tables aside under new names and make the partitioned
/// ones, with their keys, indexes and default partitions.
fn partitioned() -> Vec<String> {
    let tasks_indexes = [
        ("idx_tasks_status_id", "status, id"),
        ("idx_tasks_queue_id", "queue, id"),
        ("idx_tasks_session_id", "session_id, id"),
        ("idx_tasks_tenant_id", "tenant, id"),
        ("idx_tasks_finished_at", "finished_at"),
    ];
    let mut steps = vec![
        "ALTER TABLE tasks RENAME TO tasks_unpartitioned".to_owned(),
        "ALTER TABLE tasks_unpartitioned RENAME CONSTRAINT tasks_pkey TO tasks_unpartitioned_pkey"
            .to_owned(),
    ];
    for (name, _) in tasks_indexes {
        let rest = name.trim_start_matches("idx_tasks_");
        steps.push(format!(
            "ALTER INDEX {name} RENAME TO idx_tasks_unpartitioned_{rest}"
        ));
    }
    steps.extend([
        "CREATE TABLE tasks (LIKE tasks_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (id)"
            .to_owned(),
        "ALTER TABLE tasks ADD CONSTRAINT tasks_pkey PRIMARY KEY (id)".to_owned(),
    ]);
    for (name, columns) in tasks_indexes {
        steps.push(format!("CREATE INDEX {name} ON tasks ({columns})"));
    }
    steps.extend([
        UNFINISHED_INDEX.to_owned(),
        "CREATE TABLE tasks_default PARTITION OF tasks DEFAULT".to_owned(),
        "ALTER TABLE task_events RENAME TO task_events_unpartitioned".to_owned(),
        "ALTER TABLE task_events_unpartitioned RENAME CONSTRAINT task_events_pkey \
         TO task_events_unpartitioned_pkey"
            .to_owned(),
        "ALTER INDEX idx_task_events_task RENAME TO idx_task_events_unpartitioned_task".to_owned(),
        "CREATE TABLE task_events (LIKE task_events_unpartitioned INCLUDING DEFAULTS) \
         PARTITION BY RANGE (task_id)"
            .to_owned(),
        "ALTER TABLE task_events ADD CONSTRAINT task_events_pkey PRIMARY KEY (task_id, seq)"
            .to_owned(),
        "CREATE TABLE task_events_default PARTITION OF task_events DEFAULT".to_owned(),
    ]);
    steps
}
