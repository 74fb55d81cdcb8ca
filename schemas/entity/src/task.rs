//! One row per task: its spec and the state folded from its events.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tasks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// 0 queued, 1 running, 2 terminal: status only moves up.
    pub status_rank: i16,
    pub tool: String,
    pub queue: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub arguments: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: Json,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_secs: Option<i64>,
    pub idempotency_key: Option<String>,
    pub session_id: Option<String>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub progress: Option<Json>,
    /// Event-stream sequence of the progress shown.
    pub progress_seq: i64,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub result: Option<Json>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub error: Option<Json>,
    /// Event-stream sequence of the terminal event shown (0: none yet).
    pub terminal_seq: i64,
    pub created_at: Option<DateTimeUtc>,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub cancel_requested_at: Option<DateTimeUtc>,
    pub updated_at: Option<DateTimeUtc>,
    /// Highest event-stream sequence applied to this row.
    pub last_seq: i64,
    /// A delayed task's start time.
    pub run_at: Option<DateTimeUtc>,
    /// `high`, `normal` or `low`.
    pub priority: String,
    /// The tenant that submitted it (empty until the `submitted` event is recorded).
    pub tenant: String,
    /// The agent it was submitted with.
    pub agent: Option<String>,
    /// The W3C trace id of its submission (32 hex digits).
    pub trace_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
