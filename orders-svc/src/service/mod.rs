//! Use cases, one file each. A use case is the business rule and nothing else: the runtime's
//! unit of work (`saga_runtime::unit_of_work`) opens the transaction, records a consumed event
//! in the inbox, writes what the use case returns to the outbox, commits and wakes the relay.
//!
//! - Consumed events: `fn(tx, …, event) -> Reaction`, routed by `crate::messaging`.
//! - HTTP commands and the deadline job: structs implementing `Command`.
//! - Reads: plain functions on the pool, in `queries.rs`.

mod admission;
mod cancel_expired;
mod finish_order;
mod on_product_upserted;
mod place_order;
mod queries;

pub use admission::{Admission, InFlight, Overloaded, recount_in_flight};
pub use cancel_expired::{CANCEL_BATCH, CancelExpiredOrders};
pub use finish_order::{Finish, finish_order, finish_orders};
pub use on_product_upserted::on_product_upserted;
pub use place_order::PlaceOrder;
pub use queries::{SagaDetail, get_catalog_product, get_order, get_saga, product_attributes};

use saga_runtime::outbox::OutboxError;
use sea_orm::DbErr;

use crate::domain::PlaceOrderError;

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
    #[error(transparent)]
    KeyReused(#[from] saga_runtime::idempotency::KeyReused),
    /// A compare-and-set missed an order that is open: a concurrent transaction held it and
    /// rolled back. Applying the event again will succeed.
    #[error("order_id={0} changed status while the saga's outcome was applied")]
    Raced(uuid::Uuid),
    /// An order of a set finished together was not open, or was named twice: finish them one
    /// by one.
    #[error("an order is not open or is named twice; the orders are finished one by one instead")]
    NotAllOpen,
}

/// Records how long a saga took, by its outcome, in `saga_duration_seconds`. Called inside
/// the transaction that finishes the order: if that transaction rolls back and the event is
/// applied again, the saga is counted twice, which a latency histogram can bear.
fn observe_saga_duration(outcome: crate::domain::OrderStatus, took: std::time::Duration) {
    let outcome: &'static str = outcome.into();
    saga_runtime::metrics::observe(
        &saga_runtime::metrics::SAGA_DURATION,
        took,
        &[("outcome", outcome.to_owned())],
    );
}
