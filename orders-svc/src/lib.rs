//! orders-svc: takes orders over HTTP, starts one saga per order and records how it ends.
//!
//! Reading order, following one order:
//! - [`http`]: `POST /orders` → DTO → [`service::PlaceOrder`], run in the unit of work.
//! - [`service`]: one file per use case, each the business rule alone; the runtime's unit
//!   of work owns the transaction.
//! - [`domain`]: the order state machine, pure.
//! - [`repo`]: sea-orm queries, plain functions over any connection.
//! - [`messaging`]: which consumed event calls which use case.
//! - [`peers`]: the other services' operator endpoints, for the explorer page.
//! - [`config`]: settings from the environment.
//!
//! [`build`] wires them to `saga_runtime`'s pool, relay and consumer.

pub mod config;
pub mod domain;
pub mod http;
pub mod messaging;
pub mod peers;
pub mod repo;
pub mod service;

use std::sync::Arc;

use saga_runtime::config::CommonSettings;
use saga_runtime::group_commit::CommandQueue;
use saga_runtime::retention;
use saga_runtime::service::{Application, Infrastructure, StartupError};
use saga_runtime::unit_of_work::UnitOfWork;
use tokio_util::sync::CancellationToken;

use crate::messaging::OrdersEventHandler;
use crate::service::{CANCEL_BATCH, CancelExpiredOrders, InFlight};

/// orders-svc wired to its infrastructure, ready to run.
pub type OrdersApplication = Application<OrdersEventHandler>;

/// Connects, migrates, binds and subscribes; `main` and the tests then run the result.
pub async fn build(settings: CommonSettings) -> Result<OrdersApplication, StartupError> {
    let deadline = config::DeadlineSettings::from_env()?;
    let admission = config::AdmissionSettings::from_env()?;
    let placement = config::PlacementSettings::from_env()?;
    let view = config::SagaViewSettings::from_env()?;
    let peers = peers::Peers::new(&config::PeerSettings::from_env()?);
    // Every saga begins and ends here, so orders-svc keeps the saga view.
    let infra = Infrastructure::connect(settings).await?.with_saga_view();
    let retention = infra.settings.retention;
    infra.migrate::<orders_migration::Migrator>().await?;
    let uow = infra.unit_of_work();
    let in_flight = InFlight::with_target_wait(admission.max_in_flight, admission.target_wait);
    let state = http::AppState {
        uow: uow.clone(),
        place_orders: CommandQueue::start(uow.clone(), placement.max_batch, placement.concurrency),
        in_flight: Arc::clone(&in_flight),
        admission,
        peers,
    };
    let app = infra
        .application(
            http::router(state),
            &messaging::TOPICS,
            OrdersEventHandler::new(Arc::clone(&in_flight)),
        )
        .await?;
    let db = uow.db().clone();
    let view_db = db.clone();
    let recount_interval = admission.recount_interval;
    let expiring_view = retention::Expiring {
        table: "saga_events",
        key: "event_id",
        age_column: "occurred_at",
        retention: view.retention,
        deleted: &saga_runtime::metrics::SAGA_VIEW_EXPIRED,
    };
    Ok(app
        .with_background(Box::new(move |stop| {
            Box::pin(deadline_job(uow, deadline, stop))
        }))
        .with_background(Box::new(move |stop| {
            Box::pin(retention::run_for(view_db, expiring_view, retention, stop))
        }))
        .with_background(Box::new(move |stop| {
            Box::pin(recount_job(db, in_flight, recount_interval, stop))
        })))
}

/// Every `scan_interval` until `stop`: cancels expired sagas.
async fn deadline_job(
    uow: UnitOfWork,
    settings: config::DeadlineSettings,
    stop: CancellationToken,
) {
    let scan = CancelExpiredOrders {
        deadline: settings.deadline,
    };
    loop {
        match uow.run(scan).await {
            // A full batch may mean more are waiting: go again at once.
            Ok(cancelled) if cancelled as u64 >= CANCEL_BATCH => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "saga deadline scan failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(settings.scan_interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Every `interval` until `stop`: takes the admission count and the service's admission limit
/// from the database, where every instance's orders are (one count over the index of
/// unfinished orders), and once a window has passed moves the limit by the sagas finished here.
async fn recount_job(
    db: sea_orm::DatabaseConnection,
    in_flight: Arc<InFlight>,
    interval: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        match service::recount_in_flight(&db, &in_flight).await {
            Ok(counted) => {
                #[allow(clippy::cast_precision_loss)]
                saga_runtime::metrics::ADMISSION_LIMIT.set_with(in_flight.limit() as f64, &[]);
                // The one status a saga in flight has; finished sagas are counted by outcome
                // in `saga_duration_seconds_count`.
                #[allow(clippy::cast_precision_loss)]
                saga_runtime::metrics::SAGAS.set_with(
                    counted as f64,
                    &[("status", domain::OrderStatus::OPEN.to_string())],
                );
            }
            Err(error) => tracing::warn!(%error, "in-flight recount failed; keeping the count"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}
