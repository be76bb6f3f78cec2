//! inventory-svc: owns the product catalog and its stock, and reserves stock for paid orders.
//!
//! Reading order, following one `PaymentSucceeded`:
//! - [`messaging`]: the consumed event → [`service::reserve_order`].
//! - [`service`]: one file per use case, each the business rule alone; the runtime's unit
//!   of work owns the transaction.
//! - [`domain`]: products and the all-or-nothing reservation rule, pure.
//! - [`repo`]: sea-orm queries, plain functions over any connection.
//! - [`http`]: `POST /products`, `GET /products/{id}`.
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

use crate::messaging::InventoryEventHandler;

/// inventory-svc wired to its infrastructure, ready to run.
pub type InventoryApplication = Application<InventoryEventHandler>;

/// Connects, migrates, binds and subscribes; `main` and the tests then run the result.
pub async fn build(settings: CommonSettings) -> Result<InventoryApplication, StartupError> {
    let infra = Infrastructure::connect(settings).await?;
    infra.migrate::<inventory_migration::Migrator>().await?;
    let routes = http::router(infra.unit_of_work());
    infra
        .application(routes, &messaging::TOPICS, InventoryEventHandler)
        .await
}
