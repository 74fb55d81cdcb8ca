//! The shape of the partitioned history on Postgres, shared by the migration that makes it and
//! the store's maintenance that keeps it (`wharf_store::Store::maintain_history`).
//!
//! `tasks` is partitioned by range of `id` and `task_events` by range of `task_id`. Task ids
//! are UUIDv7, whose first 48 bits are the submission time in milliseconds, and Postgres
//! compares UUIDs byte by byte: the ids submitted on one UTC day lie between two UUIDs made
//! from the day's first millisecond and the next day's. Each day has one partition of each
//! table, with the same bounds and the same suffix (`tasks_p20261204`, `task_events_p20261204`),
//! so a day's tasks and their events are dropped together. A `DEFAULT` partition of each holds
//! whatever no day's partition covers.

/// A day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The two partitioned tables, each with the column its ranges are of, in the order the
/// recorder writes them (events, then tasks): the upkeep locks them in the same order, so the
/// two never wait on each other in a circle.
pub const TABLES: [(&str, &str); 2] = [("task_events", "task_id"), ("tasks", "id")];

/// The smallest UUIDv7 of millisecond `ms` (Unix time): its timestamp, then zeros. Every id
/// made at `ms` or later sorts at or above it, every earlier one below.
pub fn uuid_at(ms: i64) -> String {
    let ms = ms.clamp(0, (1 << 48) - 1) as u64;
    format!(
        "{:08x}-{:04x}-0000-0000-000000000000",
        ms >> 16,
        ms & 0xffff
    )
}

/// The millisecond (Unix time) a UUID's first 48 bits spell; `None` when `uuid` is not one.
pub fn ms_of(uuid: &str) -> Option<i64> {
    let hex: String = uuid.chars().filter(|c| *c != '-').take(12).collect();
    (hex.len() == 12)
        .then(|| i64::from_str_radix(&hex, 16).ok())
        .flatten()
}

/// The first millisecond of the UTC day holding `ms`.
pub fn day_start(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

/// The suffix of the partitions of the day starting at `day_ms`: `p` and the date, `p20261204`.
pub fn day_suffix(day_ms: i64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), to need no date crate.
    let z = day_ms.div_euclid(DAY_MS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("p{y:04}{m:02}{d:02}")
}

/// The partition holding the history from before partitioning (from the start of time to the
/// end of the day the migration ran), when there was any.
pub const LEGACY_SUFFIX: &str = "unpartitioned";

/// The catch-all partition.
pub const DEFAULT_SUFFIX: &str = "default";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_sort_as_the_ids_of_their_time() {
        let ms = 1_796_342_400_000; // 2026-12-04T00:00:00Z
        assert_eq!(day_suffix(ms), "p20261204");
        assert_eq!(day_suffix(ms - 1), "p20261203");
        assert_eq!(day_suffix(0), "p19700101");
        assert_eq!(day_suffix(951_782_400_000), "p20000229");
        assert_eq!(day_start(ms + 5), ms);
        assert_eq!(ms_of(&uuid_at(ms)), Some(ms));
        assert_eq!(
            uuid_at(0x0123_4567_89ab),
            "01234567-89ab-0000-0000-000000000000"
        );
        // An id of the last millisecond of a day sorts below the next day's bound.
        let last = "019aea0f-ffff-7fff-bfff-ffffffffffff";
        let bound = uuid_at(ms_of(last).unwrap() + 1);
        assert!(last < bound.as_str());
    }
}
