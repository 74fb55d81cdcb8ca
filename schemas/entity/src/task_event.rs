//! Every task event, keyed by its sequence in the events stream (so storing one twice is a no-op).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "task_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub task_id: Uuid,
    /// The event's `type`, e.g. `progress`.
    pub kind: String,
    pub attempt: i32,
    pub at: DateTimeUtc,
    /// The whole event as it was published.
    #[sea_orm(column_type = "JsonBinary")]
    pub body: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
