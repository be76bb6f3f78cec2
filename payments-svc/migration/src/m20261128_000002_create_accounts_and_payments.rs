use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(manager, r#"
                -- The CHECK is the last line of defence: no code path can overdraw an account.
                CREATE TABLE accounts (
                    customer_id    UUID PRIMARY KEY,
                    balance_cents  BIGINT NOT NULL CHECK (balance_cents >= 0),
                    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
                    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
                );

                -- One payment per order, ever: UNIQUE (order_id) makes a second charge of the
                -- same order impossible, whatever the consumer does.
                CREATE TABLE payments (
                    id             UUID PRIMARY KEY,
                    order_id       UUID NOT NULL UNIQUE,
                    saga_id        UUID NOT NULL,
                    customer_id    UUID NOT NULL,
                    amount_cents   BIGINT NOT NULL CHECK (amount_cents >= 0),
                    status         TEXT NOT NULL CHECK (status IN ('CHARGED', 'DECLINED', 'REFUNDED')),
                    reason         TEXT,
                    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
                    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
                );
                CREATE INDEX payments_customer ON payments (customer_id);
                "#).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(manager, "DROP TABLE payments; DROP TABLE accounts;").await
    }
}
