//! Operations: `GET /api/v1/queues` counts the tasks that ended in the last minute, a range
//! scan on `finished_at` per call.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    FinishedAt,
}

const INDEX: &str = "idx_tasks_finished_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Tasks::Table)
                    .col(Tasks::FinishedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Tasks::Table).to_owned())
            .await
    }
}
