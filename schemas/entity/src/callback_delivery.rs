//! One event of one task to deliver to its callback URL.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "callback_deliveries")]
pub struct Model {
    /// `<task id>-<event sequence>`, the `webhook-id` of every attempt.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub task_id: Uuid,
    pub tenant: String,
    pub seq: i64,
    pub event: String,
    pub url: String,
    pub cloudevents: bool,
    /// The body to send, as JSON.
    #[sea_orm(column_type = "JsonBinary")]
    pub body: Json,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub retry_until: DateTimeUtc,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
