use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(manager, r#"
                -- The saga-deadline job looks for old PENDING_PAYMENT orders every second.
                CREATE INDEX orders_pending_by_age ON orders (created_at) WHERE status = 'PENDING_PAYMENT';
                "#).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(manager, r#"DROP INDEX orders_pending_by_age;"#).await
    }
}
