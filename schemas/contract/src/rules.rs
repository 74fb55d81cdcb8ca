//! The rules the gateway checks on what clients send, each named once. The gateway's checks use
//! these constants, and the `#[schemars(...)]` attributes of the request types carry the same
//! constants into the JSON Schemas (and so into the OpenAPI document, and every form or client
//! generated from it), so the document and the server cannot drift apart.
//!
//! Some rules no JSON Schema can state, and the document says them in words only: a value
//! that must name something that exists (a tool, an agent, a role), one that depends on the
//! clock (`run_at` at most a year ahead), one field bounded by another (a retry delay by the
//! longest), and a URL the HTTP parser must read. The API fuzz (`scripts/fuzz-api.sh`) knows
//! these exceptions by the fields they point at, and holds the server to the schema everywhere
//! else.

use std::ops::RangeInclusive;

/// A name: queue, MCP server, agent, tenant, role, API key. Names become subject tokens,
/// consumer names and KV keys, so they keep to ASCII letters, digits, `-` and `_`.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
/// What [`NAME_PATTERN`] asks, as every refusal of a name says it.
pub const NAME_RULE: &str = "must be 1-64 letters, digits, '-' or '_'";

/// The attempts a task may have (`max_attempts`).
pub const MAX_ATTEMPTS: RangeInclusive<u32> = 1..=100;
/// The time an attempt may take, in seconds (`timeout_secs`): up to a day.
pub const TIMEOUT_SECS: RangeInclusive<u64> = 1..=86_400;
/// How far ahead a task may be delayed, in seconds (`delay_secs`): up to a year.
pub const DELAY_SECS: RangeInclusive<u64> = 1..=365 * 24 * 3600;
/// The prefix of the idempotency keys the gateway gives dead-letter replays; a client's key may
/// not start with it ([`RESERVED_KEY_PATTERN`]).
pub const REPLAY_KEY_PREFIX: &str = "replay:";
/// The client keys [`REPLAY_KEY_PREFIX`] reserves, as a pattern.
pub const RESERVED_KEY_PATTERN: &str = "^replay:";
/// Characters of a client's idempotency key, a session id or a session name.
pub const KEY_CHARS: RangeInclusive<u64> = 1..=255;
/// Tasks in one batch.
pub const BATCH_TASKS: RangeInclusive<u64> = 1..=1000;
/// The life of a session, in seconds: a minute to thirty days.
pub const SESSION_TTL_SECS: RangeInclusive<u64> = 60..=30 * 24 * 3600;
/// The life an API key may be given, in seconds: a minute to three years.
pub const KEY_EXPIRY_SECS: RangeInclusive<u64> = 60..=3 * 366 * 24 * 3600;
/// Entries of an agent's `allowed_tools`.
pub const AGENT_TOOLS: RangeInclusive<u64> = 1..=1000;
/// Characters of an agent's description.
pub const DESCRIPTION_CHARS: u64 = 1000;
/// Characters of the tool part of a `server.tool` name in `allowed_tools`.
const TOOL_PART_CHARS: u64 = 128;
/// One entry of `allowed_tools`: every tool (`*`), one server's tools (`server.*`), or one tool
/// (`server.tool`, the tool part without wildcard-looking characters, whitespace or control
/// characters). The character class spells out what Rust's `char::is_whitespace` and
/// `char::is_control` hold, so the schema and the check agree on every character.
pub const ALLOWED_TOOL_PATTERN: &str = "^(\\*|[A-Za-z0-9_-]{1,64}\\.(\\*|[^*>?\\[\\]{}\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]{1,128}))$";
/// A retry delay of a queue, in milliseconds: up to a day.
pub const RETRY_MS: RangeInclusive<u64> = 1..=24 * 3_600_000;
/// A rate limit's sustained rate, in requests per second.
pub const RATE_PER_SEC: RangeInclusive<f64> = 0.001..=1_000_000.0;
/// Most servers the MCP registry may hold.
pub const REGISTRY_SERVERS: u64 = 256;
/// Most inbound webhooks the runtime configuration may hold.
pub const HOOKS: u64 = 256;
/// Most secrets one webhook may accept at once (rotation needs two).
pub const HOOK_SECRETS: u64 = 8;
/// Longest URL of a registry server, in bytes.
pub const URL_BYTES: u64 = 2048;
/// `wait` of a tool call: seconds (`30`, `2.5s`) or whole milliseconds (`1500ms`), at most 50
/// seconds.
pub const WAIT_PATTERN: &str =
    "^(0*([0-9]|[1-4][0-9])(\\.[0-9]+)?s?|0*50(\\.0+)?s?|0*([0-9]{1,4}|[1-4][0-9]{4}|50000)ms)$";
/// The longest `wait` of a tool call, in seconds.
pub const MAX_WAIT_SECS: u64 = 50;

/// The page sizes of a list: its `limit` when the request gives none, and the largest it takes.
#[derive(Debug, Clone, Copy)]
pub struct PageSize {
    pub default: u64,
    pub max: u64,
}

/// `GET /api/v1/tasks`
pub const TASKS_PAGE: PageSize = PageSize {
    default: 50,
    max: 500,
};
/// `GET /api/v1/sessions`
pub const SESSIONS_PAGE: PageSize = PageSize {
    default: 50,
    max: 500,
};
/// `GET /api/v1/dlq`
pub const DLQ_PAGE: PageSize = PageSize {
    default: 100,
    max: 1000,
};
/// `GET /api/v1/audit`
pub const AUDIT_PAGE: PageSize = PageSize {
    default: 100,
    max: 1000,
};
/// `GET /api/v1/config/revisions`
pub const CONFIG_PAGE: PageSize = PageSize {
    default: 50,
    max: 1000,
};

/// `must be between <start> and <end>`, the refusal of a value outside `range`.
pub fn range_rule<T: std::fmt::Display>(range: &RangeInclusive<T>) -> String {
    format!("must be between {} and {}", range.start(), range.end())
}

/// `must be <start> to <end> characters`, the refusal of a text whose length is outside `range`.
pub fn chars_rule(range: &RangeInclusive<u64>) -> String {
    format!("must be {} to {} characters", range.start(), range.end())
}

/// Whether `n` characters fit in `range`.
pub fn chars_within(s: &str, range: &RangeInclusive<u64>) -> bool {
    range.contains(&(s.chars().count() as u64))
}

/// Checks a name (queue, MCP server, agent, tenant, role): [`NAME_PATTERN`].
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks an `allowed_tools` entry: [`ALLOWED_TOOL_PATTERN`].
pub fn valid_allowed_tool(pattern: &str) -> bool {
    let plain = |c: char| {
        !(matches!(c, '*' | '>' | '?' | '[' | ']' | '{' | '}')
            || c.is_whitespace()
            || c.is_control())
    };
    pattern == "*"
        || match pattern.split_once('.') {
            Some((server, "*")) => valid_name(server),
            Some((server, tool)) => {
                valid_name(server)
                    && chars_within(tool, &(1..=TOOL_PART_CHARS))
                    && tool.chars().all(plain)
            }
            None => false,
        }
}

/// Reads a tool call's `wait` ([`WAIT_PATTERN`]) in seconds.
pub fn parse_wait(raw: &str) -> Option<f64> {
    let decimal = |s: &str| {
        let (whole, fraction) = s.split_once('.').unwrap_or((s, "0"));
        !whole.is_empty()
            && !fraction.is_empty()
            && whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
    };
    let secs = if let Some(ms) = raw.strip_suffix("ms") {
        if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Digits only: a huge value parses to a huge float, refused below.
        ms.parse::<f64>().ok()? / 1000.0
    } else {
        let s = raw.strip_suffix('s').unwrap_or(raw);
        if !decimal(s) {
            return None;
        }
        s.parse::<f64>().ok()?
    };
    (secs <= MAX_WAIT_SECS as f64).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns, read by a JSON Schema validator, are the checks: strings on each side of
    /// each rule.
    fn agrees(pattern: &str, check: impl Fn(&str) -> bool, samples: &[&str]) {
        let schema = serde_json::json!({"type": "string", "pattern": pattern});
        let validator = jsonschema::validator_for(&schema).expect("the pattern compiles");
        for s in samples {
            assert_eq!(
                validator.is_valid(&serde_json::json!(s)),
                check(s),
                "{pattern} and the check differ on {s:?}"
            );
        }
    }

    #[test]
    fn the_reserved_key_pattern_is_the_replay_prefix() {
        agrees(
            RESERVED_KEY_PATTERN,
            |s| s.starts_with(REPLAY_KEY_PREFIX),
            &["replay:x", "replay:", "replay", "x replay:", "Replay:x"],
        );
    }

    #[test]
    fn the_name_pattern_is_the_name_check() {
        let long = "a".repeat(64);
        let longer = "a".repeat(65);
        agrees(
            NAME_PATTERN,
            valid_name,
            &["a", "A-z_9", "", "a.b", "a b", "é", &long, &longer, "a\n"],
        );
    }

    #[test]
    fn the_allowed_tool_pattern_is_the_check() {
        let long = format!("s.{}", "t".repeat(128));
        let longer = format!("s.{}", "t".repeat(129));
        agrees(
            ALLOWED_TOOL_PATTERN,
            valid_allowed_tool,
            &[
                "*",
                "demo.*",
                "demo.echo",
                "demo.ec*",
                "demo.>",
                "demo.**",
                "demo",
                "demo.",
                ".echo",
                "de mo.echo",
                "demo.e cho",
                "demo.e\u{85}",
                "demo.e\u{a0}",
                "demo.e\u{3000}",
                "demo.e\u{7f}",
                "demo.é",
                "demo.a.b",
                "demo.{x}",
                &long,
                &longer,
                "**",
                "demo.*x",
            ],
        );
    }

    #[test]
    fn the_wait_pattern_is_the_parser() {
        agrees(
            WAIT_PATTERN,
            |s| parse_wait(s).is_some(),
            &[
                "0",
                "30",
                "30s",
                "2.5",
                "2.5s",
                "50",
                "50.0s",
                "50.01",
                "51",
                "007",
                "1500ms",
                "50000ms",
                "50001ms",
                "1.5ms",
                ".5",
                "5.",
                "+5",
                "1e1",
                "inf",
                "NaN",
                "s",
                "ms",
                "",
                "99999999999999999999999ms",
                "49.999s",
                "0050",
                "-1",
            ],
        );
        assert_eq!(parse_wait("1500ms"), Some(1.5));
        assert_eq!(parse_wait("2.5s"), Some(2.5));
    }
}
