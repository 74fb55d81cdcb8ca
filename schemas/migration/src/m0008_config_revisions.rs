//! Revisions of the runtime configuration (`/api/v1/config`), newest wins.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConfigRevisions {
    Table,
    Revision,
    At,
    By,
    Changed,
    Config,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConfigRevisions::Table)
                    .if_not_exists()
                    // Taken in order by the writer: a second writer of the same number fails.
                    .col(big_integer(ConfigRevisions::Revision).primary_key())
                    .col(timestamp_with_time_zone(ConfigRevisions::At))
                    .col(string_len(ConfigRevisions::By, 300))
                    .col(json_binary(ConfigRevisions::Changed))
                    .col(json_binary(ConfigRevisions::Config))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConfigRevisions::Table).to_owned())
            .await
    }
}
