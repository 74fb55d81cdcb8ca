//! One row per revision of the runtime configuration.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "config_revisions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub revision: i64,
    pub at: DateTimeUtc,
    pub by: String,
    /// The changed settings' names, a JSON array.
    #[sea_orm(column_type = "JsonBinary")]
    pub changed: Json,
    /// `wharf_contract::RuntimeConfig` as JSON.
    #[sea_orm(column_type = "JsonBinary")]
    pub config: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
