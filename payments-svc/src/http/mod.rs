//! payments-svc's HTTP API. Handlers translate DTOs to use-case calls and back; `error.rs` is
//! the only place that knows status codes.

mod accounts;
mod error;

use std::sync::Arc;

use axum::Router;

use crate::service::PaymentsService;

pub type AppState = Arc<PaymentsService>;

pub fn router(state: AppState) -> Router {
    Router::new().merge(accounts::router()).with_state(state)
}
