//! The `products` table: the catalog and its stock.

use std::collections::HashMap;

use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, Statement,
    TryInsertResult,
};
use uuid::Uuid;

use super::entity::product;
use crate::domain::Product;

const RESERVE: &str = "UPDATE products SET available = available - $2, reserved = reserved + $2, updated_at = now() \
                       WHERE id = $1 AND available >= $2";
const RELEASE: &str = "UPDATE products SET available = available + $2, reserved = reserved - $2, updated_at = now() \
                       WHERE id = $1 AND reserved >= $2";

#[derive(Debug, FromQueryResult)]
struct AvailableRow {
    id: Uuid,
    available: i64,
}

/// Inserts a new product; returns false, changing nothing, if its SKU is taken.
pub async fn insert<C: ConnectionTrait>(db: &C, product: &Product) -> Result<bool, DbErr> {
    let now = chrono::Utc::now().fixed_offset();
    let inserted = product::Entity::insert(product::ActiveModel {
        id: Set(product.id),
        sku: Set(product.sku.clone()),
        name: Set(product.name.clone()),
        price_cents: Set(product.price_cents),
        available: Set(product.available),
        reserved: Set(product.reserved),
        attributes: Set(product.attributes.clone()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict_do_nothing_on([product::Column::Sku])
    .exec_without_returning(db)
    .await?;
    Ok(matches!(inserted, TryInsertResult::Inserted(1)))
}

pub async fn find<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Option<Product>, DbErr> {
    Ok(product::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(|row| Product {
            id: row.id,
            sku: row.sku,
            name: row.name,
            price_cents: row.price_cents,
            available: row.available,
            reserved: row.reserved,
            attributes: row.attributes,
        }))
}

/// Locks the products' rows in ID order and returns what each has available. Products
/// that do not exist are absent from the map.
pub async fn lock_available<C: ConnectionTrait>(
    db: &C,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, i64>, DbErr> {
    let rows = AvailableRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT id, available FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        [ids.to_vec().into()],
    ))
    .all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.id, row.available))
        .collect())
}

/// Moves `quantity` from available to reserved, only if that much is available; returns
/// whether it did. The condition in SQL keeps stock from going negative even if a caller
/// forgot to lock.
pub async fn reserve<C: ConnectionTrait>(db: &C, id: Uuid, quantity: i64) -> Result<bool, DbErr> {
    move_stock(db, RESERVE, id, quantity).await
}

/// Moves `quantity` back from reserved to available, only if that much is reserved.
pub async fn release<C: ConnectionTrait>(db: &C, id: Uuid, quantity: i64) -> Result<bool, DbErr> {
    move_stock(db, RELEASE, id, quantity).await
}

async fn move_stock<C: ConnectionTrait>(
    db: &C,
    sql: &str,
    id: Uuid,
    quantity: i64,
) -> Result<bool, DbErr> {
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [id.into(), quantity.into()],
        ))
        .await?;
    Ok(result.rows_affected() == 1)
}
