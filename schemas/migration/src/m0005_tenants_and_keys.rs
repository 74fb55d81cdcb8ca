//! Tenants and API keys: every task belongs to a tenant (the ones from before belong to
//! `default`), and the gateway keeps API keys, hashed, in a table of their own.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Tenant,
    Id,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Tenant,
    Name,
    Role,
    Prefix,
    SecretHash,
    CreatedAt,
    CreatedBy,
    ExpiresAt,
    RevokedAt,
}

/// A tenant's tasks newest first: `GET /api/v1/tasks` always filters on the tenant.
const TASKS_BY_TENANT: &str = "idx_tasks_tenant_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(string_len(Tasks::Tenant, 64).default("default"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(TASKS_BY_TENANT)
                    .table(Tasks::Table)
                    .col(Tasks::Tenant)
                    .col(Tasks::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(uuid(ApiKeys::Id).primary_key())
                    .col(string_len(ApiKeys::Tenant, 64))
                    .col(string_len(ApiKeys::Name, 64))
                    .col(string_len(ApiKeys::Role, 64))
                    .col(string_len(ApiKeys::Prefix, 16))
                    // SHA-256 of the secret, hex: the secret itself is never stored.
                    .col(string_len(ApiKeys::SecretHash, 64).unique_key())
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(string_len(ApiKeys::CreatedBy, 300))
                    .col(timestamp_with_time_zone_null(ApiKeys::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_keys_tenant")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::Tenant)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(TASKS_BY_TENANT)
                    .table(Tasks::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::Tenant)
                    .to_owned(),
            )
            .await
    }
}
