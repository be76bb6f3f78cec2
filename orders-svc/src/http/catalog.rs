use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use saga_runtime::auth::{AuthRefusals, Caller};
use saga_runtime::http::{ApiError, AppPath, ErrorBody, PathRefusal, Unavailable};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::service;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_product))
}

/// orders-svc's replica of a product, as used to price orders.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogProductResponse {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub category: Option<String>,
    /// The product's flexible attributes, as inventory-svc last published them.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// When inventory-svc produced the version shown.
    pub source_time: DateTime<Utc>,
}

/// A product as orders-svc prices it: the last version inventory-svc published.
#[utoipa::path(get, path = "/catalog/{product_id}", tag = "catalog",
    security(("bearer" = [])),
    params(("product_id" = Uuid, Path, description = "inventory-svc's product ID")),
    responses(
        (status = 200, description = "The replicated product", body = CatalogProductResponse),
        PathRefusal,
        (status = 404, description = "No such product in the replica", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn get_product(
    _: Caller,
    State(state): State<AppState>,
    AppPath(product_id): AppPath<Uuid>,
) -> Result<Json<CatalogProductResponse>, ApiError> {
    let product = service::get_catalog_product(state.uow.db(), product_id).await?;
    Ok(Json(CatalogProductResponse {
        product_id: product.product_id,
        sku: product.sku,
        name: product.name,
        price_cents: product.price_cents,
        category: product.category,
        attributes: product.attributes,
        source_time: product.source_time,
    }))
}
