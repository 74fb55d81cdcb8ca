//! The contract every Wharf process shares: wire types, NATS names, error codes.
//!
//! This crate owns every subject, stream, consumer, bucket and header name and every type that
//! crosses a process boundary (NATS messages, HTTP and WebSocket bodies). No other crate spells a
//! subject. It depends on serde, schemars, uuid and chrono only: no I/O, no runtime.
//!
//! Wire messages carry a version (`v`); a decoder accepts every version this crate still knows and
//! rejects the rest with a clear error, so an old worker never misreads a new message.

pub mod api;
pub mod auth;
pub mod callbacks;
pub mod config;
pub mod error;
pub mod event;
pub mod hooks;
pub mod names;
pub mod ops;
pub mod resources;
pub mod rules;
pub mod state;
pub mod task;
pub mod tool;
pub mod whole;
pub mod wire_time;

pub use api::*;
pub use auth::{
    API_KEY_PREFIX, ApiKeyInfo, ApiKeyList, AuditEntry, AuditList, CreateKey, CreatedKey,
    DEFAULT_TENANT, Identity, Permission,
};
pub use callbacks::{
    Callback, CallbackEvent, Delivery, DeliveryAttempt, DeliveryList, DeliveryStatus,
    TenantCallbacks,
};
pub use config::{
    ConfigHistory, ConfigRevision, ConfigView, LimitsConfig, MCP_REGISTRY_VERSION, McpRegistry,
    QueueSettings, Rate, RegistryServer, RuntimeConfig, UpdateConfig,
};
pub use error::{ErrorCode, FieldError, Problem};
pub use event::{EventKind, Start, TaskEvent, Unfold};
pub use hooks::{ArgumentSource, Hook};
pub use names::*;
pub use ops::{QueueInfo, QueueLevel, QueueList, SystemStatus, WorkerInfo, WorkerList};
pub use resources::{
    Agent, AgentList, AgentSpec, CallTool, CreateSession, DeletedSession, Session, SessionList,
};
pub use rules::{NAME_RULE, valid_name};
pub use state::TaskState;
pub use task::{
    Priority, Progress, RetryPolicy, Task, TaskError, TaskErrorCode, TaskStatus, TaskView,
};
pub use tool::{ToolInfo, ToolServer};

/// Builds a JSON Schema for every wire type, keyed by the file name it is committed under in
/// `schemas/json/`. A test compares the committed files with this output.
pub fn json_schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn schema<T: schemars::JsonSchema>() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(T)).expect("a schema serialises")
    }
    vec![
        ("task.v1.json", schema::<Task>()),
        ("task-event.v1.json", schema::<TaskEvent>()),
        ("task-view.json", schema::<TaskView>()),
        ("submit-task.json", schema::<SubmitTask>()),
        ("submit-batch.json", schema::<SubmitBatch>()),
        ("task-batch.json", schema::<TaskBatch>()),
        ("task-ref.json", schema::<TaskRef>()),
        ("delivery-list.json", schema::<DeliveryList>()),
        ("tool-server.v1.json", schema::<ToolServer>()),
        ("ws-client-message.json", schema::<WsClientMessage>()),
        ("ws-server-message.json", schema::<WsServerMessage>()),
        ("problem.json", schema::<Problem>()),
        ("dead-letter.v1.json", schema::<DeadLetter>()),
        ("dead-letter-list.json", schema::<DeadLetterList>()),
        ("worker.v1.json", schema::<WorkerInfo>()),
        ("worker-list.json", schema::<WorkerList>()),
        ("queue-list.json", schema::<QueueList>()),
        ("create-key.json", schema::<CreateKey>()),
        ("created-key.json", schema::<CreatedKey>()),
        ("api-key-list.json", schema::<ApiKeyList>()),
        ("identity.json", schema::<Identity>()),
        ("audit-entry.v1.json", schema::<AuditEntry>()),
        ("audit-list.json", schema::<AuditList>()),
        ("session.json", schema::<Session>()),
        ("agent.json", schema::<Agent>()),
        ("agent-spec.json", schema::<AgentSpec>()),
        ("call-tool.json", schema::<CallTool>()),
        ("config-view.json", schema::<ConfigView>()),
        ("update-config.json", schema::<UpdateConfig>()),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// The committed `schemas/json/` files must be what the code generates. Run with
    /// `WHARF_BLESS=1` to rewrite them after a deliberate change of a wire type.
    #[test]
    fn committed_json_schemas_match_the_code() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../json");
        let bless = std::env::var_os("WHARF_BLESS").is_some();
        let mut stale = Vec::new();
        for (file, schema) in super::json_schemas() {
            let want = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            let path = dir.join(file);
            if bless {
                std::fs::write(&path, &want).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
                stale.push(file);
            }
        }
        assert!(
            stale.is_empty(),
            "schemas/json is out of date for {stale:?}: run `WHARF_BLESS=1 cargo test -p wharf-contract`"
        );
    }

    #[test]
    fn error_code_strings_match_their_serde_names() {
        use super::ErrorCode::*;
        for code in [
            MalformedBody,
            InvalidField,
            UnknownTool,
            InvalidArguments,
            BodyTooLarge,
            InvalidQuery,
            TaskNotFound,
            NotFound,
            TaskFinished,
            IdempotencyKeyReused,
            IdempotencyKeyInUse,
            NotReplayable,
            UnsupportedMediaType,
            ToolNotAllowed,
            AgentExists,
            AgentConflict,
            ConfigConflict,
            Unauthenticated,
            Forbidden,
            RateLimited,
            TooManyTasks,
            Timeout,
            Unavailable,
            Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
