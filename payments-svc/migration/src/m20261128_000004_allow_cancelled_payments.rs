use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            r#"
                -- CANCELLED: the order was cancelled (or compensated) before any charge. The row
                -- stays so UNIQUE (order_id) refuses a late charge for the order.
                ALTER TABLE payments DROP CONSTRAINT payments_status_check;
                ALTER TABLE payments ADD CONSTRAINT payments_status_check
                    CHECK (status IN ('CHARGED', 'DECLINED', 'REFUNDED', 'CANCELLED'));
                "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(manager, r#"ALTER TABLE payments DROP CONSTRAINT payments_status_check;
               ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('CHARGED', 'DECLINED', 'REFUNDED'));"#).await
    }
}
