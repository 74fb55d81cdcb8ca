//! Outbound callbacks: one row per event to deliver, one per attempt at it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CallbackDeliveries {
    Table,
    Id,
    TaskId,
    Tenant,
    Seq,
    Event,
    Url,
    Cloudevents,
    Body,
    Status,
    Attempts,
    NextAttemptAt,
    RetryUntil,
    LastStatus,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CallbackAttempts {
    Table,
    DeliveryId,
    Attempt,
    At,
    Status,
    Error,
    LatencyMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CallbackDeliveries::Table)
                    .if_not_exists()
                    // `<task id>-<event sequence>`: recording the same event twice is a no-op.
                    .col(string_len(CallbackDeliveries::Id, 80).primary_key())
                    .col(uuid(CallbackDeliveries::TaskId))
                    .col(string_len(CallbackDeliveries::Tenant, 64))
                    .col(big_integer(CallbackDeliveries::Seq))
                    .col(string_len(CallbackDeliveries::Event, 32))
                    .col(text(CallbackDeliveries::Url))
                    .col(boolean(CallbackDeliveries::Cloudevents))
                    .col(json_binary(CallbackDeliveries::Body))
                    .col(string_len(CallbackDeliveries::Status, 16))
                    .col(integer(CallbackDeliveries::Attempts))
                    .col(timestamp_with_time_zone_null(
                        CallbackDeliveries::NextAttemptAt,
                    ))
                    .col(timestamp_with_time_zone(CallbackDeliveries::RetryUntil))
                    .col(integer_null(CallbackDeliveries::LastStatus))
                    .col(text_null(CallbackDeliveries::LastError))
                    .col(timestamp_with_time_zone(CallbackDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone(CallbackDeliveries::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // The dispatcher's question: which pending deliveries are due.
        manager
            .create_index(
                Index::create()
                    .name("callback_deliveries_due")
                    .table(CallbackDeliveries::Table)
                    .col(CallbackDeliveries::Status)
                    .col(CallbackDeliveries::NextAttemptAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // A task's deliveries in order, and the per-tenant log newest first.
        manager
            .create_index(
                Index::create()
                    .name("callback_deliveries_task")
                    .table(CallbackDeliveries::Table)
                    .col(CallbackDeliveries::TaskId)
                    .col(CallbackDeliveries::Seq)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("callback_deliveries_tenant")
                    .table(CallbackDeliveries::Table)
                    .col(CallbackDeliveries::Tenant)
                    .col(CallbackDeliveries::Status)
                    .col(CallbackDeliveries::CreatedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CallbackAttempts::Table)
                    .if_not_exists()
                    .col(string_len(CallbackAttempts::DeliveryId, 80))
                    .col(integer(CallbackAttempts::Attempt))
                    .col(timestamp_with_time_zone(CallbackAttempts::At))
                    .col(integer_null(CallbackAttempts::Status))
                    .col(text_null(CallbackAttempts::Error))
                    .col(big_integer(CallbackAttempts::LatencyMs))
                    .primary_key(
                        Index::create()
                            .col(CallbackAttempts::DeliveryId)
                            .col(CallbackAttempts::Attempt),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CallbackAttempts::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(CallbackDeliveries::Table).to_owned())
            .await
    }
}
