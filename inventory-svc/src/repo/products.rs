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
        category: Set(product.category.clone()),
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
        .map(to_domain))
}

/// The product, its row locked until the transaction ends (for an update).
pub async fn find_for_update<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
) -> Result<Option<Product>, DbErr> {
    use sea_orm::QuerySelect;
    Ok(product::Entity::find_by_id(id)
        .lock(sea_orm::sea_query::LockType::Update)
        .one(db)
        .await?
        .map(to_domain))
}

fn to_domain(row: product::Model) -> Product {
    Product {
        id: row.id,
        sku: row.sku,
        name: row.name,
        price_cents: row.price_cents,
        available: row.available,
        reserved: row.reserved,
        category: row.category,
        attributes: row.attributes,
    }
}

/// Writes a changed product's name, price, category and attributes (stock moves apart).
pub async fn update_description<C: ConnectionTrait>(
    db: &C,
    product: &Product,
) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE products SET name = $2, price_cents = $3, category = $4, attributes = $5, \
         updated_at = now() WHERE id = $1",
        [
            product.id.into(),
            product.name.clone().into(),
            product.price_cents.into(),
            product.category.clone().into(),
            product.attributes.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// What `GET /products` filters on: a category, and attributes each equal to a value.
#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    pub category: Option<String>,
    /// `(name, value)`: the product's `attributes` hold `name` with this value, either as the
    /// JSON the text spells (`42`, `true`) or as the text itself (`"42"`).
    pub attributes: Vec<(String, String)>,
    pub limit: u64,
}

/// The products that match `filter`, newest first. Each attribute is a containment test
/// (`attributes @> {"name": value}`), which the GIN index on `attributes` serves.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    filter: &ProductFilter,
) -> Result<Vec<Product>, DbErr> {
    let mut sql = String::from("SELECT * FROM products WHERE true");
    let mut values: Vec<sea_orm::Value> = Vec::new();
    let mut bind = |value: sea_orm::Value| {
        values.push(value);
        format!("${}", values.len())
    };
    if let Some(category) = &filter.category {
        sql += &format!(" AND category = {}", bind(category.clone().into()));
    }
    for (name, value) in &filter.attributes {
        let as_text = bind(serde_json::json!({ name.as_str(): value }).into());
        let as_json = serde_json::from_str::<serde_json::Value>(value)
            .ok()
            .filter(|parsed| !parsed.is_string());
        sql += &match as_json {
            Some(parsed) => {
                let as_json = bind(serde_json::json!({ name.as_str(): parsed }).into());
                format!(" AND (attributes @> {as_text} OR attributes @> {as_json})")
            }
            None => format!(" AND attributes @> {as_text}"),
        };
    }
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    sql += &format!(" ORDER BY id DESC LIMIT {}", bind(limit.into()));
    Ok(product::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect())
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

/// Moves each `(product, quantity)` from available to reserved in one statement, only where
/// that much is available; says how many products it moved (one row each: give each product
/// once).
pub async fn reserve_all<C: ConnectionTrait>(
    db: &C,
    quantities: &[(Uuid, i64)],
) -> Result<usize, DbErr> {
    if quantities.is_empty() {
        return Ok(0);
    }
    let (ids, amounts): (Vec<Uuid>, Vec<i64>) = quantities.iter().copied().unzip();
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE products SET available = available - given.quantity, \
                 reserved = reserved + given.quantity, updated_at = now() \
             FROM unnest($1::uuid[], $2::int8[]) AS given (id, quantity) \
             WHERE products.id = given.id AND products.available >= given.quantity",
            [ids.into(), amounts.into()],
        ))
        .await?;
    Ok(usize::try_from(result.rows_affected()).unwrap_or(usize::MAX))
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
