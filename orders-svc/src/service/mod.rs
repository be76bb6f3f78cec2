//! Use cases, one file each. Every command opens one transaction and shows its steps in order:
//! begin → inbox (for events) → domain → repository → outbox → commit → wake the relay.

mod cancel_expired;
mod finish_order;
mod on_product_upserted;
mod place_order;
mod queries;

use saga_runtime::outbox::{OutboxError, OutboxSignal};
use sea_orm::{DatabaseConnection, DbErr};

use crate::domain::PlaceOrderError;
use crate::repo::{SeaOrmCatalogRepository, SeaOrmOrderRepository};

pub use cancel_expired::CANCEL_BATCH;
pub use place_order::PlaceOrder;

/// The service name carried in every event's `source`.
pub const SOURCE: &str = "orders-svc";

/// orders-svc's use cases over repositories `O` (orders) and `C` (catalog replica).
pub struct OrdersService<O = SeaOrmOrderRepository, C = SeaOrmCatalogRepository> {
    db: DatabaseConnection,
    orders: O,
    catalog: C,
    outbox_signal: OutboxSignal,
}

impl<O, C> OrdersService<O, C> {
    pub fn new(db: DatabaseConnection, orders: O, catalog: C, outbox_signal: OutboxSignal) -> Self {
        Self {
            db,
            orders,
            catalog,
            outbox_signal,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Rejected(#[from] PlaceOrderError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
}
