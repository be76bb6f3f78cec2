//! orders-svc's HTTP API. Handlers translate DTOs to use-case calls and back; `error.rs` is
//! the only place that knows status codes.

mod catalog;
mod error;
mod orders;
mod sagas;
mod ui;

use std::sync::Arc;

use saga_runtime::group_commit::CommandQueue;
use saga_runtime::idempotency::Idempotent;
use saga_runtime::unit_of_work::UnitOfWork;

use saga_runtime::auth::BearerScheme;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::AdmissionSettings;
use crate::service::{InFlight, PlaceOrder};

/// Commands run in the unit of work; reads use its pool. New orders pass admission first.
#[derive(Debug, Clone)]
pub struct AppState {
    pub uow: UnitOfWork,
    /// `POST /orders` runs its command here, with the orders placed at the same time.
    pub place_orders: CommandQueue<Idempotent<PlaceOrder>>,
    pub in_flight: Arc<InFlight>,
    pub admission: AdmissionSettings,
    /// The other services, whose parked events the explorer page shows.
    pub peers: crate::peers::Peers,
}

/// The document's heading; each route adds its own path from its handler.
#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerScheme),
    info(
        title = "orders-svc",
        description = "Places orders and starts one saga per order: payments-svc charges the \
            customer, inventory-svc reserves the stock, and the order ends CONFIRMED or failed. \
            Every error has the shape `{\"error\": {\"code\", \"message\"}}`."
    ),
    tags(
        (name = "orders", description = "The public API"),
        (name = "catalog", description = "orders-svc's replica of inventory-svc's products"),
        (name = "sagas", description = "Saga timelines, for operators"),
        (name = "operations", description = "Parked events, retries and metrics"),
        (name = "health", description = "Probes"),
        (name = "explorer", description = "The saga explorer's HTML pages"),
    )
)]
struct ApiDoc;

pub fn router(state: AppState) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(orders::router())
        .merge(catalog::router())
        .merge(sagas::router())
        .merge(ui::router())
        .with_state(state)
}
