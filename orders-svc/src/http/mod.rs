//! orders-svc's HTTP API. Handlers translate DTOs to use-case calls and back; `error.rs` is
//! the only place that knows status codes.

mod catalog;
mod error;
mod orders;

use std::sync::Arc;

use axum::Router;

use crate::service::OrdersService;

pub type AppState = Arc<OrdersService>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(orders::router())
        .merge(catalog::router())
        .with_state(state)
}
