//! Queries over the Wharf database, for the recorder (writes) and the gateway (reads).
//!
//! It owns the conversions between the SeaORM entities and the contract types, and the one
//! projection rule: [`Store::record`] applies a batch of events idempotently and in any order,
//! mirroring `wharf_contract::TaskState::merge` in SQL so that two recorders, a restarted
//! recorder, or a replay all leave the same rows. Postgres and SQLite are both supported through
//! the same code. Workers never use this crate.

use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use sea_orm_migration::MigratorTrait;
use serde_json::Value;
use uuid::Uuid;
use wharf_contract::{TaskEvent, TaskStatus, TaskView};
use wharf_entity::{task, task_event};

mod audit;
mod config;
mod days;
mod deliveries;
mod history;
mod keys;
mod record;
mod resources;
mod task_row;
pub use audit::AuditFilter;
pub use deliveries::{AttemptOutcome, Due, NewDelivery};
pub use history::{HistoryPolicy, Maintenance};
pub use keys::StoredKey;
pub use resources::AgentWrite;

/// `v` as the database keeps it: every NUL character, which neither Postgres's text nor its
/// jsonb can hold, as U+FFFD (the task itself, on NATS, keeps them). For comparing what a
/// request sends with what was stored from an earlier one; so a NUL and a U+FFFD in the same
/// place compare equal, as the database cannot tell them apart. For JSON values (a map of
/// them, a `Value`): it panics on a type that does not serialise to JSON and read back.
pub fn stored_form<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    serde_json::from_str(record::jsonb(v).0.get()).expect("jsonb writes what it read")
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("a stored row does not decode: {0}")]
    Corrupt(String),
    /// The row changed between reading and writing it (another writer won): write again.
    #[error("{0}")]
    Conflict(String),
}

impl Error {
    /// True when the database refused this data itself (a value it cannot store, a constraint),
    /// so writing it again will fail again; false for a database that is down, full, read-only,
    /// busy or timing out, where waiting helps.
    pub fn is_refusal(&self) -> bool {
        let Error::Db(
            sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
            | sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)),
        ) = self
        else {
            return false;
        };
        let sea_orm::sqlx::Error::Database(db) = e.as_ref() else {
            return false;
        };
        let Some(code) = db.code() else { return false };
        if code.len() == 5 {
            // A Postgres SQLSTATE: class 22 data exception, 23 integrity constraint violation.
            return code.starts_with("22") || code.starts_with("23");
        }
        // A SQLite (extended) result code: TOOBIG 18, CONSTRAINT 19, MISMATCH 20.
        code.parse::<i64>()
            .is_ok_and(|n| matches!(n & 0xff, 18..=20))
    }
}

/// How far ahead of the reading gateway's clock a task's id may be and still head the first
/// page of a list: the skew allowed between the clocks of the gateways that make ids (a
/// UUIDv7 is its submission time) and the one that reads. An id further ahead is listed once
/// the reader's clock is within this of it, and is read by id at any time.
pub const CLOCK_SKEW_MS: i64 = 3_600_000;

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

/// Filters of `GET /api/v1/tasks`.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub queue: Option<String>,
    pub session_id: Option<String>,
    pub priority: Option<wharf_contract::Priority>,
    /// Only this tenant's tasks (every tenant's when `None`).
    pub tenant: Option<String>,
    /// Only tasks submitted with this agent.
    pub agent: Option<String>,
    /// Only tasks of this tool (`<server>.<tool>`).
    pub tool: Option<String>,
    /// Only tasks whose id is at least this one: submitted at or after its time ([`id_at`]).
    pub after: Option<Uuid>,
    /// Only queued and running tasks.
    pub unfinished: bool,
    /// Only tasks older than this id (ids sort by submission time).
    pub before: Option<Uuid>,
    pub limit: u64,
    /// Leave each task's `arguments`, `metadata` and `result` out (a list page's summary):
    /// they are most of a row's bytes, and a page reads fifty rows.
    pub summary: bool,
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://…`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(if url.starts_with("sqlite:") { 4 } else { 16 })
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        if db.get_database_backend() == DbBackend::Sqlite {
            db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
            db.execute_unprepared("PRAGMA synchronous=NORMAL").await?;
        }
        wharf_migration::Migrator::up(&db, None).await?;
        Ok(Store { db })
    }

    /// A store over a connection as it is, migrations not applied (tools and tests that
    /// manage the schema themselves).
    pub fn from_connection(db: DatabaseConnection) -> Store {
        Store { db }
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// True on Postgres, whose history is partitioned by day (SQLite's is not).
    fn partitioned(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// One task, if the recorder has seen any of its events.
    pub async fn task(&self, id: Uuid) -> Result<Option<TaskView>, Error> {
        let mut q = task::Entity::find_by_id(id);
        if self.partitioned() {
            q = q.filter(days::same_day((task::Entity, task::Column::Id), id));
        }
        q.one(&self.db).await?.map(view_of).transpose()
    }

    /// Tasks newest first.
    ///
    /// On Postgres the history is partitioned by day of id (see `history.rs`), and a query
    /// over the whole table plans every partition, milliseconds with a few dozen of them. So
    /// the page is read newest days first, in windows of ids that double in width (today and
    /// yesterday, then the 4 days before, 8, ... and past 127 days all the rest), each window's
    /// bounds written into its statement so that its plan holds only its own partitions
    /// (`days.rs`); most pages are filled by the first.
    ///
    /// A first page starts at the end of today, or of tomorrow in the last hour of today
    /// ([`CLOCK_SKEW_MS`]): the days made ahead and the default partition would each cost
    /// the planner as much as today's, at every page, for ids that a sane clock never makes.
    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskView>, Error> {
        if !self.partitioned() {
            return self.tasks_between(filter, None, None, filter.limit).await;
        }
        use wharf_migration::partitions::{DAY_MS, day_start, ms_of};
        let now = chrono::Utc::now().timestamp_millis();
        let anchor = filter
            .before
            .and_then(|u| ms_of(&u.to_string()))
            .unwrap_or(now);
        let first = day_start(anchor);
        let oldest_window = first - 127 * DAY_MS;
        // The first window is the cursor's day (the cursor itself is a parameter), or today
        // up to the skew; the others end at a day's start.
        let mut upper = match filter.before {
            Some(_) => days::next_day_bound(first),
            None => days::next_day_bound(day_start(now + CLOCK_SKEW_MS)),
        };
        // Two days wide: a filter that today matches rarely (`status=failed`) is then still
        // answered by one statement from yesterday's tasks, for a quarter of a millisecond
        // more planning on the pages today fills alone.
        let (mut lower, mut width) = (first - DAY_MS, 2 * DAY_MS);
        let mut page = Vec::new();
        loop {
            // The window holding the filter's oldest time is the last one worth reading.
            let last =
                lower <= oldest_window || filter.after.is_some_and(|a| days::day_bound(lower) <= a);
            let from = (!last).then(|| days::day_bound(lower));
            let left = filter.limit.saturating_sub(page.len() as u64);
            page.extend(self.tasks_between(filter, from, upper, left).await?);
            if last || page.len() as u64 >= filter.limit {
                return Ok(page);
            }
            upper = from;
            width *= 2;
            lower -= width;
        }
    }

    /// Tasks newest first, before the filter's cursor, whose ids are at least `from` and
    /// below `to` (day bounds, written into the statement).
    async fn tasks_between(
        &self,
        filter: &TaskFilter,
        from: Option<Uuid>,
        to: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<TaskView>, Error> {
        let mut q = task::Entity::find();
        if let Some(status) = filter.status {
            q = q.filter(task::Column::Status.eq(status.as_str()));
        }
        if let Some(queue) = &filter.queue {
            q = q.filter(task::Column::Queue.eq(queue.as_str()));
        }
        if let Some(session) = &filter.session_id {
            q = q.filter(task::Column::SessionId.eq(session.as_str()));
        }
        if let Some(priority) = filter.priority {
            q = q.filter(task::Column::Priority.eq(priority.as_str()));
        }
        if let Some(tenant) = &filter.tenant {
            q = q.filter(task::Column::Tenant.eq(tenant.as_str()));
        }
        if let Some(agent) = &filter.agent {
            q = q.filter(task::Column::Agent.eq(agent.as_str()));
        }
        if let Some(tool) = &filter.tool {
            q = q.filter(task::Column::Tool.eq(tool.as_str()));
        }
        if let Some(after) = filter.after {
            q = q.filter(task::Column::Id.gte(after));
        }
        if filter.unfinished {
            q = q.filter(task::Column::StatusRank.lt(2));
        }
        if let Some(before) = filter.before {
            q = q.filter(task::Column::Id.lt(before));
        }
        let id = (task::Entity, task::Column::Id);
        if let Some(from) = from {
            q = q.filter(days::at_least(id, from));
        }
        if let Some(to) = to {
            q = q.filter(days::below(id, to));
        }
        if filter.summary {
            q = summary_columns(q, self.db.get_database_backend());
        }
        q.order_by_desc(task::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(view_of)
            .collect()
    }

    /// A task's events as recorded, in order; a start reported with a later event is a
    /// `started` event of its own, at that event's sequence ([`TaskEvent::unfold`]).
    pub async fn events(&self, id: Uuid) -> Result<Vec<(u64, TaskEvent)>, Error> {
        let mut q = task_event::Entity::find().filter(task_event::Column::TaskId.eq(id));
        if self.partitioned() {
            let column = (task_event::Entity, task_event::Column::TaskId);
            q = q.filter(days::same_day(column, id));
        }
        q.order_by_asc(task_event::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                let event = serde_json::from_value(row.body)
                    .map_err(|e| Error::Corrupt(format!("event {}: {e}", row.seq)))?;
                Ok((row.seq as u64, event))
            })
            .collect::<Result<Vec<_>, Error>>()
            .map(TaskEvent::unfold_all)
    }

    /// How many tasks of each queue ended at or after `since`: in any terminal state, and
    /// `failed`.
    pub async fn finished_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<HashMap<String, Finished>, Error> {
        let rows: Vec<(String, String, i64)> = task::Entity::find()
            .select_only()
            .column(task::Column::Queue)
            .column(task::Column::Status)
            .column_as(task::Column::Id.count(), "n")
            .filter(task::Column::FinishedAt.gte(since))
            .group_by(task::Column::Queue)
            .group_by(task::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut finished: HashMap<String, Finished> = HashMap::new();
        for (queue, status, n) in rows {
            let f = finished.entry(queue).or_default();
            f.total += n as u64;
            if status == "failed" {
                f.failed += n as u64;
            }
        }
        Ok(finished)
    }

    /// Counts of recorded tasks by status (tests and operators use it to check totals).
    pub async fn count_by_status(&self) -> Result<HashMap<String, u64>, Error> {
        let rows: Vec<(String, i64)> = task::Entity::find()
            .select_only()
            .column(task::Column::Status)
            .column_as(task::Column::Id.count(), "n")
            .group_by(task::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|(s, n)| (s, n as u64)).collect())
    }
}

/// The first task id of millisecond `time`: ids sort by submission time (UUIDv7), so the tasks
/// submitted at or after `time` are those whose id is at least this one.
pub fn id_at(time: chrono::DateTime<chrono::Utc>) -> Uuid {
    days::first_id_at(time.timestamp_millis())
}

/// Tasks of one queue that ended in a window ([`Store::finished_since`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finished {
    /// In any terminal state.
    pub total: u64,
    /// Of those, `failed`.
    pub failed: u64,
}

/// Every column of `tasks` but the payloads, which read as empty (`{}`, or no result), so a
/// summary decodes as a whole row does and [`view_of`] leaves them out.
fn summary_columns(q: Select<task::Entity>, backend: DbBackend) -> Select<task::Entity> {
    use sea_orm::{IdenStatic, Iterable, sea_query::Expr};
    let (empty, none) = match backend {
        DbBackend::Postgres => ("'{}'::jsonb", "NULL::jsonb"),
        _ => ("'{}'", "NULL"),
    };
    let mut q = q.select_only();
    for column in task::Column::iter() {
        q = match column {
            task::Column::Arguments | task::Column::Metadata => {
                q.expr_as(Expr::cust(empty), column.as_str())
            }
            task::Column::Result => q.expr_as(Expr::cust(none), column.as_str()),
            _ => q.column(column),
        };
    }
    q
}

fn view_of(m: task::Model) -> Result<TaskView, Error> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        Error::Corrupt(format!("task {}: {what}: {e}", m.id))
    };
    let status = m
        .status
        .parse::<TaskStatus>()
        .map_err(|e| corrupt("status", &e))?;
    let object = |v: &Value| v.as_object().cloned().unwrap_or_default();
    Ok(TaskView {
        id: m.id,
        status,
        tool: m.tool.clone(),
        queue: m.queue.clone(),
        arguments: object(&m.arguments),
        attempts: m.attempts.max(0) as u32,
        max_attempts: m.max_attempts.max(0) as u32,
        timeout_secs: m.timeout_secs.map(|t| t.max(0) as u64),
        idempotency_key: m.idempotency_key.clone(),
        session_id: m.session_id.clone(),
        metadata: object(&m.metadata),
        progress: m
            .progress
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| corrupt("progress", &e))?,
        result: m.result.clone(),
        error: m
            .error
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| corrupt("error", &e))?,
        created_at: m.created_at,
        started_at: m.started_at,
        finished_at: m.finished_at,
        cancel_requested_at: m.cancel_requested_at,
        updated_at: m.updated_at,
        run_at: m.run_at,
        priority: m
            .priority
            .parse()
            .map_err(|e: String| corrupt("priority", &e))?,
        tenant: m.tenant.clone(),
        agent: m.agent.clone(),
        trace_id: m.trace_id.clone(),
    })
}
