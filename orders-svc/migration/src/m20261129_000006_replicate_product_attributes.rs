use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            r#"
                -- The replica keeps a product's category and attributes too, so an order can
                -- show them. Products replicated before have none until their next version.
                ALTER TABLE catalog_products ADD COLUMN IF NOT EXISTS category TEXT;
                ALTER TABLE catalog_products
                    ADD COLUMN IF NOT EXISTS attributes JSONB NOT NULL DEFAULT '{}'::jsonb;
                "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            "ALTER TABLE catalog_products DROP COLUMN IF EXISTS attributes, DROP COLUMN IF EXISTS category;",
        )
        .await
    }
}
