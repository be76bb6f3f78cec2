//! Use cases, one file each. A use case is the business rule and nothing else: the runtime's
//! unit of work (`saga_runtime::unit_of_work`) opens the transaction, records a consumed event
//! in the inbox, writes what the use case returns to the outbox, commits and wakes the relay.
//!
//! - Consumed events: `fn(tx, saga_id, event) -> Reaction`, routed by `crate::messaging`.
//! - HTTP commands: a struct implementing `Command`, run by the HTTP layer.
//! - Reads: plain functions on the pool, in `queries.rs`.

mod cancel_order;
mod charge_order;
mod create_account;
mod queries;
mod refund_order;

pub use cancel_order::cancel_order;
pub use charge_order::{charge_order, charge_orders};
pub use create_account::CreateAccount;
pub use queries::{get_account, get_payment_of_order};
pub use refund_order::refund_order;

use saga_runtime::outbox::OutboxError;
use sea_orm::DbErr;
use uuid::Uuid;

use crate::domain::AccountError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Rejected(#[from] AccountError),
    #[error("customer_id={0} already has an account")]
    AccountExists(Uuid),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("payment_id={0} is charged but names no customer")]
    ChargedWithoutCustomer(Uuid),
    /// An order of a set charged together has a payment already: charge them one by one.
    #[error("an order has a payment already; the orders are charged one by one instead")]
    DecidedBefore,
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    KeyReused(#[from] saga_runtime::idempotency::KeyReused),
}
