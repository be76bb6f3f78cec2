use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
                -- CANCELLED: the order was cancelled before any reservation. The row stays so a
                -- late PaymentSucceeded is answered with a failure (and so a refund), not stock.
                ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
                ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
                    CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED', 'CANCELLED'));
                "#,
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(r#"ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
               ALTER TABLE reservations ADD CONSTRAINT reservations_status_check CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED'));"#)
            .await
            .map(|_| ())
    }
}
