use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(
            manager,
            r#"
                -- The admission bound in force, one for the whole service: every instance adopts
                -- it at each recount, and at most one moves it per window. No row: each
                -- instance's ceiling (ORDERS_MAX_IN_FLIGHT).
                CREATE TABLE admission_bound (
                    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
                    bound      bigint NOT NULL CHECK (bound > 0),
                    stepped_at timestamptz NOT NULL
                );
                "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        saga_schema::execute(manager, r#"DROP TABLE admission_bound;"#).await
    }
}
