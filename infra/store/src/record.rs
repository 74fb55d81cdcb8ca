//! The projection: [`Store::record`] applies a batch of events idempotently and in any order,
//! the task rows merged by an SQL upsert that mirrors `wharf_contract::TaskState::merge`
//! (one `unnest` statement per table on Postgres, multi-row inserts elsewhere).

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, TransactionTrait};
use serde_json::Value;
use uuid::Uuid;
use wharf_contract::{TaskEvent, TaskState};
use wharf_entity::{task, task_event};

use crate::{Error, Store};

impl Store {
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

pub(crate) fn text(s: &str) -> String {
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
