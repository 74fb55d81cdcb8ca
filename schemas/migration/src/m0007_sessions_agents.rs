//! Sessions and agents, the gateway's resources, and the agent a task was submitted with.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Agent,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    Tenant,
    Name,
    CreatedAt,
    ExpiresAt,
    CreatedBy,
    Metadata,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Tenant,
    Name,
    Spec,
    Revision,
    CreatedAt,
    UpdatedAt,
    UpdatedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(string_len_null(Tasks::Agent, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .if_not_exists()
                    .col(uuid(Sessions::Id).primary_key())
                    .col(string_len(Sessions::Tenant, 64))
                    .col(string_len_null(Sessions::Name, 255))
                    .col(timestamp_with_time_zone(Sessions::CreatedAt))
                    .col(timestamp_with_time_zone(Sessions::ExpiresAt))
                    .col(string_len(Sessions::CreatedBy, 300))
                    .col(json_binary(Sessions::Metadata))
                    .col(timestamp_with_time_zone_null(Sessions::DeletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_sessions_tenant_id")
                    .table(Sessions::Table)
                    .col(Sessions::Tenant)
                    .col(Sessions::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .if_not_exists()
                    .col(string_len(Agents::Tenant, 64))
                    .col(string_len(Agents::Name, 64))
                    // The spec as JSON (allowed tools, defaults, metadata).
                    .col(json_binary(Agents::Spec))
                    .col(integer(Agents::Revision))
                    .col(timestamp_with_time_zone(Agents::CreatedAt))
                    .col(timestamp_with_time_zone(Agents::UpdatedAt))
                    .col(string_len(Agents::UpdatedBy, 300))
                    .primary_key(Index::create().col(Agents::Tenant).col(Agents::Name))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Agents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Sessions::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::Agent)
                    .to_owned(),
            )
            .await
    }
}
