//! Use cases, one file each. Every command opens one transaction and shows its steps in order:
//! begin → inbox (for events) → domain → repository → outbox → commit → wake the relay.

mod create_product;
mod queries;
mod release_order;
mod reserve_order;

use saga_runtime::outbox::{OutboxError, OutboxSignal};
use sea_orm::{DatabaseConnection, DbErr};

use crate::domain::ProductError;
use crate::repo::{SeaOrmProductRepository, SeaOrmReservationRepository};

/// The service name carried in every event's `source`.
pub const SOURCE: &str = "inventory-svc";

/// inventory-svc's use cases over repositories `P` (products) and `R` (reservations).
pub struct InventoryService<P = SeaOrmProductRepository, R = SeaOrmReservationRepository> {
    db: DatabaseConnection,
    products: P,
    reservations: R,
    outbox_signal: OutboxSignal,
}

impl<P, R> InventoryService<P, R> {
    pub fn new(
        db: DatabaseConnection,
        products: P,
        reservations: R,
        outbox_signal: OutboxSignal,
    ) -> Self {
        Self {
            db,
            products,
            reservations,
            outbox_signal,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Rejected(#[from] ProductError),
    #[error("sku={0} already exists")]
    SkuTaken(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("product_id={0} lost stock while locked; the reservation was rolled back")]
    StockRace(uuid::Uuid),
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
}
