//! orders-svc's HTTP API. Handlers translate DTOs to use-case calls and back; `error.rs` is
//! the only place that knows status codes.

mod catalog;
mod error;
mod orders;
mod sagas;
mod ui;

use std::sync::Arc;

use axum::Router;
use saga_runtime::group_commit::CommandQueue;
use saga_runtime::unit_of_work::UnitOfWork;

use crate::config::AdmissionSettings;
use crate::service::{InFlight, PlaceOrder};

/// Commands run in the unit of work; reads use its pool. New orders pass admission first.
#[derive(Debug, Clone)]
pub struct AppState {
    pub uow: UnitOfWork,
    /// `POST /orders` runs its command here, with the orders placed at the same time.
    pub place_orders: CommandQueue<PlaceOrder>,
    pub in_flight: Arc<InFlight>,
    pub admission: AdmissionSettings,
    /// The other services, whose parked events the explorer page shows.
    pub peers: crate::peers::Peers,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(orders::router())
        .merge(catalog::router())
        .merge(sagas::router())
        .merge(ui::router())
        .with_state(state)
}
