//! The projection: [`Store::record`] applies a batch of events idempotently and in any order,
//! the task rows merged by an SQL upsert that mirrors `wharf_contract::TaskState::merge`
//! (one `unnest` statement per table on Postgres, multi-row inserts elsewhere). The `tasks`
//! row itself, its columns and their merge, is spelled once, in `task_row.rs`.

use std::borrow::Cow;
use std::collections::HashMap;

use sea_orm::sea_query::Query;
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, TransactionTrait};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;
use wharf_contract::{TaskEvent, TaskState};
use wharf_entity::{callback_delivery, task, task_event};

use crate::deliveries::{NewDelivery, delivery_row, insert_deliveries_postgres};
use crate::task_row::{self, ROW};
use crate::{Error, Store};

impl Store {
    /// Applies a batch of events (each with its events-stream sequence) in one transaction.
    /// Idempotent: events already applied change nothing.
    pub async fn record(&self, events: &[(u64, TaskEvent)]) -> Result<(), Error> {
        self.record_batch(events, &[]).await
    }

    /// [`Store::record`], and in the same transaction the callback deliveries those events
    /// call for (a delivery already recorded is left as it is). Idempotent as a whole.
    pub async fn record_batch(
        &self,
        events: &[(u64, TaskEvent)],
        deliveries: &[NewDelivery],
    ) -> Result<(), Error> {
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
            return self.record_postgres(events, &states, deliveries).await;
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
            insert
                .into_table(task::Entity)
                .columns(ROW.iter().map(|c| c.column));
            for s in chunk {
                insert.values_panic(task_row::values(s));
            }
            insert.on_conflict(task_row::merge_on_conflict());
            txn.execute(&insert).await?;
        }
        if !deliveries.is_empty() {
            let now = chrono::Utc::now();
            callback_delivery::Entity::insert_many(deliveries.iter().map(|d| delivery_row(d, now)))
                .on_conflict_do_nothing_on([callback_delivery::Column::Id])
                .exec_without_returning(&txn)
                .await?;
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
        deliveries: &[NewDelivery],
    ) -> Result<(), Error> {
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
            body.push(jsonb(e));
        }
        let pool = self.db.get_postgres_connection_pool();
        let mut tx = pool.begin().await.map_err(sqlx_error)?;
        let written = async {
            sea_orm::sqlx::query(
                "INSERT INTO task_events (seq, task_id, kind, attempt, at, body) \
                 SELECT * FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::int4[], \
                 $5::timestamptz[], $6::jsonb[]) ON CONFLICT (task_id, seq) DO NOTHING",
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

            let mut query = sea_orm::sqlx::query(task_row::upsert_sql());
            for column in task_row::arrays(states) {
                query = column.bind(query);
            }
            query.execute(&mut *tx).await.map_err(sqlx_error)?;
            insert_deliveries_postgres(&mut tx, deliveries, chrono::Utc::now()).await?;
            Ok(())
        }
        .await;
        finish(tx, written).await
    }
}

/// Commits a transaction when its work went well, else rolls it back at once: a sqlx
/// transaction merely dropped is rolled back only when its connection is next used, and until
/// then it holds its locks (rows of `tasks`, for a failed batch; both tables, for a failed
/// partition detach).
pub(crate) async fn finish<T>(
    tx: sea_orm::sqlx::Transaction<'static, sea_orm::sqlx::Postgres>,
    work: Result<T, Error>,
) -> Result<T, Error> {
    match work {
        Ok(v) => {
            tx.commit().await.map_err(sqlx_error)?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// A driver error as the [`sea_orm::DbErr`] the rest of the store reports, so
/// [`Error::is_refusal`] reads it the same way.
pub(crate) fn sqlx_error(e: sea_orm::sqlx::Error) -> Error {
    Error::Db(sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(
        std::sync::Arc::new(e),
    )))
}

/// One column of `rows` as an array, for a statement that takes its rows as arrays (`unnest`).
pub(crate) fn column<'a, T, U>(rows: &'a [T], cell: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(cell).collect()
}

/// `v` as a jsonb parameter for Postgres: serialised once and sent as that text, with no tree
/// of values built on the way. Postgres stores neither NUL characters in text nor `\u0000` in
/// jsonb; tasks may carry them (the task itself, on NATS, is untouched), so the database copy
/// gets U+FFFD instead, in keys and values alike.
pub(crate) fn jsonb<T: serde::Serialize + ?Sized>(
    v: &T,
) -> sea_orm::sqlx::types::Json<Box<RawValue>> {
    let raw = serde_json::value::to_raw_value(v).expect("contract types serialise");
    let raw = if raw.get().contains("\\u0000") {
        without_nul(raw.get())
    } else {
        raw
    };
    sea_orm::sqlx::types::Json(raw)
}

/// JSON text with every escaped NUL (`\u0000`) written as `\uFFFD`. Escapes are read from the
/// left, so an escaped backslash followed by `u0000` stays as it is.
fn without_nul(text: &str) -> Box<RawValue> {
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let escape = &rest[i..];
        let len = if escape.starts_with("\\u0000") {
            out.push_str("\\uFFFD");
            6
        } else {
            // A backslash and the ASCII character after it (`\\`, `\"`, `\n`, `\u`, ...).
            out.push_str(&escape[..2]);
            2
        };
        rest = &escape[len..];
    }
    out.push_str(rest);
    RawValue::from_string(out).expect("escapes replaced by escapes keep JSON valid")
}

/// `v` as a value for the portable path: the text of [`jsonb`] read back, so that both paths
/// store the same (NUL characters as U+FFFD).
pub(crate) fn json<T: serde::Serialize>(v: &T) -> Value {
    value_of(&jsonb(v))
}

/// A jsonb parameter's text as a value.
pub(crate) fn value_of(raw: &sea_orm::sqlx::types::Json<Box<RawValue>>) -> Value {
    serde_json::from_str(raw.0.get()).expect("jsonb writes JSON")
}

pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonb_text_has_u_fffd_for_every_nul_and_nothing_else_changed() {
        let cases = [
            (
                json!({"k\u{0}": ["a\u{0}b", {"x": "\u{0}\u{0}"}], "n": 1}),
                json!({"k\u{FFFD}": ["a\u{FFFD}b", {"x": "\u{FFFD}\u{FFFD}"}], "n": 1}),
            ),
            // An escaped backslash before `u0000` is text, not an escaped NUL.
            (
                json!({"path": "C:\\u0000\\x", "both": "\\\u{0}", "quote": "\"\u{0}"}),
                json!({"path": "C:\\u0000\\x", "both": "\\\u{FFFD}", "quote": "\"\u{FFFD}"}),
            ),
            (
                json!("plain \\ text \n with escapes \u{1f}"),
                json!("plain \\ text \n with escapes \u{1f}"),
            ),
            (json!(null), json!(null)),
        ];
        for (given, stored) in cases {
            // `json` reads back the text `jsonb` sends.
            assert_eq!(json(&given), stored, "{given}");
        }
    }
}
