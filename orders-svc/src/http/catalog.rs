use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use saga_runtime::http::{ApiError, AppPath};
use serde::Serialize;
use uuid::Uuid;

use super::AppState;
use crate::service;

pub fn router() -> Router<AppState> {
    Router::new().route("/catalog/{product_id}", get(get_product))
}

/// orders-svc's replica of a product, as used to price orders.
#[derive(Debug, Serialize)]
pub struct CatalogProductResponse {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    /// When inventory-svc produced the version shown.
    pub source_time: DateTime<Utc>,
}

async fn get_product(
    State(state): State<AppState>,
    AppPath(product_id): AppPath<Uuid>,
) -> Result<Json<CatalogProductResponse>, ApiError> {
    let product = service::get_catalog_product(state.uow.db(), product_id).await?;
    Ok(Json(CatalogProductResponse {
        product_id: product.product_id,
        sku: product.sku,
        name: product.name,
        price_cents: product.price_cents,
        source_time: product.source_time,
    }))
}
