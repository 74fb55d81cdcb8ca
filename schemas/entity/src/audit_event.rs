//! One row per audit log entry (see `wharf_contract::AuditEntry`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub at: DateTimeUtc,
    pub action: String,
    pub outcome: String,
    pub status: i32,
    pub actor: String,
    pub tenant: String,
    #[sea_orm(column_type = "Text")]
    pub target: String,
    pub request_id: String,
    pub ip: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub detail: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
