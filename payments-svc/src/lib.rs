//! payments-svc: charges customers for orders and refunds them when a later step fails.
//!
//! Reading order, following one `OrderCreated`:
//! - [`messaging`]: the consumed event → [`service::charge_order`].
//! - [`service`]: one file per use case, each the business rule alone; the runtime's unit
//!   of work owns the transaction.
//! - [`domain`]: accounts, payments, charge and refund rules, pure.
//! - [`repo`]: sea-orm queries, plain functions over any connection.
//! - [`http`]: `POST /accounts`, `GET /accounts/{customer_id}`.
//! - [`config`]: this service's defaults.
//!
//! [`build`] wires them to `saga_runtime`'s pool, relay and consumer.

pub mod config;
pub mod domain;
pub mod http;
pub mod messaging;
pub mod repo;
pub mod service;

use saga_runtime::config::CommonSettings;
use saga_runtime::service::{Application, Infrastructure, StartupError};

use crate::messaging::PaymentsEventHandler;

/// payments-svc wired to its infrastructure, ready to run.
pub type PaymentsApplication = Application<PaymentsEventHandler>;

/// Connects, migrates, binds and subscribes; `main` and the tests then run the result.
pub async fn build(settings: CommonSettings) -> Result<PaymentsApplication, StartupError> {
    let infra = Infrastructure::connect(settings).await?;
    infra.migrate::<payments_migration::Migrator>().await?;
    let routes = http::router(infra.unit_of_work());
    infra
        .application(routes, &messaging::TOPICS, PaymentsEventHandler)
        .await
}
