use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            r#"
                -- One JSON Schema per category, for its products' attributes, with how it is
                -- applied (see the domain's category module).
                CREATE TABLE IF NOT EXISTS categories (
                    name               TEXT PRIMARY KEY,
                    schema             JSONB NOT NULL,
                    validation_level   TEXT NOT NULL CHECK (validation_level IN ('strict', 'moderate')),
                    validation_action  TEXT NOT NULL CHECK (validation_action IN ('error', 'warn')),
                    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
                );
                -- A product may name a category before the category has a schema: its
                -- attributes are then free-form, so this is no foreign key.
                ALTER TABLE products ADD COLUMN IF NOT EXISTS category TEXT;
                CREATE INDEX IF NOT EXISTS products_by_category ON products (category);
                -- `GET /products?attr.<name>=<value>` is containment (@>), which this serves.
                CREATE INDEX IF NOT EXISTS products_by_attributes
                    ON products USING GIN (attributes jsonb_path_ops);
                "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            "DROP INDEX IF EXISTS products_by_attributes; DROP INDEX IF EXISTS products_by_category;
             ALTER TABLE products DROP COLUMN IF EXISTS category; DROP TABLE IF EXISTS categories;",
        )
        .await
    }
}
