//! Use cases, one file each. Every command opens one transaction and shows its steps in order:
//! begin → inbox (for events) → domain → repository → outbox → commit → wake the relay.

mod cancel_order;
mod charge_order;
mod create_account;
mod queries;
mod refund_order;

use saga_runtime::outbox::{OutboxError, OutboxSignal};
use sea_orm::{DatabaseConnection, DbErr};

use crate::domain::AccountError;
use crate::repo::{SeaOrmAccountRepository, SeaOrmPaymentRepository};

/// The service name carried in every event's `source`.
pub const SOURCE: &str = "payments-svc";

/// payments-svc's use cases over repositories `A` (accounts) and `P` (payments).
pub struct PaymentsService<A = SeaOrmAccountRepository, P = SeaOrmPaymentRepository> {
    db: DatabaseConnection,
    accounts: A,
    payments: P,
    outbox_signal: OutboxSignal,
}

impl<A, P> PaymentsService<A, P> {
    pub fn new(
        db: DatabaseConnection,
        accounts: A,
        payments: P,
        outbox_signal: OutboxSignal,
    ) -> Self {
        Self {
            db,
            accounts,
            payments,
            outbox_signal,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Rejected(#[from] AccountError),
    #[error("customer_id={0} already has an account")]
    AccountExists(uuid::Uuid),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
}
