use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use saga_runtime::auth::{Admin, AuthRefusals};
use saga_runtime::http::{
    ApiError, AppJson, AppPath, BodyRefusals, ErrorBody, PathRefusal, Unavailable,
};
use saga_runtime::idempotency::{IdempotencyHeader, Idempotent, MaybeIdempotencyKey, Recorded};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::{NewProduct, Product};
use crate::service::{self, CreateProduct};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_product))
        .routes(routes!(get_product))
}

/// Serialized, it is the request an `Idempotency-Key` is checked against.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    /// Letters, digits, `-`, `_` and `.`; unique.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub sku: String,
    /// At most 200 characters, not all of them spaces.
    #[schema(pattern = "\\S", min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(deserialize_with = "saga_runtime::http::whole_number")]
    #[schema(minimum = 0)]
    pub price_cents: i64,
    /// The opening stock, all of it available.
    #[serde(deserialize_with = "saga_runtime::http::whole_number")]
    #[schema(minimum = 0)]
    pub stock: i64,
    /// Optional flexible attributes: any JSON object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductResponse {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub available: i64,
    pub reserved: i64,
    #[schema(value_type = Object)]
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

/// Adds a product with its opening stock, and publishes it to orders-svc's catalog.
#[utoipa::path(post, path = "/products", tag = "products",
    security(("bearer" = ["admin"])),
    params(IdempotencyHeader),
    request_body = CreateProductRequest,
    responses(
        (status = 201, description = "Product created", body = ProductResponse,
            headers(
                ("Location" = String, description = "`/products/{id}`"),
                ("Idempotent-Replayed" = Option<bool>, description = "`true` on a replay"),
            )),
        (status = 409, description = "The SKU is taken", body = ErrorBody),
        BodyRefusals,
        (status = 422, description = "A field is missing or out of range, or the \
            `Idempotency-Key` was used for another request", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn create_product(
    _: Admin,
    State(uow): State<AppState>,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    AppJson(request): AppJson<CreateProductRequest>,
) -> Result<Response, ApiError> {
    let key = key.map(|key| key.for_request("POST /products", &request));
    let done = uow
        .run(Idempotent {
            key,
            command: CreateProduct(NewProduct {
                sku: request.sku,
                name: request.name,
                price_cents: request.price_cents,
                stock: request.stock,
                attributes: request.attributes,
            }),
            respond: created,
        })
        .await?;
    Ok(done.respond())
}

/// `201 Created`, as it is recorded for the request's `Idempotency-Key`.
fn created(product: &Product) -> Recorded {
    Recorded::at(
        StatusCode::CREATED,
        format!("/products/{}", product.id),
        &ProductResponse::from(product.clone()),
    )
}

/// A product, its price and its stock.
#[utoipa::path(get, path = "/products/{id}", tag = "products",
    security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "The product's ID")),
    responses(
        (status = 200, description = "The product", body = ProductResponse),
        PathRefusal,
        (status = 404, description = "No such product", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn get_product(
    _: Admin,
    State(uow): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<ProductResponse>, ApiError> {
    Ok(Json(service::get_product(uow.db(), id).await?.into()))
}
