//! The `tasks` row, spelled once. [`ROW`] lists its columns in table order, each with what a
//! task's [`TaskState`] puts in it and how a stored row and a batch's state merge there (the
//! SQL form of `TaskState::merge`). The portable multi-row insert, the Postgres arrays and
//! their types, and the ON CONFLICT clause both paths share are all read off it.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict, Query, SimpleExpr};
use sea_orm::sqlx::types::Json;
use sea_orm::sqlx::{Postgres, postgres::PgArguments, query::Query as SqlxQuery};
use serde_json::value::RawValue;
use uuid::Uuid;
use wharf_contract::TaskState;
use wharf_entity::task::{self, Column as C};

use crate::record::{jsonb, text, value_of};

/// One column of the `tasks` row.
pub(crate) struct Column {
    pub(crate) column: task::Column,
    /// How the stored row and the batch's state merge; `None` for the key.
    merge: Option<Merge>,
    /// What the column holds for a state.
    cell: fn(&TaskState) -> Cell<'_>,
}

const fn col(column: task::Column, merge: Merge, cell: fn(&TaskState) -> Cell<'_>) -> Column {
    Column {
        column,
        merge: Some(merge),
        cell,
    }
}

/// The row, in table order.
pub(crate) static ROW: [Column; 28] = [
    Column {
        column: C::Id,
        merge: None,
        cell: |s| Cell::Uuid(s.view.id),
    },
    col(C::Status, Merge::ByStatus, |s| {
        Cell::Text(Some(s.view.status.as_str().into()))
    }),
    col(C::StatusRank, Merge::ByStatus, |s| {
        Cell::Small(s.view.status.rank())
    }),
    col(C::Tool, Merge::FirstNonEmpty, |s| {
        Cell::Text(Some(text(&s.view.tool)))
    }),
    col(C::Queue, Merge::FirstNonEmpty, |s| {
        Cell::Text(Some(text(&s.view.queue)))
    }),
    col(C::Arguments, Merge::Spec, |s| {
        Cell::Json(Some(jsonb(&s.view.arguments)))
    }),
    col(C::Metadata, Merge::Spec, |s| {
        Cell::Json(Some(jsonb(&s.view.metadata)))
    }),
    col(C::Attempts, Merge::Max, |s| {
        Cell::Int(s.view.attempts as i32)
    }),
    col(C::MaxAttempts, Merge::Spec, |s| {
        Cell::Int(s.view.max_attempts as i32)
    }),
    col(C::TimeoutSecs, Merge::Spec, |s| {
        Cell::Big(s.view.timeout_secs.map(|t| t as i64))
    }),
    col(C::IdempotencyKey, Merge::Spec, |s| {
        Cell::Text(s.view.idempotency_key.as_deref().map(text))
    }),
    col(C::SessionId, Merge::Spec, |s| {
        Cell::Text(s.view.session_id.as_deref().map(text))
    }),
    col(C::Progress, Merge::NewerProgress, |s| {
        Cell::Json(s.view.progress.as_ref().map(jsonb))
    }),
    col(C::ProgressSeq, Merge::Max, |s| {
        Cell::Big(Some(s.progress_seq as i64))
    }),
    col(C::Result, Merge::ByTerminal, |s| {
        Cell::Json(s.view.result.as_ref().map(jsonb))
    }),
    col(C::Error, Merge::ByTerminal, |s| {
        Cell::Json(s.view.error.as_ref().map(jsonb))
    }),
    col(C::TerminalSeq, Merge::ByTerminal, |s| {
        Cell::Big(Some(s.terminal_seq as i64))
    }),
    col(C::CreatedAt, Merge::Spec, |s| Cell::Time(s.view.created_at)),
    col(C::StartedAt, Merge::MinNull, |s| {
        Cell::Time(s.view.started_at)
    }),
    col(C::FinishedAt, Merge::ByTerminal, |s| {
        Cell::Time(s.view.finished_at)
    }),
    col(C::CancelRequestedAt, Merge::MinNull, |s| {
        Cell::Time(s.view.cancel_requested_at)
    }),
    col(C::UpdatedAt, Merge::MaxNull, |s| {
        Cell::Time(s.view.updated_at)
    }),
    col(C::LastSeq, Merge::Max, |s| {
        Cell::Big(Some(s.last_seq as i64))
    }),
    col(C::RunAt, Merge::Spec, |s| Cell::Time(s.view.run_at)),
    col(C::Priority, Merge::Spec, |s| {
        Cell::Text(Some(s.view.priority.as_str().into()))
    }),
    col(C::Tenant, Merge::Spec, |s| {
        Cell::Text(Some(text(&s.view.tenant)))
    }),
    col(C::Agent, Merge::Spec, |s| {
        Cell::Text(s.view.agent.as_deref().map(text))
    }),
    col(C::TraceId, Merge::Spec, |s| {
        Cell::Text(s.view.trace_id.as_deref().map(text))
    }),
];

/// One value of the row, typed as its column stores it.
enum Cell<'a> {
    Uuid(Uuid),
    Small(i16),
    Int(i32),
    Big(Option<i64>),
    /// Borrowed from the state, owned where a NUL had to be replaced.
    Text(Option<Cow<'a, str>>),
    /// As serialised for Postgres (the portable path reads it back into a value).
    Json(Option<Json<Box<RawValue>>>),
    Time(Option<DateTime<Utc>>),
}

/// How a column of the stored row (`tasks`) and of the batch's state (`excluded`) merge, as
/// `TaskState::merge` does.
#[derive(Clone, Copy)]
enum Merge {
    /// The stored value unless it is still empty (a `started` event names the tool and queue
    /// when the `submitted` event has not been recorded yet).
    FirstNonEmpty,
    /// The task as submitted: the stored value once the `submitted` event is in.
    Spec,
    /// Part of the status shown, which moves to the earliest terminal event or a higher rank.
    ByStatus,
    /// Part of the outcome: the terminal event with the lowest sequence wins.
    ByTerminal,
    /// The larger of the two.
    Max,
    /// The earlier of two times, either possibly absent.
    MinNull,
    /// The later of two times, either possibly absent.
    MaxNull,
    /// The progress whose sequence is higher.
    NewerProgress,
}

/// A state's row, for the portable multi-row insert.
pub(crate) fn values(s: &TaskState) -> Vec<SimpleExpr> {
    ROW.iter()
        .map(|c| {
            let value: sea_orm::Value = match (c.cell)(s) {
                Cell::Uuid(v) => v.into(),
                Cell::Small(v) => v.into(),
                Cell::Int(v) => v.into(),
                Cell::Big(v) => v.into(),
                Cell::Text(v) => v.map(Cow::into_owned).into(),
                Cell::Json(v) => v.as_ref().map(value_of).into(),
                Cell::Time(v) => v.into(),
            };
            value.into()
        })
        .collect()
}

/// One column of a batch's rows, as the array Postgres `unnest`s.
pub(crate) enum Array<'a> {
    Uuid(Vec<Uuid>),
    Small(Vec<i16>),
    Int(Vec<i32>),
    Big(Vec<Option<i64>>),
    Text(Vec<Option<Cow<'a, str>>>),
    Json(Vec<Option<Json<Box<RawValue>>>>),
    Time(Vec<Option<DateTime<Utc>>>),
}

impl<'a> Array<'a> {
    fn of(cells: impl Iterator<Item = Cell<'a>>) -> Array<'a> {
        let mut cells = cells.peekable();
        macro_rules! gather {
            ($variant:ident, $map:expr) => {
                Array::$variant(
                    cells
                        .map(|c| match c {
                            Cell::$variant(v) => $map(v),
                            _ => panic!("a column of ROW yields one kind of cell"),
                        })
                        .collect(),
                )
            };
        }
        match cells.peek() {
            Some(Cell::Uuid(_)) | None => gather!(Uuid, |v| v),
            Some(Cell::Small(_)) => gather!(Small, |v| v),
            Some(Cell::Int(_)) => gather!(Int, |v| v),
            Some(Cell::Big(_)) => gather!(Big, |v| v),
            Some(Cell::Text(_)) => gather!(Text, |v| v),
            Some(Cell::Json(_)) => gather!(Json, |v| v),
            Some(Cell::Time(_)) => gather!(Time, |v| v),
        }
    }

    /// The array's Postgres type.
    fn sql_type(&self) -> &'static str {
        match self {
            Array::Uuid(_) => "uuid[]",
            Array::Small(_) => "int2[]",
            Array::Int(_) => "int4[]",
            Array::Big(_) => "int8[]",
            Array::Text(_) => "text[]",
            Array::Json(_) => "jsonb[]",
            Array::Time(_) => "timestamptz[]",
        }
    }

    /// Binds the array as the query's next parameter.
    pub(crate) fn bind(
        self,
        query: SqlxQuery<'_, Postgres, PgArguments>,
    ) -> SqlxQuery<'_, Postgres, PgArguments> {
        match self {
            Array::Uuid(v) => query.bind(v),
            Array::Small(v) => query.bind(v),
            Array::Int(v) => query.bind(v),
            Array::Big(v) => query.bind(v),
            Array::Text(v) => query.bind(v),
            Array::Json(v) => query.bind(v),
            Array::Time(v) => query.bind(v),
        }
    }
}

/// The rows of `states` as one array per column, in [`ROW`] order: the parameters of
/// [`upsert_sql`].
pub(crate) fn arrays(states: &[TaskState]) -> Vec<Array<'_>> {
    ROW.iter()
        .map(|c| Array::of(states.iter().map(c.cell)))
        .collect()
}

/// The Postgres task upsert over arrays: `INSERT ... SELECT * FROM unnest(...)` followed by the
/// very ON CONFLICT clause the portable path uses (rendered from [`merge_on_conflict`] once), so
/// both paths merge identically.
pub(crate) fn upsert_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let empty = TaskState::empty(Uuid::nil());
        let mut one = Query::insert();
        one.into_table(task::Entity)
            .columns(ROW.iter().map(|c| c.column))
            .values_panic(values(&empty))
            .on_conflict(merge_on_conflict());
        let rendered = one.to_string(sea_orm::sea_query::PostgresQueryBuilder);
        let on_conflict = rendered
            .find(" ON CONFLICT ")
            .map(|i| &rendered[i..])
            .expect("the upsert has an ON CONFLICT clause");
        let names: Vec<String> = ROW
            .iter()
            .map(|c| format!("\"{}\"", sea_orm::IdenStatic::as_str(&c.column)))
            .collect();
        let params: Vec<String> = arrays(std::slice::from_ref(&empty))
            .iter()
            .enumerate()
            .map(|(i, a)| format!("${}::{}", i + 1, a.sql_type()))
            .collect();
        format!(
            "INSERT INTO \"tasks\" ({}) SELECT * FROM unnest({}){on_conflict}",
            names.join(", "),
            params.join(", ")
        )
    })
}

/// The SQL form of `TaskState::merge`: `tasks` is the stored row, `excluded` the batch's state.
pub(crate) fn merge_on_conflict() -> OnConflict {
    let mut on = OnConflict::column(C::Id);
    for c in &ROW {
        if let Some(merge) = c.merge {
            let sql = merge.sql(sea_orm::IdenStatic::as_str(&c.column));
            on.value(c.column, Expr::cust(sql));
        }
    }
    on.to_owned()
}

impl Merge {
    /// The expression that picks the merged value of column `c`.
    fn sql(self, c: &str) -> String {
        let t = |c: &str| format!("\"tasks\".\"{c}\"");
        let e = |c: &str| format!("\"excluded\".\"{c}\"");
        let pick = |when: String| format!("CASE WHEN {when} THEN {} ELSE {} END", e(c), t(c));
        let terminal_wins = format!(
            "({e} <> 0 AND ({t} = 0 OR {e} < {t}))",
            e = e("terminal_seq"),
            t = t("terminal_seq")
        );
        match self {
            Merge::FirstNonEmpty => pick(format!("{} = ''", t(c))),
            Merge::Spec => pick(format!("{} IS NULL", t("created_at"))),
            Merge::ByStatus => pick(format!(
                "{terminal_wins} OR ({} = 0 AND {} > {})",
                t("terminal_seq"),
                e("status_rank"),
                t("status_rank")
            )),
            Merge::ByTerminal => pick(terminal_wins),
            Merge::Max => pick(format!("{} > {}", e(c), t(c))),
            Merge::NewerProgress => pick(format!("{} > {}", e("progress_seq"), t("progress_seq"))),
            Merge::MinNull => format!(
                "CASE WHEN {t} IS NULL THEN {e} WHEN {e} IS NULL THEN {t} WHEN {e} < {t} THEN {e} ELSE {t} END",
                t = t(c),
                e = e(c)
            ),
            Merge::MaxNull => format!(
                "CASE WHEN {t} IS NULL THEN {e} WHEN {e} IS NULL THEN {t} WHEN {e} > {t} THEN {e} ELSE {t} END",
                t = t(c),
                e = e(c)
            ),
        }
    }
}
