use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(manager, r#"
                -- `available` is what can still be reserved; `reserved` is held for orders.
                -- The CHECKs make negative stock impossible whatever the code does.
                -- `attributes` holds the product's flexible, per-category document.
                CREATE TABLE products (
                    id           UUID PRIMARY KEY,
                    sku          TEXT NOT NULL UNIQUE,
                    name         TEXT NOT NULL,
                    price_cents  BIGINT NOT NULL CHECK (price_cents >= 0),
                    available    BIGINT NOT NULL CHECK (available >= 0),
                    reserved     BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
                    attributes   JSONB NOT NULL DEFAULT '{}'::jsonb,
                    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
                    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
                );

                -- One reservation decision per order, ever: a redelivered PaymentSucceeded
                -- finds it and reserves nothing twice.
                CREATE TABLE reservations (
                    order_id    UUID PRIMARY KEY,
                    saga_id     UUID NOT NULL,
                    status      TEXT NOT NULL CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED')),
                    lines       JSONB NOT NULL,
                    reason      TEXT,
                    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
                    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
                );
                "#).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(manager, "DROP TABLE reservations; DROP TABLE products;").await
    }
}
