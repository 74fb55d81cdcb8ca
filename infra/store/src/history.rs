//! The history's upkeep ([`Store::maintain_history`], run by the recorder): partitions made
//! ahead of the tasks that will fill them, and finished tasks removed once they are older than
//! the retention.
//!
//! Retention is by task, as in Temporal: a task is removed, with its events, once it finished
//! more than `retention_days` ago; a task still queued, delayed or running is never removed,
//! however old. On Postgres (`wharf_migration::partitions` has the layout) a day's partitions
//! are dropped whole once the day is past the retention: the few tasks of that day that must
//! stay (unfinished, or finished within the retention) are moved to the default partition in
//! the same transaction, which the batch deletes below keep small. Elsewhere (SQLite, the
//! default partition, the partition of the history from before partitioning) expired tasks are
//! deleted in batches, each its own short transaction.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::ExprTrait;
use sea_orm::sqlx::{self, Row};
use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};
use uuid::Uuid;
use wharf_migration::partitions::{
    DAY_MS, DEFAULT_SUFFIX, TABLES, day_start, day_suffix, ms_of, uuid_at,
};

use crate::record::{finish, sqlx_error};
use crate::{Error, Store};

/// How long the history keeps finished tasks (`[history]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Days a finished task stays after it ended; 0 keeps every task forever.
    pub retention_days: u32,
    /// Days of partitions made ahead of today (Postgres).
    pub days_ahead: u32,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        HistoryPolicy {
            retention_days: 30,
            days_ahead: 3,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Partitions made (the `tasks` one of each day; its `task_events` twin goes with it).
    pub created: Vec<String>,
    /// Partitions dropped, named the same way.
    pub dropped: Vec<String>,
    /// Tasks of dropped partitions that had to stay, moved to the default partition.
    pub kept: u64,
    /// Tasks removed by batch deletes.
    pub deleted: u64,
    /// False when another process held the upkeep lock, so this pass did nothing.
    pub ran: bool,
}

/// Tasks per batch delete (and their events with them).
const DELETE_BATCH: i64 = 2000;
/// A session holding a lock: pid, state, its query, seconds in its transaction.
type LockHolder = (i32, Option<String>, Option<String>, Option<f64>);

/// How long a DDL statement waits for its lock before it gives up until the next pass: the
/// queries that arrive meanwhile queue behind it.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s'";
/// The prefix a detached day's tables get until they are dropped.
const DROPPING: &str = "wharf_dropping_";
/// The longest rest between two days' drops in one pass.
const MAX_REST: std::time::Duration = std::time::Duration::from_secs(5);
/// How fast the upkeep frees disk space, at most. A day's files freed at once (hundreds of
/// megabytes, at thousands of tasks a second hundreds of gigabytes) are a burst of work for
/// the file system and, with online discard, for the disk, which the tasks flowing meanwhile
/// feel; dropped a table or an index at a time, each followed by a rest in proportion to its
/// size, they are spread out (operations.md, "The retention and the disk").
const FREE_BYTES_PER_SEC: f64 = 128.0 * 1024.0 * 1024.0;
/// The longest rest after one table's or index's drop.
const MAX_FREE_REST: std::time::Duration = std::time::Duration::from_secs(60);
/// One upkeep at a time across recorders (`pg_try_advisory_xact_lock`).
const UPKEEP_LOCK: i64 = 0x7768_6172_6668_6973; // "wharfhis"

/// A partition of `tasks` and its range of ids, as milliseconds (`None`: unbounded or default).
#[derive(Debug, Clone)]
struct Partition {
    suffix: String,
    from: Option<i64>,
    to: Option<i64>,
    default: bool,
}

impl Store {
    /// One upkeep pass at time `now` (the recorder runs it at start and every hour).
    pub async fn maintain_history(
        &self,
        policy: &HistoryPolicy,
        now: DateTime<Utc>,
    ) -> Result<Maintenance, Error> {
        let cutoff = (policy.retention_days > 0)
            .then(|| now - chrono::Duration::days(i64::from(policy.retention_days)));
        if self.db.get_database_backend() != DbBackend::Postgres {
            let deleted = match cutoff {
                Some(cutoff) => self.delete_expired_portable(cutoff).await?,
                None => 0,
            };
            return Ok(Maintenance {
                deleted,
                ran: true,
                ..Maintenance::default()
            });
        }
        let mut done = Maintenance {
            ran: true,
            ..Maintenance::default()
        };
        let today = day_start(now.timestamp_millis());
        let partitions = self.partitions().await?;
        for day in 0..=i64::from(policy.days_ahead) {
            let from = today + day * DAY_MS;
            let taken = partitions.iter().any(|p| {
                !p.default
                    && p.from.is_none_or(|f| f < from + DAY_MS)
                    && p.to.is_none_or(|t| t > from)
            });
            if taken {
                continue;
            }
            match self.create_day(from).await? {
                Some(name) => done.created.push(name),
                None => return Ok(Maintenance { ran: false, ..done }),
            }
        }
        // With the retention off nothing is dropped, not even what a pass that died left
        // detached: the recorder's pass before it starts recording is quick that way.
        let Some(cutoff) = cutoff else {
            return Ok(done);
        };
        self.drop_detached().await?;
        let cutoff_ms = cutoff.timestamp_millis();
        let mut rest = std::time::Duration::ZERO;
        for p in self.partitions().await? {
            if !p.default && p.to.is_some_and(|t| t <= cutoff_ms) {
                if !done.dropped.is_empty() {
                    // A pass catching up on many days (a retention shortened, a recorder
                    // back after days away) rests between them as long as the last one's
                    // transaction took: half the cores' time is left to the tasks flowing
                    // meanwhile (the files' drop paces itself).
                    tokio::time::sleep(rest.min(MAX_REST)).await;
                }
                let step = std::time::Instant::now();
                let dropped = self.drop_day(&p.suffix, cutoff).await?;
                rest = step.elapsed();
                self.drop_detached().await?;
                match dropped {
                    Some(kept) => {
                        done.kept += kept;
                        done.dropped.push(format!("tasks_{}", p.suffix));
                    }
                    None => return Ok(Maintenance { ran: false, ..done }),
                }
                continue;
            }
            // A partition wider than a day (the default, the one from before partitioning)
            // that reaches back past the cutoff: its expired tasks go by batches.
            let wide = p.from.zip(p.to).is_none_or(|(f, t)| t - f > DAY_MS);
            if wide && p.from.is_none_or(|f| f < cutoff_ms) {
                done.deleted += self.delete_expired_postgres(&p.suffix, cutoff).await?;
            }
        }
        Ok(done)
    }

    /// The partitions of `tasks`, with their ranges read back from the catalog.
    async fn partitions(&self) -> Result<Vec<Partition>, Error> {
        let pool = self.db.get_postgres_connection_pool();
        let rows = sqlx::query(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'tasks'::regclass",
        )
        .fetch_all(pool)
        .await
        .map_err(sqlx_error)?;
        rows.iter()
            .map(|row| {
                let name: String = row.get(0);
                let bound: String = row.get(1);
                let suffix = name
                    .strip_prefix("tasks_")
                    .filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    .ok_or_else(|| Error::Corrupt(format!("partition {name} of tasks")))?
                    .to_owned();
                if bound == "DEFAULT" {
                    return Ok(Partition {
                        suffix,
                        from: None,
                        to: None,
                        default: true,
                    });
                }
                let (from, to) = parse_bound(&bound)
                    .ok_or_else(|| Error::Corrupt(format!("bound of {name}: {bound}")))?;
                Ok(Partition {
                    suffix,
                    from,
                    to,
                    default: false,
                })
            })
            .collect()
    }

    /// Makes the partitions of the day starting at `from` (ms), taking over the rows the
    /// default partitions hold for it. `None` when another process holds the upkeep lock.
    async fn create_day(&self, from: i64) -> Result<Option<String>, Error> {
        let suffix = day_suffix(from);
        let (lo, hi) = (uuid_at(from), uuid_at(from + DAY_MS));
        let Some(mut tx) = self.upkeep_tx().await? else {
            return Ok(None);
        };
        let steps = async {
            for (table, column) in TABLES {
                let part = format!("{table}_{suffix}");
                let default = format!("{table}_{DEFAULT_SUFFIX}");
                let range = format!("{column} >= '{lo}' AND {column} < '{hi}'");
                for sql in [
                    format!("CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS)"),
                    format!("INSERT INTO {part} SELECT * FROM {default} WHERE {range}"),
                    format!("DELETE FROM {default} WHERE {range}"),
                    format!(
                        "ALTER TABLE {table} ATTACH PARTITION {part} \
                         FOR VALUES FROM ('{lo}') TO ('{hi}')"
                    ),
                ] {
                    exec(&mut tx, &sql).await?;
                }
            }
            Ok(())
        }
        .await;
        finish(tx, steps).await?;
        Ok(Some(format!("tasks_{suffix}")))
    }

    /// Drops a partition of each table (a day's, or the one from before partitioning once it
    /// is past), first moving the tasks that must stay (not finished, or finished at or after
    /// `cutoff`) and their events through the parents to the default partitions, then renames
    /// them for [`Store::drop_detached`]. Returns how many stayed; `None` when another process
    /// holds the upkeep lock.
    async fn drop_day(&self, suffix: &str, cutoff: DateTime<Utc>) -> Result<Option<u64>, Error> {
        let Some(mut tx) = self.upkeep_tx().await? else {
            return Ok(None);
        };
        let (tasks, events) = (format!("tasks_{suffix}"), format!("task_events_{suffix}"));
        let stay = "status_rank < 2 OR finished_at IS NULL OR finished_at >= $1";
        let steps = async {
            // Detached first, so the rows put back through the parents go to the default;
            // events first, as the recorder locks them (see `TABLES`).
            for (parent, part) in [("task_events", &events), ("tasks", &tasks)] {
                let detach = format!("ALTER TABLE {parent} DETACH PARTITION {part}");
                if let Err(e) = exec(&mut tx, &detach).await {
                    return Err(self.explain_lock_wait(e, parent).await);
                }
            }
            let kept = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO tasks SELECT * FROM {tasks} WHERE {stay}"
            )))
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error)?
            .rows_affected();
            if kept > 0 {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO task_events SELECT e.* FROM {events} e \
                     WHERE e.task_id IN (SELECT id FROM {tasks} WHERE {stay})"
                )))
                .bind(cutoff)
                .execute(&mut *tx)
                .await
                .map_err(sqlx_error)?;
            }
            // Dropped after the commit, which then holds the parents' locks only for the
            // detach: unlinking a day's files takes long enough to stall every writer.
            for t in [&events, &tasks] {
                exec(&mut tx, &format!("ALTER TABLE {t} RENAME TO {DROPPING}{t}")).await?;
            }
            Ok(kept)
        }
        .await;
        let kept = finish(tx, steps).await?;
        Ok(Some(kept))
    }

    /// Drops the tables a drop step detached (`wharf_dropping_*`), left over too when a
    /// process died between the two steps. Tables an operator detached by hand keep their
    /// names and are left alone. Each table's indexes go first, one at a time, then the table;
    /// each drop is followed by a rest of its size at [`FREE_BYTES_PER_SEC`].
    async fn drop_detached(&self) -> Result<(), Error> {
        let pool = self.db.get_postgres_connection_pool();
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_class \
             WHERE relkind = 'r' AND relname LIKE 'wharf\\_dropping\\_%' AND NOT relispartition \
             AND relnamespace = current_schema()::regnamespace",
        )
        .fetch_all(pool)
        .await
        .map_err(sqlx_error)?;
        // Another recorder's pass may be dropping the same tables (the upkeep lock is held for
        // transactions, not for these paced drops): whatever is gone meanwhile is skipped.
        for table in names {
            // Those backing a constraint (the primary key) go with the table.
            let indexes: Vec<(String, i64)> = sqlx::query_as(
                "SELECT c.relname::text, coalesce(pg_relation_size(c.oid), 0) \
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE i.indrelid = to_regclass($1) \
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)",
            )
            .bind(&table)
            .fetch_all(pool)
            .await
            .map_err(sqlx_error)?;
            let size: i64 =
                sqlx::query_scalar("SELECT coalesce(pg_total_relation_size(to_regclass($1)), 0)")
                    .bind(&table)
                    .fetch_one(pool)
                    .await
                    .map_err(sqlx_error)?;
            let rest_after = size - indexes.iter().map(|(_, b)| b).sum::<i64>();
            let pieces = indexes
                .into_iter()
                .map(|(name, bytes)| (format!("DROP INDEX IF EXISTS {name}"), name, bytes))
                .chain([(
                    format!("DROP TABLE IF EXISTS {table}"),
                    table.clone(),
                    rest_after,
                )]);
            for (sql, name, bytes) in pieces {
                if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .map_err(sqlx_error)?;
                let bytes = u64::try_from(bytes).unwrap_or(0) as f64;
                let rest = std::time::Duration::from_secs_f64(bytes / FREE_BYTES_PER_SEC);
                tokio::time::sleep(rest.min(MAX_FREE_REST)).await;
            }
        }
        Ok(())
    }

    /// A transaction for one step of the upkeep, holding the upkeep lock and with a short
    /// lock timeout; `None` when another process holds the upkeep lock.
    async fn upkeep_tx(&self) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>, Error> {
        let pool = self.db.get_postgres_connection_pool();
        let mut tx = pool.begin().await.map_err(sqlx_error)?;
        let step = async {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(UPKEEP_LOCK)
                .fetch_one(&mut *tx)
                .await
                .map_err(sqlx_error)?;
            if locked {
                exec(&mut tx, LOCK_TIMEOUT).await?;
            }
            Ok(locked)
        }
        .await;
        match step {
            Ok(true) => Ok(Some(tx)),
            other => finish(tx, other.map(|_| ())).await.map(|()| None),
        }
    }

    /// An error of a statement that waited too long for its lock, with who held the lock.
    async fn explain_lock_wait(&self, e: Error, table: &str) -> Error {
        let pool = self.db.get_postgres_connection_pool();
        let holders: Vec<LockHolder> = sqlx::query_as(
            "SELECT a.pid, a.state, left(a.query, 200), \
                   extract(epoch FROM now() - a.xact_start)::float8 \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.granted AND l.relation = $1::regclass AND a.pid <> pg_backend_pid()",
        )
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        if holders.is_empty() {
            return e;
        }
        let held: Vec<String> = holders
            .into_iter()
            .map(|(pid, state, query, secs)| {
                format!(
                    "pid {pid} ({}, in a transaction for {:.1} s: {})",
                    state.unwrap_or_default(),
                    secs.unwrap_or(0.0),
                    query.unwrap_or_default()
                )
            })
            .collect();
        Error::Conflict(format!("{e}; {table} was held by {}", held.join("; ")))
    }

    /// Deletes, in batches, the tasks of one partition (and their events, in its twin) that
    /// finished before `cutoff`.
    async fn delete_expired_postgres(
        &self,
        suffix: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, Error> {
        let pool = self.db.get_postgres_connection_pool();
        let sql = format!(
            "WITH doomed AS (SELECT id FROM tasks_{suffix} \
                 WHERE finished_at < $1 AND status_rank >= 2 LIMIT {DELETE_BATCH}), \
             gone AS (DELETE FROM task_events_{suffix} WHERE task_id IN (SELECT id FROM doomed)) \
             DELETE FROM tasks_{suffix} WHERE id IN (SELECT id FROM doomed)"
        );
        let mut deleted = 0;
        loop {
            let n = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(cutoff)
                .execute(pool)
                .await
                .map_err(sqlx_error)?
                .rows_affected();
            deleted += n;
            if n < DELETE_BATCH as u64 {
                return Ok(deleted);
            }
        }
    }

    /// Deletes, in batches, the tasks that finished before `cutoff` and their events, on a
    /// database without partitions.
    async fn delete_expired_portable(&self, cutoff: DateTime<Utc>) -> Result<u64, Error> {
        use sea_orm::sea_query::{Expr, Query};
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
        use wharf_entity::{task, task_event};
        let mut deleted = 0;
        loop {
            let txn = self.db.begin().await?;
            let ids: Vec<Uuid> = task::Entity::find()
                .select_only()
                .column(task::Column::Id)
                .filter(task::Column::StatusRank.gte(2))
                .filter(task::Column::FinishedAt.lt(cutoff))
                .limit(DELETE_BATCH as u64)
                .into_tuple()
                .all(&txn)
                .await?;
            if !ids.is_empty() {
                let mut events = Query::delete();
                events
                    .from_table(task_event::Entity)
                    .and_where(Expr::col(task_event::Column::TaskId).is_in(ids.clone()));
                txn.execute(&events).await?;
                task::Entity::delete_many()
                    .filter(task::Column::Id.is_in(ids.clone()))
                    .exec(&txn)
                    .await?;
            }
            txn.commit().await?;
            deleted += ids.len() as u64;
            if (ids.len() as i64) < DELETE_BATCH {
                return Ok(deleted);
            }
        }
    }
}

/// Runs one statement. Its text is built from the partitions' names, which are ours
/// ([`Partition::suffix`] holds only ASCII letters, digits and underscores).
async fn exec(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, sql: &str) -> Result<(), Error> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut **tx)
        .await
        .map_err(sqlx_error)?;
    Ok(())
}

/// The range of a partition bound as Postgres prints it, `FOR VALUES FROM ('…') TO ('…')`,
/// either end possibly `MINVALUE` or `MAXVALUE` (then `None`).
fn parse_bound(bound: &str) -> Option<(Option<i64>, Option<i64>)> {
    let rest = bound.strip_prefix("FOR VALUES FROM (")?;
    let (from, rest) = rest.split_once(") TO (")?;
    let to = rest.strip_suffix(')')?;
    let value = |v: &str| -> Option<Option<i64>> {
        match v {
            "MINVALUE" | "MAXVALUE" => Some(None),
            quoted => ms_of(quoted.trim_matches('\'')).map(Some),
        }
    };
    Some((value(from)?, value(to)?))
}

#[cfg(test)]
mod tests {
    use super::parse_bound;

    #[test]
    fn bounds_are_read_back() {
        let ms = 1_796_342_400_000;
        let (a, b) = (
            wharf_migration::partitions::uuid_at(ms),
            wharf_migration::partitions::uuid_at(ms + 86_400_000),
        );
        assert_eq!(
            parse_bound(&format!("FOR VALUES FROM ('{a}') TO ('{b}')")),
            Some((Some(ms), Some(ms + 86_400_000)))
        );
        assert_eq!(
            parse_bound(&format!("FOR VALUES FROM (MINVALUE) TO ('{b}')")),
            Some((None, Some(ms + 86_400_000)))
        );
        assert_eq!(parse_bound("DEFAULT"), None);
    }
}
