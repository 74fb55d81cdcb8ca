//! The audit log: one row per state-changing call or refused caller, written by the gateway.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    Action,
    Outcome,
    Status,
    Actor,
    Tenant,
    Target,
    RequestId,
    Ip,
    Detail,
}

/// A tenant's entries newest first: `GET /api/v1/audit` always filters on the tenant.
const BY_TENANT: &str = "idx_audit_events_tenant_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .if_not_exists()
                    .col(uuid(AuditEvents::Id).primary_key())
                    .col(timestamp_with_time_zone(AuditEvents::At))
                    .col(string_len(AuditEvents::Action, 128))
                    .col(string_len(AuditEvents::Outcome, 16))
                    .col(integer(AuditEvents::Status))
                    .col(string_len(AuditEvents::Actor, 300))
                    .col(string_len(AuditEvents::Tenant, 64))
                    .col(text(AuditEvents::Target))
                    .col(string_len(AuditEvents::RequestId, 128))
                    .col(string_len(AuditEvents::Ip, 64))
                    .col(text_null(AuditEvents::Detail))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(BY_TENANT)
                    .table(AuditEvents::Table)
                    .col(AuditEvents::Tenant)
                    .col(AuditEvents::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await
    }
}
