//! Queries over the Wharf database, for the recorder (writes) and the gateway (reads).
//!
//! It owns the conversions between the SeaORM entities and the contract types, and the one
//! projection rule: [`Store::record`] applies a batch of events idempotently and in any order,
//! mirroring `wharf_contract::TaskState::merge` in SQL so that two recorders, a restarted
//! recorder, or a replay all leave the same rows. Postgres and SQLite are both supported through
//! the same code. Workers never use this crate.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use serde_json::Value;
use uuid::Uuid;
use wharf_contract::TaskState;
use wharf_contract::{TaskEvent, TaskStatus, TaskView};
use wharf_entity::{task, task_event};

mod audit;
mod config;
mod keys;
mod resources;
pub use audit::AuditFilter;
pub use keys::StoredKey;
pub use resources::AgentWrite;

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
    /// Only queued and running tasks.
    pub unfinished: bool,
    /// Only tasks older than this id (ids sort by submission time).
    pub before: Option<Uuid>,
    pub limit: u64,
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

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// Applies a batch of events (each with its events-stream sequence) in one transaction.
    /// Idempotent: events already applied change nothing.
    pub async fn record(&self, events: &[(u64, TaskEvent)]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let mut states: HashMap<Uuid, TaskState> = HashMap::new();
        for (seq, event) in events {
            states
                .entry(event.task_id)
                .or_insert_with(|| TaskState::empty(event.task_id))
                .apply(*seq, event);
        }
        let mut states: Vec<TaskState> = states.into_values().collect();
        // A stable order keeps concurrent recorders from deadlocking on each other's rows.
        states.sort_by_key(|s| s.view.id);
        if self.db.get_database_backend() == DbBackend::Postgres {
            return self.record_postgres(events, &states).await;
        }
        let txn = self.db.begin().await?;
        for chunk in events.chunks(1000) {
            let rows = chunk.iter().map(|(seq, e)| task_event::ActiveModel {
                seq: sea_orm::Set(*seq as i64),
                task_id: sea_orm::Set(e.task_id),
                kind: sea_orm::Set(e.kind_name().to_owned()),
                attempt: sea_orm::Set(e.attempt as i32),
                at: sea_orm::Set(e.at),
                body: sea_orm::Set(json(e)),
            });
            task_event::Entity::insert_many(rows)
                .on_conflict_do_nothing_on([task_event::Column::Seq])
                .exec(&txn)
                .await?;
        }
        for chunk in states.chunks(400) {
            let mut insert = Query::insert();
            insert.into_table(task::Entity).columns(COLUMNS);
            for s in chunk {
                insert.values_panic(row_values(s));
            }
            insert.on_conflict(merge_on_conflict());
            txn.execute(&insert).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// [`Store::record`] on Postgres: each table gets one statement whose rows arrive as arrays
    /// (`unnest`), so the statement text never changes and is parsed and planned once per
    /// connection. Multi-row VALUES lists with thousands of parameters made Postgres spend most
    /// of its time parsing, planning and allocating.
    async fn record_postgres(
        &self,
        events: &[(u64, TaskEvent)],
        states: &[TaskState],
    ) -> Result<(), Error> {
        use sea_orm::sqlx::types::Json;
        let n = events.len();
        let (mut seq, mut task_id, mut kind, mut attempt, mut at, mut body) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (s, e) in events {
            seq.push(*s as i64);
            task_id.push(e.task_id);
            kind.push(e.kind_name());
            attempt.push(e.attempt as i32);
            at.push(e.at);
            body.push(Json(json(e)));
        }
        let pool = self.db.get_postgres_connection_pool();
        let mut tx = pool.begin().await.map_err(sqlx_error)?;
        sea_orm::sqlx::query(
            "INSERT INTO task_events (seq, task_id, kind, attempt, at, body) \
             SELECT * FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::int4[], \
             $5::timestamptz[], $6::jsonb[]) ON CONFLICT (seq) DO NOTHING",
        )
        .bind(seq)
        .bind(task_id)
        .bind(kind)
        .bind(attempt)
        .bind(at)
        .bind(body)
        .execute(&mut *tx)
        .await
        .map_err(sqlx_error)?;

        let mut c = TaskColumns::default();
        for s in states {
            c.push(s);
        }
        sea_orm::sqlx::query(upsert_tasks_sql())
            .bind(c.id)
            .bind(c.status)
            .bind(c.status_rank)
            .bind(c.tool)
            .bind(c.queue)
            .bind(c.arguments)
            .bind(c.metadata)
            .bind(c.attempts)
            .bind(c.max_attempts)
            .bind(c.timeout_secs)
            .bind(c.idempotency_key)
            .bind(c.session_id)
            .bind(c.progress)
            .bind(c.progress_seq)
            .bind(c.result)
            .bind(c.error)
            .bind(c.terminal_seq)
            .bind(c.created_at)
            .bind(c.started_at)
            .bind(c.finished_at)
            .bind(c.cancel_requested_at)
            .bind(c.updated_at)
            .bind(c.last_seq)
            .bind(c.run_at)
            .bind(c.priority)
            .bind(c.tenant)
            .bind(c.agent)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error)?;
        tx.commit().await.map_err(sqlx_error)?;
        Ok(())
    }

    /// One task, if the recorder has seen any of its events.
    pub async fn task(&self, id: Uuid) -> Result<Option<TaskView>, Error> {
        task::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(view_of)
            .transpose()
    }

    /// Tasks newest first.
    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskView>, Error> {
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
        if filter.unfinished {
            q = q.filter(task::Column::StatusRank.lt(2));
        }
        if let Some(before) = filter.before {
            q = q.filter(task::Column::Id.lt(before));
        }
        q.order_by_desc(task::Column::Id)
            .limit(filter.limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(view_of)
            .collect()
    }

    /// A task's events as recorded, in order.
    pub async fn events(&self, id: Uuid) -> Result<Vec<(u64, TaskEvent)>, Error> {
        task_event::Entity::find()
            .filter(task_event::Column::TaskId.eq(id))
            .order_by_asc(task_event::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                let event = serde_json::from_value(row.body)
                    .map_err(|e| Error::Corrupt(format!("event {}: {e}", row.seq)))?;
                Ok((row.seq as u64, event))
            })
            .collect()
    }

    /// How many tasks of each queue ended (any terminal state) at or after `since`.
    pub async fn finished_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<HashMap<String, u64>, Error> {
        let rows: Vec<(String, i64)> = task::Entity::find()
            .select_only()
            .column(task::Column::Queue)
            .column_as(task::Column::Id.count(), "n")
            .filter(task::Column::FinishedAt.gte(since))
            .group_by(task::Column::Queue)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|(q, n)| (q, n as u64)).collect())
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

const COLUMNS: [task::Column; 27] = [
    task::Column::Id,
    task::Column::Status,
    task::Column::StatusRank,
    task::Column::Tool,
    task::Column::Queue,
    task::Column::Arguments,
    task::Column::Metadata,
    task::Column::Attempts,
    task::Column::MaxAttempts,
    task::Column::TimeoutSecs,
    task::Column::IdempotencyKey,
    task::Column::SessionId,
    task::Column::Progress,
    task::Column::ProgressSeq,
    task::Column::Result,
    task::Column::Error,
    task::Column::TerminalSeq,
    task::Column::CreatedAt,
    task::Column::StartedAt,
    task::Column::FinishedAt,
    task::Column::CancelRequestedAt,
    task::Column::UpdatedAt,
    task::Column::LastSeq,
    task::Column::RunAt,
    task::Column::Priority,
    task::Column::Tenant,
    task::Column::Agent,
];

/// A driver error as the [`sea_orm::DbErr`] the rest of the store reports, so
/// [`Error::is_refusal`] reads it the same way.
fn sqlx_error(e: sea_orm::sqlx::Error) -> Error {
    Error::Db(sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(
        std::sync::Arc::new(e),
    )))
}

/// The task rows of a batch as one array per column, in [`COLUMNS`] order.
#[derive(Default)]
struct TaskColumns {
    id: Vec<Uuid>,
    status: Vec<&'static str>,
    status_rank: Vec<i16>,
    tool: Vec<String>,
    queue: Vec<String>,
    arguments: Vec<sea_orm::sqlx::types::Json<Value>>,
    metadata: Vec<sea_orm::sqlx::types::Json<Value>>,
    attempts: Vec<i32>,
    max_attempts: Vec<i32>,
    timeout_secs: Vec<Option<i64>>,
    idempotency_key: Vec<Option<String>>,
    session_id: Vec<Option<String>>,
    progress: Vec<Option<sea_orm::sqlx::types::Json<Value>>>,
    progress_seq: Vec<i64>,
    result: Vec<Option<sea_orm::sqlx::types::Json<Value>>>,
    error: Vec<Option<sea_orm::sqlx::types::Json<Value>>>,
    terminal_seq: Vec<i64>,
    created_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    started_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    finished_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    cancel_requested_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    updated_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    last_seq: Vec<i64>,
    run_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    priority: Vec<&'static str>,
    tenant: Vec<String>,
    agent: Vec<Option<String>>,
}

impl TaskColumns {
    /// The same values as [`row_values`], column by column.
    fn push(&mut self, s: &TaskState) {
        use sea_orm::sqlx::types::Json;
        let v = &s.view;
        self.id.push(v.id);
        self.status.push(v.status.as_str());
        self.status_rank.push(v.status.rank());
        self.tool.push(text(&v.tool));
        self.queue.push(text(&v.queue));
        self.arguments.push(Json(json(&v.arguments)));
        self.metadata.push(Json(json(&v.metadata)));
        self.attempts.push(v.attempts as i32);
        self.max_attempts.push(v.max_attempts as i32);
        self.timeout_secs.push(v.timeout_secs.map(|t| t as i64));
        self.idempotency_key
            .push(v.idempotency_key.as_deref().map(text));
        self.session_id.push(v.session_id.as_deref().map(text));
        self.progress
            .push(v.progress.as_ref().map(|p| Json(json(p))));
        self.progress_seq.push(s.progress_seq as i64);
        self.result.push(v.result.as_ref().map(|r| Json(json(r))));
        self.error.push(v.error.as_ref().map(|e| Json(json(e))));
        self.terminal_seq.push(s.terminal_seq as i64);
        self.created_at.push(v.created_at);
        self.started_at.push(v.started_at);
        self.finished_at.push(v.finished_at);
        self.cancel_requested_at.push(v.cancel_requested_at);
        self.updated_at.push(v.updated_at);
        self.last_seq.push(s.last_seq as i64);
        self.run_at.push(v.run_at);
        self.priority.push(v.priority.as_str());
        self.tenant.push(text(&v.tenant));
        self.agent.push(v.agent.as_deref().map(text));
    }
}

/// The Postgres task upsert over arrays: `INSERT ... SELECT * FROM unnest(...)` followed by the
/// very ON CONFLICT clause the portable path uses (rendered from [`merge_on_conflict`] once), so
/// both paths merge identically.
fn upsert_tasks_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let mut one = Query::insert();
        one.into_table(task::Entity)
            .columns(COLUMNS)
            .values_panic(row_values(&TaskState::empty(Uuid::nil())))
            .on_conflict(merge_on_conflict());
        let rendered = one.to_string(sea_orm::sea_query::PostgresQueryBuilder);
        let on_conflict = rendered
            .find(" ON CONFLICT ")
            .map(|i| &rendered[i..])
            .expect("the upsert has an ON CONFLICT clause");
        let types = [
            "uuid",
            "text",
            "int2",
            "text",
            "text",
            "jsonb",
            "jsonb",
            "int4",
            "int4",
            "int8",
            "text",
            "text",
            "jsonb",
            "int8",
            "jsonb",
            "jsonb",
            "int8",
            "timestamptz",
            "timestamptz",
            "timestamptz",
            "timestamptz",
            "timestamptz",
            "int8",
            "timestamptz",
            "text",
            "text",
            "text",
        ];
        let names: Vec<String> = COLUMNS
            .iter()
            .map(|c| format!("\"{}\"", sea_orm::IdenStatic::as_str(c)))
            .collect();
        let arrays: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("${}::{t}[]", i + 1))
            .collect();
        format!(
            "INSERT INTO \"tasks\" ({}) SELECT * FROM unnest({}){on_conflict}",
            names.join(", "),
            arrays.join(", ")
        )
    })
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    let mut value = serde_json::to_value(v).expect("contract types serialise");
    strip_nul(&mut value);
    value
}

/// Postgres stores neither NUL characters in text nor `\u0000` in jsonb. Tasks may carry them
/// (the task itself, on NATS, is untouched); the database copy gets U+FFFD instead.
fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => {
            let keys_with_nul: Vec<String> =
                map.keys().filter(|k| k.contains('\0')).cloned().collect();
            for k in keys_with_nul {
                if let Some(v) = map.remove(&k) {
                    map.insert(k.replace('\0', "\u{FFFD}"), v);
                }
            }
            map.values_mut().for_each(strip_nul);
        }
        _ => {}
    }
}

fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn row_values(s: &TaskState) -> Vec<sea_orm::sea_query::SimpleExpr> {
    let v = &s.view;
    let values: Vec<sea_orm::Value> = vec![
        v.id.into(),
        v.status.as_str().into(),
        v.status.rank().into(),
        text(&v.tool).into(),
        text(&v.queue).into(),
        json(&v.arguments).into(),
        json(&v.metadata).into(),
        (v.attempts as i32).into(),
        (v.max_attempts as i32).into(),
        v.timeout_secs.map(|t| t as i64).into(),
        v.idempotency_key.as_deref().map(text).into(),
        v.session_id.as_deref().map(text).into(),
        v.progress.as_ref().map(json).into(),
        (s.progress_seq as i64).into(),
        v.result.as_ref().map(json).into(),
        v.error.as_ref().map(json).into(),
        (s.terminal_seq as i64).into(),
        v.created_at.into(),
        v.started_at.into(),
        v.finished_at.into(),
        v.cancel_requested_at.into(),
        v.updated_at.into(),
        (s.last_seq as i64).into(),
        v.run_at.into(),
        v.priority.as_str().into(),
        text(&v.tenant).into(),
        v.agent.as_deref().map(text).into(),
    ];
    values.into_iter().map(Into::into).collect()
}

/// The SQL form of `TaskState::merge`: `tasks` is the stored row, `excluded` the batch's state.
fn merge_on_conflict() -> OnConflict {
    let t = |c: &str| format!("\"tasks\".\"{c}\"");
    let e = |c: &str| format!("\"excluded\".\"{c}\"");
    let first_nonempty =
        |c: &str| format!("CASE WHEN {} = '' THEN {} ELSE {} END", t(c), e(c), t(c));
    let spec = |c: &str| {
        format!(
            "CASE WHEN {} IS NULL THEN {} ELSE {} END",
            t("created_at"),
            e(c),
            t(c)
        )
    };
    let max = |c: &str| {
        format!(
            "CASE WHEN {} > {} THEN {} ELSE {} END",
            e(c),
            t(c),
            e(c),
            t(c)
        )
    };
    let min_null = |c: &str| {
        format!(
            "CASE WHEN {t} IS NULL THEN {e} WHEN {e} IS NULL THEN {t} WHEN {e} < {t} THEN {e} ELSE {t} END",
            t = t(c),
            e = e(c)
        )
    };
    let max_null = |c: &str| {
        format!(
            "CASE WHEN {t} IS NULL THEN {e} WHEN {e} IS NULL THEN {t} WHEN {e} > {t} THEN {e} ELSE {t} END",
            t = t(c),
            e = e(c)
        )
    };
    let newer_progress = format!("{} > {}", e("progress_seq"), t("progress_seq"));
    let terminal_wins = format!(
        "({e} <> 0 AND ({t} = 0 OR {e} < {t}))",
        e = e("terminal_seq"),
        t = t("terminal_seq")
    );
    let rank_up = format!(
        "({} = 0 AND {} > {})",
        t("terminal_seq"),
        e("status_rank"),
        t("status_rank")
    );
    let by_terminal =
        |c: &str| format!("CASE WHEN {terminal_wins} THEN {} ELSE {} END", e(c), t(c));
    let by_status = |c: &str| {
        format!(
            "CASE WHEN {terminal_wins} OR {rank_up} THEN {} ELSE {} END",
            e(c),
            t(c)
        )
    };
    let set: Vec<(task::Column, String)> = vec![
        (task::Column::Tool, first_nonempty("tool")),
        (task::Column::Queue, first_nonempty("queue")),
        (task::Column::Arguments, spec("arguments")),
        (task::Column::Metadata, spec("metadata")),
        (task::Column::MaxAttempts, spec("max_attempts")),
        (task::Column::TimeoutSecs, spec("timeout_secs")),
        (task::Column::IdempotencyKey, spec("idempotency_key")),
        (task::Column::SessionId, spec("session_id")),
        (task::Column::CreatedAt, spec("created_at")),
        (task::Column::RunAt, spec("run_at")),
        (task::Column::Priority, spec("priority")),
        (task::Column::Tenant, spec("tenant")),
        (task::Column::Agent, spec("agent")),
        (task::Column::Status, by_status("status")),
        (task::Column::StatusRank, by_status("status_rank")),
        (task::Column::Result, by_terminal("result")),
        (task::Column::Error, by_terminal("error")),
        (task::Column::FinishedAt, by_terminal("finished_at")),
        (task::Column::TerminalSeq, by_terminal("terminal_seq")),
        (task::Column::Attempts, max("attempts")),
        (
            task::Column::Progress,
            format!(
                "CASE WHEN {newer_progress} THEN {} ELSE {} END",
                e("progress"),
                t("progress")
            ),
        ),
        (task::Column::ProgressSeq, max("progress_seq")),
        (task::Column::StartedAt, min_null("started_at")),
        (
            task::Column::CancelRequestedAt,
            min_null("cancel_requested_at"),
        ),
        (task::Column::UpdatedAt, max_null("updated_at")),
        (task::Column::LastSeq, max("last_seq")),
    ];
    let mut on = OnConflict::column(task::Column::Id);
    for (col, sql) in set {
        on.value(col, Expr::cust(sql));
    }
    on.to_owned()
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
    })
}
