//! inventory-svc's HTTP API. Handlers translate DTOs to use-case calls and back; `error.rs` is
//! the only place that knows status codes.

mod error;
mod products;

use std::sync::Arc;

use axum::Router;

use crate::service::InventoryService;

pub type AppState = Arc<InventoryService>;

pub fn router(state: AppState) -> Router {
    Router::new().merge(products::router()).with_state(state)
}
