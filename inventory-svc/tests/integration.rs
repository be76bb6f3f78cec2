//! inventory-svc against a real PostgreSQL: each test gets a fresh, migrated database.

use inventory_migration::Migrator;
use inventory_svc::domain::{NewProduct, Product};
use inventory_svc::messaging::InventoryEventHandler;
use inventory_svc::service::{self, CreateProduct, ServiceError};
use saga_runtime::inbox::Delivery;
use saga_runtime::outbox::OutboxSignal;
use saga_runtime::testing;
use saga_runtime::unit_of_work::UnitOfWork;
use sea_orm::DatabaseConnection;
use shared_events::{Envelope, OrderCancelled, OrderLine, PaymentSucceeded, SagaEvent};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// inventory-svc's unit of work on a fresh database, as the service runs it.
async fn service() -> Result<(DatabaseConnection, UnitOfWork), sea_orm::DbErr> {
    let db = testing::migrated_database::<Migrator>("inventory_svc", "inventory").await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "inventory-svc");
    Ok((db, uow))
}

async fn product(uow: &UnitOfWork, stock: i64) -> Result<Product, ServiceError> {
    uow.run(CreateProduct(NewProduct {
        sku: format!("SKU-{}", Uuid::new_v4().simple()),
        name: "Widget".into(),
        price_cents: 100,
        stock,
        attributes: None,
    }))
    .await
}

fn paid(lines: &[(Uuid, u32)]) -> (Envelope, PaymentSucceeded) {
    let payment = PaymentSucceeded {
        order_id: Uuid::now_v7(),
        customer_id: Uuid::now_v7(),
        payment_id: Uuid::now_v7(),
        amount_cents: 0,
        items: lines
            .iter()
            .map(|&(product_id, quantity)| OrderLine {
                product_id,
                quantity,
                unit_price_cents: 100,
            })
            .collect(),
    };
    (
        Envelope::new(
            "payments-svc",
            Some(Uuid::now_v7()),
            SagaEvent::PaymentSucceeded(payment.clone()),
        ),
        payment,
    )
}

#[tokio::test]
async fn creating_a_product_announces_it_on_the_catalog_in_the_same_transaction() -> TestResult {
    let (db, uow) = service().await?;
    let created = product(&uow, 3).await?;
    assert_eq!(service::get_product(&db, created.id).await?.available, 3);
    assert_eq!(testing::outbox_event_types(&db).await?, ["ProductUpserted"]);

    let duplicate = uow
        .run(CreateProduct(NewProduct {
            sku: created.sku.clone(),
            name: "Other".into(),
            price_cents: 1,
            stock: 1,
            attributes: None,
        }))
        .await;
    assert!(matches!(duplicate, Err(ServiceError::SkuTaken(_))));
    assert_eq!(testing::outbox_event_types(&db).await?, ["ProductUpserted"]);
    Ok(())
}

#[tokio::test]
async fn a_reservation_takes_every_line_once_even_when_its_event_repeats() -> TestResult {
    let (db, uow) = service().await?;
    let (a, b) = (product(&uow, 5).await?, product(&uow, 5).await?);
    let (event, _) = paid(&[(a.id, 2), (b.id, 5)]);
    assert_eq!(
        uow.apply(&InventoryEventHandler, &event).await?,
        Delivery::First
    );
    assert_eq!(
        uow.apply(&InventoryEventHandler, &event).await?,
        Delivery::Duplicate
    );

    let (a, b) = (
        service::get_product(&db, a.id).await?,
        service::get_product(&db, b.id).await?,
    );
    assert_eq!(
        (a.available, a.reserved, b.available, b.reserved),
        (3, 2, 0, 5)
    );
    assert_eq!(
        testing::outbox_event_types(&db).await?,
        ["ProductUpserted", "ProductUpserted", "InventoryReserved"]
    );
    Ok(())
}

#[tokio::test]
async fn one_short_line_reserves_nothing_at_all() -> TestResult {
    let (db, uow) = service().await?;
    let (a, b) = (product(&uow, 5).await?, product(&uow, 1).await?);
    let (event, _) = paid(&[(a.id, 2), (b.id, 2)]);
    uow.apply(&InventoryEventHandler, &event).await?;

    let (a, b) = (
        service::get_product(&db, a.id).await?,
        service::get_product(&db, b.id).await?,
    );
    assert_eq!(
        (a.available, a.reserved, b.available, b.reserved),
        (5, 0, 1, 0)
    );
    assert_eq!(
        testing::outbox_event_types(&db)
            .await?
            .last()
            .map(String::as_str),
        Some("InventoryReservationFailed")
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_reservations_never_oversell() -> TestResult {
    let (db, uow) = service().await?;
    let scarce = product(&uow, 5).await?;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let uow = uow.clone();
        tasks.push(tokio::spawn(async move {
            let (event, _) = paid(&[(scarce.id, 1)]);
            uow.apply(&InventoryEventHandler, &event).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    let scarce = service::get_product(&db, scarce.id).await?;
    assert_eq!((scarce.available, scarce.reserved), (0, 5));
    let types = testing::outbox_event_types(&db).await?;
    assert_eq!(
        types.iter().filter(|t| *t == "InventoryReserved").count(),
        5
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "InventoryReservationFailed")
            .count(),
        15
    );
    Ok(())
}

#[tokio::test]
async fn a_payment_after_the_cancellation_becomes_a_failure_naming_no_product() -> TestResult {
    let (db, uow) = service().await?;
    let stocked = product(&uow, 5).await?;
    let (paid_event, payment) = paid(&[(stocked.id, 2)]);
    let cancelled = Envelope::new(
        "orders-svc",
        paid_event.sagaid,
        SagaEvent::OrderCancelled(OrderCancelled {
            order_id: payment.order_id,
            reason: "deadline".into(),
        }),
    );
    uow.apply(&InventoryEventHandler, &cancelled).await?;
    uow.apply(&InventoryEventHandler, &paid_event).await?;

    let stocked = service::get_product(&db, stocked.id).await?;
    assert_eq!((stocked.available, stocked.reserved), (5, 0));
    let rows = testing::outbox_payloads(&db).await?;
    let refusal: Envelope = serde_json::from_value(rows.last().ok_or("no outbox row")?.clone())?;
    let SagaEvent::InventoryReservationFailed(failure) = refusal.event else {
        return Err("expected InventoryReservationFailed".into());
    };
    assert_eq!(failure.product_id, None);
    assert_eq!(refusal.sagaid, paid_event.sagaid);
    Ok(())
}

#[tokio::test]
async fn every_route_is_documented_and_refuses_callers_without_the_token_it_documents() -> TestResult
{
    let settings = testing::service_settings(
        inventory_svc::config::DEFAULTS,
        "inventory_svc",
        "inventory",
        &inventory_svc::messaging::TOPICS,
    )
    .await?;
    let app = inventory_svc::build(settings).await?;
    testing::check_documented(&app.router, &app.openapi).await?;
    testing::check_auth(&app.router, &app.openapi).await?;
    Ok(())
}

#[tokio::test]
async fn a_create_retried_with_its_idempotency_key_creates_once() -> TestResult {
    let (db, uow) = service().await?;
    let app = testing::authorized(inventory_svc::http::router(uow).into());
    testing::check_create_is_idempotent(
        &app,
        &db,
        "/products",
        "products",
        |n| serde_json::json!({"sku": "KEYED-1", "name": "Keyed", "price_cents": n, "stock": 5}),
    )
    .await
}

#[tokio::test]
async fn an_orders_reservation_is_shown_to_its_customer_and_to_admins() -> TestResult {
    let (_db, uow) = service().await?;
    let stocked = product(&uow, 5).await?;
    let (event, payment) = paid(&[(stocked.id, 2)]);
    uow.apply(&InventoryEventHandler, &event).await?;
    let app = testing::authorized(inventory_svc::http::router(uow).into());
    testing::check_order_part_is_its_customers(
        &app,
        "/reservations",
        "reservations",
        payment.order_id,
        payment.customer_id,
    )
    .await
}
