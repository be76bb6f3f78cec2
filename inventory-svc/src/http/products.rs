use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use saga_runtime::http::{ApiError, AppJson, AppPath};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use crate::domain::{NewProduct, Product};
use crate::service::{self, CreateProduct};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/products", post(create_product))
        .route("/products/{id}", get(get_product))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
    /// Optional flexible attributes: any JSON object.
    #[serde(default)]
    pub attributes: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct ProductResponse {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub available: i64,
    pub reserved: i64,
    pub attributes: serde_json::Value,
}

impl From<Product> for ProductResponse {
    fn from(product: Product) -> Self {
        Self {
            id: product.id,
            sku: product.sku,
            name: product.name,
            price_cents: product.price_cents,
            available: product.available,
            reserved: product.reserved,
            attributes: product.attributes,
        }
    }
}

async fn create_product(
    State(uow): State<AppState>,
    AppJson(request): AppJson<CreateProductRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let product = uow
        .run(CreateProduct(NewProduct {
            sku: request.sku,
            name: request.name,
            price_cents: request.price_cents,
            stock: request.stock,
            attributes: request.attributes,
        }))
        .await?;
    let location = format!("/products/{}", product.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ProductResponse::from(product)),
    ))
}

async fn get_product(
    State(uow): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<ProductResponse>, ApiError> {
    Ok(Json(service::get_product(uow.db(), id).await?.into()))
}
