//! Queries over the Wharf database, for the recorder (writes) and the gateway (reads).
//!
//! It owns the conversions between the SeaORM entities and the contract types, and the one
//! projection rule: [`Store::record`] applies a batch of events idempotently and in any order,
//! mirroring `wharf_contract::task::TaskState::merge` in SQL so that two recorders, a restarted
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
use wharf_contract::task::TaskState;
use wharf_contract::{TaskEvent, TaskStatus, TaskView};
use wharf_entity::{task, task_event};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("a stored row does not decode: {0}")]
    Corrupt(String),
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
        let mut states: Vec<TaskState> = states.into_values().collect();
        // A stable order keeps concurrent recorders from deadlocking on each other's rows.
        states.sort_by_key(|s| s.view.id);
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

const COLUMNS: [task::Column; 23] = [
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
];

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
    })
}
