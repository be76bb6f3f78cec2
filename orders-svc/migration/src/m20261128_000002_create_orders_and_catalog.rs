use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            r#"
                CREATE TABLE orders (
                    id              UUID PRIMARY KEY,
                    saga_id         UUID NOT NULL UNIQUE,
                    customer_id     UUID NOT NULL,
                    status          TEXT NOT NULL CHECK (status IN ('PENDING_PAYMENT', 'CONFIRMED',
                                        'FAILED_PAYMENT', 'FAILED_INVENTORY', 'CANCELLED')),
                    total_cents     BIGINT NOT NULL CHECK (total_cents >= 0),
                    failure_reason  TEXT,
                    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
                    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
                );
                CREATE INDEX orders_customer ON orders (customer_id);

                CREATE TABLE order_items (
                    order_id          UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
                    line_no           INT NOT NULL,
                    product_id        UUID NOT NULL,
                    quantity          INT NOT NULL CHECK (quantity > 0),
                    unit_price_cents  BIGINT NOT NULL CHECK (unit_price_cents >= 0),
                    PRIMARY KEY (order_id, line_no)
                );

                -- Replica of inventory-svc's catalog, fed by ProductUpserted events. Orders are
                -- priced from here; `source_time` keeps an older event from overwriting a newer.
                CREATE TABLE catalog_products (
                    product_id   UUID PRIMARY KEY,
                    sku          TEXT NOT NULL,
                    name         TEXT NOT NULL,
                    price_cents  BIGINT NOT NULL CHECK (price_cents >= 0),
                    source_time  TIMESTAMPTZ NOT NULL,
                    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
                );
                "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            "DROP TABLE order_items; DROP TABLE orders; DROP TABLE catalog_products;",
        )
        .await
    }
}
