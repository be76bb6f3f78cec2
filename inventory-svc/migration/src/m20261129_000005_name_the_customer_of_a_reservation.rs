use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            r#"
                -- The customer whose order it is, from PaymentSucceeded: `GET /reservations`
                -- shows a reservation to that customer's token. Rows from before, and the
                -- tombstones of orders cancelled before any reservation, have none.
                ALTER TABLE reservations ADD COLUMN IF NOT EXISTS customer_id UUID;
                "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            "ALTER TABLE reservations DROP COLUMN IF EXISTS customer_id;",
        )
        .await
    }
}
