//! inventory-svc against a real PostgreSQL: each test gets a fresh, migrated database.

use std::sync::Arc;

use inventory_migration::Migrator;
use inventory_svc::domain::{NewProduct, Product};
use inventory_svc::repo::{SeaOrmProductRepository, SeaOrmReservationRepository};
use inventory_svc::service::{InventoryService, ServiceError};
use saga_runtime::outbox::OutboxSignal;
use saga_runtime::testing;
use sea_orm::DatabaseConnection;
use shared_events::{Envelope, OrderLine, PaymentSucceeded, SagaEvent};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn service() -> Result<(DatabaseConnection, InventoryService), sea_orm::DbErr> {
    let db = testing::migrated_database::<Migrator>("inventory_svc", "inventory").await?;
    let service = InventoryService::new(
        db.clone(),
        SeaOrmProductRepository,
        SeaOrmReservationRepository,
        OutboxSignal::default(),
    );
    Ok((db, service))
}

async fn product(service: &InventoryService, stock: i64) -> Result<Product, ServiceError> {
    service
        .create_product(NewProduct {
            sku: format!("SKU-{}", Uuid::new_v4().simple()),
            name: "Widget".into(),
            price_cents: 100,
            stock,
            attributes: None,
        })
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
    let (db, service) = service().await?;
    let created = product(&service, 3).await?;
    assert_eq!(service.get_product(created.id).await?.available, 3);
    assert_eq!(testing::outbox_event_types(&db).await?, ["ProductUpserted"]);

    let duplicate = service
        .create_product(NewProduct {
            sku: created.sku.clone(),
            name: "Other".into(),
            price_cents: 1,
            stock: 1,
            attributes: None,
        })
        .await;
    assert!(matches!(duplicate, Err(ServiceError::SkuTaken(_))));
    assert_eq!(testing::outbox_event_types(&db).await?, ["ProductUpserted"]);
    Ok(())
}

#[tokio::test]
async fn a_reservation_takes_every_line_once_even_when_its_event_repeats() -> TestResult {
    let (db, service) = service().await?;
    let (a, b) = (product(&service, 5).await?, product(&service, 5).await?);
    let (event, payment) = paid(&[(a.id, 2), (b.id, 5)]);
    service.reserve_order(&event, &payment).await?;
    service.reserve_order(&event, &payment).await?;

    let (a, b) = (
        service.get_product(a.id).await?,
        service.get_product(b.id).await?,
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
    let (db, service) = service().await?;
    let (a, b) = (product(&service, 5).await?, product(&service, 1).await?);
    let (event, payment) = paid(&[(a.id, 2), (b.id, 2)]);
    service.reserve_order(&event, &payment).await?;

    let (a, b) = (
        service.get_product(a.id).await?,
        service.get_product(b.id).await?,
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
    let (db, service) = service().await?;
    let service = Arc::new(service);
    let scarce = product(&service, 5).await?;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let service = Arc::clone(&service);
        tasks.push(tokio::spawn(async move {
            let (event, payment) = paid(&[(scarce.id, 1)]);
            service.reserve_order(&event, &payment).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    let scarce = service.get_product(scarce.id).await?;
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
