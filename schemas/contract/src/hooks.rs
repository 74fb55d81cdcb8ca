//! Inbound webhooks: `POST /hooks/{name}` starts a task when an outside system (a CI server, a
//! payment provider) fires an event, signed as the Standard Webhooks specification says. Hooks
//! are part of the runtime settings (`/api/v1/config`), so every change is a revision.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::task::Priority;

/// The prefix of a Standard Webhooks secret; base64 of the key's bytes follows.
pub const HOOK_SECRET_PREFIX: &str = "whsec_";
/// How a secret reads in `GET /api/v1/config`: this prefix, then the first 8 hex digits of its
/// SHA-256 (enough to tell secrets apart, nothing to sign with). Sent back as it was read, it
/// stands for the stored secret.
pub const HOOK_SECRET_REDACTED: &str = "***";
/// Header naming a webhook message: the idempotency key of the task it starts.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// Header with the message's time, in whole seconds since 1970.
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header with the message's signatures, `v1,<base64>` separated by spaces.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";
/// How far a message's timestamp may be from the gateway's clock, either way, in seconds (the
/// specification's five minutes): an older message is a replay, a newer one a wrong clock.
pub const WEBHOOK_TOLERANCE_SECS: i64 = 300;

/// One inbound webhook: whose task it starts, with what, and the secrets that sign its calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// The tenant the hook's tasks belong to.
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub tenant: String,
    /// Standard Webhooks secrets (`whsec_` and the base64 of 24 to 64 random bytes). A call
    /// signed by any of them is accepted: add the new one, move the sender over, remove the
    /// old one.
    #[schemars(length(min = 1, max = crate::rules::HOOK_SECRETS), inner(length(max = 200), regex(pattern = "^whsec_[A-Za-z0-9+/]+={0,2}$")))]
    pub secrets: Vec<String>,
    /// The tool the hook starts, `server.tool`.
    #[schemars(
        length(max = 200),
        regex(pattern = "^[A-Za-z0-9_-]{1,64}\\.[\\s\\S]+$")
    )]
    pub tool: String,
    /// An agent of the tenant, whose defaults the task takes and which must allow the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The task's arguments by name, each taken from the call's JSON body or a constant. The
    /// configuration is refused if a required argument of the tool has no entry here.
    #[serde(default)]
    pub arguments: BTreeMap<String, ArgumentSource>,
}

/// Where one argument of a hook's task comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ArgumentSource {
    /// A JSON pointer (RFC 6901) into the call's body: `/repository/full_name`; `""` is the
    /// whole body. Nothing there leaves the argument out.
    From(#[schemars(regex(pattern = "^(/[\\s\\S]*)?$"))] String),
    /// The same value on every call.
    Value(Value),
}

impl ArgumentSource {
    /// The value for one call whose body is `body`: `None` when the pointer finds nothing.
    pub fn resolve(&self, body: &Value) -> Option<Value> {
        match self {
            ArgumentSource::From(pointer) => body.pointer(pointer).cloned(),
            ArgumentSource::Value(v) => Some(v.clone()),
        }
    }
}
