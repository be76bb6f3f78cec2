//! payments-svc's HTTP API. Handlers translate DTOs to use-case calls and back; `error.rs` is
//! the only place that knows status codes.

mod accounts;
mod error;
mod payments;

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
    info(title = "payments-svc", description = "Holds the customers' balances. In the saga it charges an order (or declines it), and refunds the charge when the stock is short. Every error has the shape `{\"error\": {\"code\", \"message\"}}`."),
    tags(
        (name = "accounts", description = "Customer accounts, for administrators"),
        (name = "payments", description = "Orders' payments, for their customers"),
        (name = "operations", description = "Parked events, retries and metrics"),
        (name = "health", description = "Probes"),
    )
)]
struct ApiDoc;

pub fn router(state: AppState) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::router())
        .merge(payments::router())
        .with_state(state)
}
