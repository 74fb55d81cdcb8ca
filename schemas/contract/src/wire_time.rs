//! Times on the hot path, written as chrono writes them (RFC 3339 in UTC with `Z`, the
//! fraction in 0, 3, 6 or 9 digits, whichever holds it exactly), but formatted into a buffer on
//! the stack and handed to the serializer whole. chrono's own path goes through a formatter
//! piece by piece, and serde_json escapes each piece on its own: a visible share of encoding a
//! task, its events and its view. Used with `#[serde(serialize_with = ...)]`; reading is
//! chrono's. Years outside 0–9999 and leap seconds take chrono's path.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// The longest text: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LONGEST: usize = 30;

/// Serialises `t` as chrono would.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; LONGEST];
    match write(t, &mut buf) {
        Some(n) => s.serialize_str(std::str::from_utf8(&buf[..n]).expect("only ASCII digits")),
        None => t.serialize(s),
    }
}

/// [`serialize`] for an optional time.
pub fn serialize_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    struct Wire<'a>(&'a DateTime<Utc>);
    impl Serialize for Wire<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }
    match t {
        Some(t) => s.serialize_some(&Wire(t)),
        None => s.serialize_none(),
    }
}

/// Writes `t` into `buf`; its length, or `None` where chrono's path is needed.
fn write(t: &DateTime<Utc>, buf: &mut [u8; LONGEST]) -> Option<usize> {
    let year = t.year();
    let nanos = t.nanosecond();
    // A leap second is kept as nanoseconds past a billion (written as second 60).
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    digits(&mut buf[0..4], year as u32);
    buf[4] = b'-';
    digits(&mut buf[5..7], t.month());
    buf[7] = b'-';
    digits(&mut buf[8..10], t.day());
    buf[10] = b'T';
    digits(&mut buf[11..13], t.hour());
    buf[13] = b':';
    digits(&mut buf[14..16], t.minute());
    buf[16] = b':';
    digits(&mut buf[17..19], t.second());
    let (fraction, width) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    let mut end = 19;
    if width > 0 {
        buf[end] = b'.';
        digits(&mut buf[end + 1..end + 1 + width], fraction);
        end += 1 + width;
    }
    buf[end] = b'Z';
    Some(end + 1)
}

/// `value` in decimal, zero-padded to fill `out`.
fn digits(out: &mut [u8], mut value: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ours(t: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize(t, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn times_are_written_exactly_as_chrono_writes_them() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut times: Vec<DateTime<Utc>> = vec![
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            // A leap second.
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(),
        ];
        for _ in 0..20_000 {
            let secs = (next() % 253_402_300_800) as i64; // 1970 to 9999
            let nanos = match next() % 4 {
                0 => 0,
                1 => (next() % 1_000) as u32 * 1_000_000,
                2 => (next() % 1_000_000) as u32 * 1_000,
                _ => (next() % 1_000_000_000) as u32,
            };
            times.push(Utc.timestamp_opt(secs, nanos).unwrap());
        }
        for t in &times {
            assert_eq!(ours(t), serde_json::to_string(t).unwrap(), "{t:?}");
            let some = Some(*t);
            let mut out = Vec::new();
            serialize_opt(&some, &mut serde_json::Serializer::new(&mut out)).unwrap();
            assert_eq!(out, serde_json::to_vec(&some).unwrap());
        }
        let mut out = Vec::new();
        serialize_opt(&None, &mut serde_json::Serializer::new(&mut out)).unwrap();
        assert_eq!(out, b"null");
    }
}
