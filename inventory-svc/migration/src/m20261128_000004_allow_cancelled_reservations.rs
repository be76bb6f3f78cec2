use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            r#"
                -- CANCELLED: the order was cancelled before any reservation. The row stays so a
                -- late PaymentSucceeded is answered with a failure (and so a refund), not stock.
                ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
                ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
                    CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED', 'CANCELLED'));
                "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(manager, r#"ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
               ALTER TABLE reservations ADD CONSTRAINT reservations_status_check CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED'));"#).await
    }
}
