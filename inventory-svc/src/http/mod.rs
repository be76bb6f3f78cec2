//! inventory-svc's HTTP API. Handlers translate DTOs to use-case calls and back; `error.rs` is
//! the only place that knows status codes.

mod categories;
mod error;
mod products;
mod reservations;

use saga_runtime::auth::BearerScheme;
use saga_runtime::unit_of_work::UnitOfWork;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// Commands run in the unit of work; reads use its pool.
pub type AppState = UnitOfWork;

/// The document's heading; each route adds its own path from its handler.
#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerScheme),
    info(title = "inventory-svc", description = "Holds the products and their stock. In the saga it reserves an order's stock, or fails the reservation when the stock is short. Every error has the shape `{\"error\": {\"code\", \"message\"}}`."),
    tags(
        (name = "products", description = "The product catalog, for administrators"),
        (name = "reservations", description = "Orders' reservations, for their customers"),
        (name = "categories", description = "JSON Schemas of products' attributes, per category"),
        (name = "operations", description = "Parked events, retries and metrics"),
        (name = "health", description = "Probes"),
    )
)]
struct ApiDoc;

pub fn router(state: AppState) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(products::router())
        .merge(categories::router())
        .merge(reservations::router())
        .with_state(state)
}
