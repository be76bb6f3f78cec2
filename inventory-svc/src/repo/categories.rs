//! The `categories` table: one JSON Schema per category, for its products' attributes.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement};

use crate::domain::Category;

/// Sets the category's schema, replacing any it had.
pub async fn upsert<C: ConnectionTrait>(db: &C, category: &Category) -> Result<(), DbErr> {
    let level: &'static str = category.level.into();
    let action: &'static str = category.action.into();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO categories (name, schema, validation_level, validation_action) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET schema = EXCLUDED.schema, \
             validation_level = EXCLUDED.validation_level, \
             validation_action = EXCLUDED.validation_action, updated_at = now()",
        [
            category.name.clone().into(),
            category.schema.clone().into(),
            level.into(),
            action.into(),
        ],
    ))
    .await?;
    Ok(())
}

#[derive(Debug, FromQueryResult)]
struct CategoryRow {
    name: String,
    schema: serde_json::Value,
    validation_level: String,
    validation_action: String,
}

pub async fn find<C: ConnectionTrait>(db: &C, name: &str) -> Result<Option<Category>, DbErr> {
    let row = CategoryRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT name, schema, validation_level, validation_action FROM categories WHERE name = $1",
        [name.into()],
    ))
    .one(db)
    .await?;
    row.map(|row| {
        let unreadable =
            |what: &str| DbErr::Custom(format!("category {}: unknown {what}", row.name));
        Ok(Category {
            level: row
                .validation_level
                .parse()
                .map_err(|_| unreadable("level"))?,
            action: row
                .validation_action
                .parse()
                .map_err(|_| unreadable("action"))?,
            name: row.name,
            schema: row.schema,
        })
    })
    .transpose()
}
