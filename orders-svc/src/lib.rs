//! orders-svc: takes orders over HTTP, starts one saga per order and records how it ends.
//!
//! Reading order, following one order:
//! - [`http`]: `POST /orders` → DTO → [`service::OrdersService::place_order`].
//! - [`service`]: one file per use case; each owns its transaction.
//! - [`domain`]: the order state machine, pure.
//! - [`repo`]: sea-orm repositories behind traits.
//! - [`messaging`]: which consumed event calls which use case.
//! - [`config`]: settings from the environment.
//!
//! [`build`] wires them to `saga_runtime`'s pool, relay and consumer.

pub mod config;
pub mod domain;
pub mod http;
pub mod messaging;
pub mod repo;
pub mod service;

use std::sync::Arc;

use saga_runtime::config::CommonSettings;
use saga_runtime::service::{Application, Infrastructure, StartupError};
use sea_orm_migration::MigratorTrait;

use crate::messaging::OrdersEventHandler;
use crate::repo::{SeaOrmCatalogRepository, SeaOrmOrderRepository};
use crate::service::OrdersService;

/// orders-svc wired to its infrastructure, ready to run.
pub type OrdersApplication =
    Application<OrdersEventHandler<SeaOrmOrderRepository, SeaOrmCatalogRepository>>;

/// Connects, migrates, binds and subscribes; `main` and the tests then run the result.
pub async fn build(settings: CommonSettings) -> Result<OrdersApplication, StartupError> {
    let infra = Infrastructure::connect(settings).await?;
    orders_migration::Migrator::up(&infra.db, None)
        .await
        .map_err(StartupError::Migration)?;
    let service = Arc::new(OrdersService::new(
        infra.db.clone(),
        SeaOrmOrderRepository,
        SeaOrmCatalogRepository,
        infra.outbox_signal.clone(),
    ));
    let handler = OrdersEventHandler {
        service: Arc::clone(&service),
    };
    infra
        .application(http::router(service), &messaging::TOPICS, handler)
        .await
}
