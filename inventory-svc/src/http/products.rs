use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use saga_runtime::auth::{Admin, AuthRefusals};
use saga_runtime::http::{
    ApiError, AppJson, AppPath, AppQuery, BodyRefusals, ErrorBody, PathRefusal, Unavailable,
};
use saga_runtime::idempotency::{IdempotencyHeader, Idempotent, MaybeIdempotencyKey, Recorded};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::{NewProduct, Product, ProductChanges, valid_category_name};

use crate::service::{self, CreateProduct, ProductFilter, UpdateProduct};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_product, list_products))
        .routes(routes!(get_product, update_product))
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
    /// The category whose JSON Schema `attributes` must follow (`POST /categories/{name}/schema`).
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub category: Option<String>,
    /// Optional flexible attributes: any JSON object, checked by the category's schema.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

/// `PATCH /products/{id}`: each field given replaces the product's; stock moves only
/// through orders.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    #[schema(pattern = "\\S", min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(minimum = 0)]
    pub price_cents: Option<i64>,
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub category: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

fn optional_whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    saga_runtime::http::whole_number(deserializer).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductResponse {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub available: i64,
    pub reserved: i64,
    pub category: Option<String>,
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
            category: product.category,
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
                category: request.category,
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

/// Changes a product's name, price, category or attributes, and publishes the new version to
/// orders-svc's catalog. Attributes are judged by the category's schema.
#[utoipa::path(patch, path = "/products/{id}", tag = "products",
    security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "The product's ID")),
    request_body = UpdateProductRequest,
    responses(
        (status = 200, description = "The changed product", body = ProductResponse),
        PathRefusal,
        (status = 404, description = "No such product", body = ErrorBody),
        BodyRefusals,
        (status = 422, description = "A field is out of range, or the attributes break the \
            category's schema (`attributes_refused`, with each violation)", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn update_product(
    _: Admin,
    State(uow): State<AppState>,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<UpdateProductRequest>,
) -> Result<Json<ProductResponse>, ApiError> {
    let product = uow
        .run(UpdateProduct {
            id,
            changes: ProductChanges {
                name: request.name,
                price_cents: request.price_cents,
                category: request.category,
                attributes: request.attributes,
            },
        })
        .await?;
    Ok(Json(product.into()))
}

/// The most products one `GET /products` returns.
const MAX_LIST: u64 = 200;
/// The most `attr.*` filters one `GET /products` takes.
const MAX_ATTRIBUTE_FILTERS: usize = 10;

/// For the OpenAPI document: the parameters `GET /products` names. It also takes any number
/// (up to 10) of `attr.<name>=<value>`, which a schema cannot list.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ProductListParams {
    /// Only this category's products.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    category: Option<String>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    pub count: usize,
    pub products: Vec<ProductResponse>,
}

/// Products, newest first, filtered by category and by attributes:
/// `GET /products?category=shoes&attr.colour=red&attr.size=42` wants `attributes` to hold
/// `colour` = `"red"` and `size` = `42` (or `"42"`). The attribute filters are containment
/// tests served by a GIN index.
#[utoipa::path(get, path = "/products", tag = "products",
    security(("bearer" = ["admin"])),
    params(ProductListParams),
    responses(
        (status = 200, description = "The matching products", body = ProductList),
        (status = 400, description = "An unknown or malformed parameter", body = ErrorBody),
        (status = 422, description = "A bad `category`, `limit`, or too many `attr.*`", body = ErrorBody),
        AuthRefusals,
        Unavailable,
    ))]
async fn list_products(
    _: Admin,
    State(uow): State<AppState>,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Result<Json<ProductList>, ApiError> {
    let filter = product_filter(query)?;
    let products: Vec<ProductResponse> = service::list_products(uow.db(), &filter)
        .await?
        .into_iter()
        .map(ProductResponse::from)
        .collect();
    Ok(Json(ProductList {
        count: products.len(),
        products,
    }))
}

/// The filter the query's pairs spell; an unknown parameter is 400, a bad value 422.
fn product_filter(pairs: Vec<(String, String)>) -> Result<ProductFilter, ApiError> {
    let mut filter = ProductFilter {
        limit: 50,
        ..ProductFilter::default()
    };
    for (name, value) in pairs {
        if let Some(attribute) = name.strip_prefix("attr.") {
            if attribute.is_empty() {
                return Err(ApiError::unprocessable(
                    "invalid_filter",
                    "attr. needs a name",
                ));
            }
            filter.attributes.push((attribute.to_owned(), value));
            continue;
        }
        match name.as_str() {
            "category" if valid_category_name(&value) => filter.category = Some(value),
            "category" => {
                return Err(ApiError::unprocessable(
                    "invalid_category",
                    format!("category {value:?} is not a category name"),
                ));
            }
            "limit" => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=MAX_LIST).contains(limit))
                    .ok_or_else(|| {
                        ApiError::unprocessable(
                            "invalid_limit",
                            format!("limit must be 1..={MAX_LIST}"),
                        )
                    })?;
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("unknown parameter {other:?}: use category, limit or attr.<name>"),
                ));
            }
        }
    }
    if filter.attributes.len() > MAX_ATTRIBUTE_FILTERS {
        return Err(ApiError::unprocessable(
            "invalid_filter",
            format!("at most {MAX_ATTRIBUTE_FILTERS} attr.* filters"),
        ));
    }
    Ok(filter)
}
