//! orders-svc's HTTP API. Handlers translate DTOs to use-case calls and back; `error.rs` is
//! the only place that knows status codes.

mod catalog;
mod error;
mod orders;

use axum::Router;
use saga_runtime::unit_of_work::UnitOfWork;

/// Commands run in the unit of work; reads use its pool.
pub type AppState = UnitOfWork;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(orders::router())
        .merge(catalog::router())
        .with_state(state)
}
