use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            r#"
                -- A CANCELLED tombstone is written for an order that was never charged, from an
                -- event that names no customer: its customer is unknown, not the nil UUID that
                -- earlier versions stored. Every other payment names its customer.
                ALTER TABLE payments ALTER COLUMN customer_id DROP NOT NULL;
                UPDATE payments SET customer_id = NULL
                    WHERE status = 'CANCELLED' AND customer_id = '00000000-0000-0000-0000-000000000000';
                ALTER TABLE payments ADD CONSTRAINT payments_customer_known
                    CHECK (status = 'CANCELLED' OR customer_id IS NOT NULL);
                "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            r#"ALTER TABLE payments DROP CONSTRAINT payments_customer_known;
               UPDATE payments SET customer_id = '00000000-0000-0000-0000-000000000000' WHERE customer_id IS NULL;
               ALTER TABLE payments ALTER COLUMN customer_id SET NOT NULL;"#,
        )
        .await
    }
}
