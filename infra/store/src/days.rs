//! Bounds on a task id that Postgres prunes partitions with when it *plans* a statement.
//!
//! The history is partitioned by day of id (see `history.rs`). A bound passed as a parameter
//! is pruned only when the statement runs: its cached generic plan covers every partition,
//! locks all of them at each execution, and a custom plan is planned again at each execution,
//! which over fifty partitions cost 0.4 ms per `GET` (ten times the query itself). A bound
//! written into the statement's text as a literal is known to the planner: the plan holds
//! only the partitions in range, and Postgres caches it like any other. The literals are
//! UUIDs that Wharf makes itself (the first id of a day), never text from a request, and they
//! change once a day, so each connection prepares a few statements a day more.

use sea_orm::sea_query::{Expr, ExprTrait, IntoColumnRef, SimpleExpr};
use uuid::Uuid;
use wharf_migration::partitions::{DAY_MS, day_start, ms_of, uuid_at};

/// The first id of millisecond `ms`, used at a day's start (`uuid_at` makes valid UUIDs).
pub(crate) fn day_bound(ms: i64) -> Uuid {
    Uuid::parse_str(&uuid_at(ms)).expect("uuid_at makes UUIDs")
}

/// The first id of millisecond `ms` (clamped to what a UUIDv7 can spell): below every UUIDv7
/// made in that millisecond.
pub(crate) fn first_id_at(ms: i64) -> Uuid {
    day_bound(ms)
}

/// The first id of the day after the one starting at `start`; `None` for the last day UUIDs
/// can spell, whose end is past the 48 bits of time a UUIDv7 holds.
pub(crate) fn next_day_bound(start: i64) -> Option<Uuid> {
    (start + DAY_MS < 1 << 48).then(|| day_bound(start + DAY_MS))
}

/// `column >= 'from'`, with `from` written into the statement.
pub(crate) fn at_least(column: impl IntoColumnRef, from: Uuid) -> SimpleExpr {
    Expr::col(column).gte(Expr::cust(format!("'{from}'::uuid")))
}

/// `column < 'to'`, with `to` written into the statement.
pub(crate) fn below(column: impl IntoColumnRef, to: Uuid) -> SimpleExpr {
    Expr::col(column).lt(Expr::cust(format!("'{to}'::uuid")))
}

/// The ids of the day `id` belongs to, as literal bounds on `column`: with `column = id` the
/// plan reads that day's partition alone (or the default one, when the day has none). The
/// last day UUIDs can spell has no upper bound.
pub(crate) fn same_day(column: impl IntoColumnRef + Clone, id: Uuid) -> SimpleExpr {
    let ms = ms_of(&id.to_string()).unwrap_or_default();
    let start = day_start(ms);
    let lower = at_least(column.clone(), day_bound(start));
    match next_day_bound(start) {
        Some(end) => lower.and(below(column, end)),
        None => lower,
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::{PostgresQueryBuilder, Query};

    use super::*;

    fn sql(id: &str) -> String {
        let id = Uuid::parse_str(id).unwrap();
        Query::select()
            .column("id")
            .from("tasks")
            .and_where(same_day("id", id))
            .to_string(PostgresQueryBuilder)
    }

    #[test]
    fn a_day_holds_its_own_ids() {
        // 2026-12-04T05:00:00Z, a UUIDv7 made then.
        let s = sql("01a23f6c-6c80-7a1b-8c2d-0123456789ab");
        assert!(
            s.contains(r#""id" >= ('01a23e59-c400-0000-0000-000000000000'::uuid)"#),
            "{s}"
        );
        assert!(
            s.contains(r#""id" < ('01a24380-2000-0000-0000-000000000000'::uuid)"#),
            "{s}"
        );
    }

    #[test]
    fn the_last_day_has_no_upper_bound() {
        let s = sql("ffffffff-ffff-7fff-bfff-ffffffffffff");
        assert!(s.contains(">="), "{s}");
        assert!(!s.contains(" < "), "{s}");
    }
}
