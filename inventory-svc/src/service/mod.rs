//! Use cases, one file each. A use case is the business rule and nothing else: the runtime's
//! unit of work (`saga_runtime::unit_of_work`) opens the transaction, records a consumed event
//! in the inbox, writes what the use case returns to the outbox, commits and wakes the relay.
//!
//! - Consumed events: `fn(tx, saga_id, event) -> Reaction`, routed by `crate::messaging`.
//! - HTTP commands: a struct implementing `Command`, run by the HTTP layer.
//! - Reads: plain functions on the pool, in `queries.rs`.

mod categories;
mod create_product;
mod queries;
mod release_order;
mod reserve_order;
mod update_product;

pub use categories::{SetCategorySchema, get_category};
pub use create_product::CreateProduct;
pub use queries::{get_product, get_reservation, list_products};
pub use update_product::UpdateProduct;

/// What `GET /products` selects by: its query, as the read takes it.
pub use crate::repo::products::ProductFilter;
pub use release_order::release_order;
pub use reserve_order::{reserve_order, reserve_orders};

use saga_runtime::outbox::OutboxError;
use sea_orm::DbErr;

use crate::domain::{CategoryError, ProductError};

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
    /// An order of a set reserved together has a decision already: reserve them one by one.
    #[error(
        "an order has a reservation decision already; the orders are reserved one by one instead"
    )]
    DecidedBefore,
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    KeyReused(#[from] saga_runtime::idempotency::KeyReused),
    #[error(transparent)]
    InvalidCategory(#[from] CategoryError),
    #[error("attributes break the schema of category {category}: {}", violations.join("; "))]
    AttributesRefused {
        category: String,
        violations: Vec<String>,
    },
}
