//! The `catalog_products` table: orders-svc's replica of inventory-svc's catalog, fed by
//! `ProductUpserted` events and used to price orders.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, Statement,
};
use uuid::Uuid;

use super::entity::catalog_product;
use crate::domain::PricedProduct;

/// orders-svc's replica of one inventory product.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogProduct {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub category: Option<String>,
    /// The product's flexible attributes, as inventory-svc last published them.
    pub attributes: serde_json::Value,
    /// When inventory-svc produced the version held here.
    pub source_time: DateTime<Utc>,
}

pub async fn prices<C: ConnectionTrait>(
    db: &C,
    product_ids: &[Uuid],
) -> Result<HashMap<Uuid, PricedProduct>, DbErr> {
    Ok(rows_of(db, product_ids)
        .await?
        .into_iter()
        .map(|row| {
            (
                row.product_id,
                PricedProduct {
                    product_id: row.product_id,
                    price_cents: row.price_cents,
                },
            )
        })
        .collect())
}

pub async fn find<C: ConnectionTrait>(
    db: &C,
    product_id: Uuid,
) -> Result<Option<CatalogProduct>, DbErr> {
    Ok(catalog_product::Entity::find_by_id(product_id)
        .one(db)
        .await?
        .map(|row| CatalogProduct {
            product_id: row.product_id,
            sku: row.sku,
            name: row.name,
            price_cents: row.price_cents,
            category: row.category,
            attributes: row.attributes,
            source_time: row.source_time.with_timezone(&Utc),
        }))
}

/// Stores `product` unless the replica already holds a newer version of it.
pub async fn upsert<C: ConnectionTrait>(db: &C, product: &CatalogProduct) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO catalog_products \
             (product_id, sku, name, price_cents, source_time, category, attributes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (product_id) DO UPDATE \
         SET sku = EXCLUDED.sku, name = EXCLUDED.name, price_cents = EXCLUDED.price_cents, \
             source_time = EXCLUDED.source_time, category = EXCLUDED.category, \
             attributes = EXCLUDED.attributes, updated_at = now() \
         WHERE catalog_products.source_time <= EXCLUDED.source_time",
        [
            product.product_id.into(),
            product.sku.clone().into(),
            product.name.clone().into(),
            product.price_cents.into(),
            product.source_time.into(),
            product.category.clone().into(),
            product.attributes.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The attributes of each of `product_ids` that the replica holds.
pub async fn attributes<C: ConnectionTrait>(
    db: &C,
    product_ids: &[Uuid],
) -> Result<HashMap<Uuid, serde_json::Value>, DbErr> {
    Ok(rows_of(db, product_ids)
        .await?
        .into_iter()
        .map(|row| (row.product_id, row.attributes))
        .collect())
}

/// The replica's rows of `product_ids` (those it holds).
async fn rows_of<C: ConnectionTrait>(
    db: &C,
    product_ids: &[Uuid],
) -> Result<Vec<catalog_product::Model>, DbErr> {
    catalog_product::Entity::find()
        .filter(catalog_product::Column::ProductId.is_in(product_ids.iter().copied()))
        .all(db)
        .await
}
