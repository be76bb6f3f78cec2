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
use tokio_util::sync::CancellationToken;

use crate::messaging::OrdersEventHandler;
use crate::repo::{SeaOrmCatalogRepository, SeaOrmOrderRepository};
use crate::service::OrdersService;

/// orders-svc wired to its infrastructure, ready to run.
pub type OrdersApplication =
    Application<OrdersEventHandler<SeaOrmOrderRepository, SeaOrmCatalogRepository>>;

/// Connects, migrates, binds and subscribes; `main` and the tests then run the result.
pub async fn build(settings: CommonSettings) -> Result<OrdersApplication, StartupError> {
    let deadline = config::DeadlineSettings::from_env()?;
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
    let app = infra
        .application(
            http::router(Arc::clone(&service)),
            &messaging::TOPICS,
            handler,
        )
        .await?;
    Ok(app.with_background(Box::new(move |stop| {
        Box::pin(deadline_job(service, deadline, stop))
    })))
}

/// Cancels expired sagas every `scan_interval` until `stop`.
async fn deadline_job(
    service: Arc<OrdersService>,
    settings: config::DeadlineSettings,
    stop: CancellationToken,
) {
    loop {
        match service.cancel_expired_orders(settings.deadline).await {
            // A full batch may mean more are waiting: go again at once.
            Ok(cancelled) if cancelled as u64 >= service::CANCEL_BATCH => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "saga deadline scan failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(settings.scan_interval) => {}
            () = stop.cancelled() => return,
        }
    }
}
