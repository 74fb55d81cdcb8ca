//! Tasks and their events.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    Status,
    StatusRank,
    Tool,
    Queue,
    Arguments,
    Metadata,
    Attempts,
    MaxAttempts,
    TimeoutSecs,
    IdempotencyKey,
    SessionId,
    Progress,
    ProgressSeq,
    Result,
    Error,
    TerminalSeq,
    CreatedAt,
    StartedAt,
    FinishedAt,
    CancelRequestedAt,
    UpdatedAt,
    LastSeq,
}

#[derive(DeriveIden)]
enum TaskEvents {
    Table,
    Seq,
    TaskId,
    Kind,
    Attempt,
    At,
    Body,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .if_not_exists()
                    .col(uuid(Tasks::Id).primary_key())
                    .col(string(Tasks::Status))
                    .col(small_integer(Tasks::StatusRank))
                    .col(string(Tasks::Tool))
                    .col(string(Tasks::Queue))
                    .col(json_binary(Tasks::Arguments))
                    .col(json_binary(Tasks::Metadata))
                    .col(integer(Tasks::Attempts))
                    .col(integer(Tasks::MaxAttempts))
                    .col(big_integer_null(Tasks::TimeoutSecs))
                    .col(string_null(Tasks::IdempotencyKey))
                    .col(string_null(Tasks::SessionId))
                    .col(json_binary_null(Tasks::Progress))
                    .col(big_integer(Tasks::ProgressSeq))
                    .col(json_binary_null(Tasks::Result))
                    .col(json_binary_null(Tasks::Error))
                    .col(big_integer(Tasks::TerminalSeq))
                    .col(timestamp_with_time_zone_null(Tasks::CreatedAt))
                    .col(timestamp_with_time_zone_null(Tasks::StartedAt))
                    .col(timestamp_with_time_zone_null(Tasks::FinishedAt))
                    .col(timestamp_with_time_zone_null(Tasks::CancelRequestedAt))
                    .col(timestamp_with_time_zone_null(Tasks::UpdatedAt))
                    .col(big_integer(Tasks::LastSeq))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("idx_tasks_status_id", vec![Tasks::Status, Tasks::Id]),
            ("idx_tasks_queue_id", vec![Tasks::Queue, Tasks::Id]),
            ("idx_tasks_session_id", vec![Tasks::SessionId, Tasks::Id]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Tasks::Table).if_not_exists();
            for c in cols {
                index.col(c);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(TaskEvents::Table)
                    .if_not_exists()
                    .col(big_integer(TaskEvents::Seq).primary_key())
                    .col(uuid(TaskEvents::TaskId))
                    .col(string(TaskEvents::Kind))
                    .col(integer(TaskEvents::Attempt))
                    .col(timestamp_with_time_zone(TaskEvents::At))
                    .col(json_binary(TaskEvents::Body))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_task_events_task")
                    .table(TaskEvents::Table)
                    .col(TaskEvents::TaskId)
                    .col(TaskEvents::Seq)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TaskEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Tasks::Table).to_owned())
            .await
    }
}
