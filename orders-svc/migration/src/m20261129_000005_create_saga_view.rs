use sea_orm_migration::prelude::*;

/// The saga view behind `GET /sagas/{saga_id}` and the explorer page, and an index for
/// listing recent sagas (`GET /sagas`) newest first.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::create_saga_view(manager).await?;
        saga_schema::execute(
            manager,
            "CREATE INDEX orders_by_age ON orders (created_at);",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(manager, "DROP INDEX IF EXISTS orders_by_age;").await?;
        saga_schema::drop_saga_view(manager).await
    }
}
