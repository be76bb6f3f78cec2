//! payments-svc against a real PostgreSQL: each test gets a fresh, migrated database.

use std::sync::Arc;

use payments_migration::Migrator;
use payments_svc::repo::{SeaOrmAccountRepository, SeaOrmPaymentRepository};
use payments_svc::service::{PaymentsService, ServiceError};
use saga_runtime::outbox::OutboxSignal;
use saga_runtime::testing;
use sea_orm::DatabaseConnection;
use shared_events::{Envelope, InventoryReservationFailed, OrderCreated, OrderLine, SagaEvent};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn service() -> Result<(DatabaseConnection, PaymentsService), sea_orm::DbErr> {
    let db = testing::migrated_database::<Migrator>("payments_svc", "payments").await?;
    let service = PaymentsService::new(
        db.clone(),
        SeaOrmAccountRepository,
        SeaOrmPaymentRepository,
        OutboxSignal::default(),
    );
    Ok((db, service))
}

fn order_created(customer_id: Uuid, total_cents: i64) -> (Envelope, OrderCreated) {
    let order = OrderCreated {
        order_id: Uuid::now_v7(),
        customer_id,
        total_cents,
        items: vec![OrderLine {
            product_id: Uuid::now_v7(),
            quantity: 1,
            unit_price_cents: total_cents,
        }],
    };
    (
        Envelope::new(
            "orders-svc",
            Some(Uuid::now_v7()),
            SagaEvent::OrderCreated(order.clone()),
        ),
        order,
    )
}

fn reservation_failed(saga: &Envelope, order_id: Uuid) -> (Envelope, InventoryReservationFailed) {
    let failure = InventoryReservationFailed {
        order_id,
        product_id: Uuid::now_v7(),
        reason: "out of stock".into(),
    };
    (
        Envelope::new(
            "inventory-svc",
            saga.sagaid,
            SagaEvent::InventoryReservationFailed(failure.clone()),
        ),
        failure,
    )
}

#[tokio::test]
async fn a_covered_order_is_charged_once_even_when_its_event_repeats() -> TestResult {
    let (db, service) = service().await?;
    let customer = Uuid::now_v7();
    service.create_account(customer, 10_000).await?;
    let (event, order) = order_created(customer, 2_500);

    service.charge_order(&event, &order).await?;
    service.charge_order(&event, &order).await?;
    // The same order under a new event ID (a producer bug) must not be charged either.
    let again = Envelope::new("orders-svc", event.sagaid, event.event.clone());
    service.charge_order(&again, &order).await?;

    assert_eq!(service.get_account(customer).await?.balance_cents, 7_500);
    assert_eq!(
        testing::outbox_event_types(&db).await?,
        ["PaymentSucceeded"]
    );
    Ok(())
}

#[tokio::test]
async fn an_uncovered_order_is_declined_without_touching_the_balance() -> TestResult {
    let (db, service) = service().await?;
    let customer = Uuid::now_v7();
    service.create_account(customer, 1_000).await?;
    let (event, order) = order_created(customer, 1_001);
    service.charge_order(&event, &order).await?;

    assert_eq!(service.get_account(customer).await?.balance_cents, 1_000);
    assert_eq!(testing::outbox_event_types(&db).await?, ["PaymentFailed"]);
    Ok(())
}

#[tokio::test]
async fn the_refund_compensation_is_idempotent() -> TestResult {
    let (db, service) = service().await?;
    let customer = Uuid::now_v7();
    service.create_account(customer, 5_000).await?;
    let (event, order) = order_created(customer, 3_000);
    service.charge_order(&event, &order).await?;
    let (failed, failure) = reservation_failed(&event, order.order_id);

    service.refund_order(&failed, &failure).await?;
    service.refund_order(&failed, &failure).await?;
    let (failed_again, failure_again) = reservation_failed(&event, order.order_id);
    service.refund_order(&failed_again, &failure_again).await?;

    assert_eq!(service.get_account(customer).await?.balance_cents, 5_000);
    assert_eq!(
        testing::outbox_event_types(&db).await?,
        ["PaymentSucceeded", "PaymentRefunded"]
    );
    Ok(())
}

#[tokio::test]
async fn a_refund_for_a_declined_payment_gives_no_money() -> TestResult {
    let (db, service) = service().await?;
    let customer = Uuid::now_v7();
    service.create_account(customer, 100).await?;
    let (event, order) = order_created(customer, 500);
    service.charge_order(&event, &order).await?;
    let (failed, failure) = reservation_failed(&event, order.order_id);
    service.refund_order(&failed, &failure).await?;

    assert_eq!(service.get_account(customer).await?.balance_cents, 100);
    assert_eq!(testing::outbox_event_types(&db).await?, ["PaymentFailed"]);
    Ok(())
}

#[tokio::test]
async fn concurrent_charges_never_overdraw_an_account() -> TestResult {
    let (_db, service) = service().await?;
    let service = Arc::new(service);
    let customer = Uuid::now_v7();
    service.create_account(customer, 5_000).await?;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let service = Arc::clone(&service);
        tasks.push(tokio::spawn(async move {
            let (event, order) = order_created(customer, 1_000);
            service.charge_order(&event, &order).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    assert_eq!(service.get_account(customer).await?.balance_cents, 0);
    Ok(())
}

#[tokio::test]
async fn an_account_is_opened_once_and_never_negative() -> TestResult {
    let (_db, service) = service().await?;
    let customer = Uuid::now_v7();
    service.create_account(customer, 0).await?;
    assert!(matches!(
        service.create_account(customer, 10).await,
        Err(ServiceError::AccountExists(_))
    ));
    assert!(matches!(
        service.create_account(Uuid::now_v7(), -1).await,
        Err(ServiceError::Rejected(_))
    ));
    assert_eq!(service.get_account(customer).await?.balance_cents, 0);
    Ok(())
}
