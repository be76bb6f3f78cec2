//! inventory-svc against a real PostgreSQL: each test gets a fresh, migrated database.

use inventory_migration::Migrator;
use inventory_svc::domain::{NewProduct, Product};
use inventory_svc::messaging::InventoryEventHandler;
use inventory_svc::service::{self, CreateProduct, ServiceError};
use saga_runtime::consumer::EventHandler;
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
        category: None,
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
            category: None,
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
async fn orders_reserved_together_are_decided_as_one_by_one() -> TestResult {
    let (db, uow) = service().await?;
    let (a, b) = (product(&uow, 5).await?, product(&uow, 5).await?);
    let orders = [
        paid(&[(a.id, 2), (b.id, 1)]),
        paid(&[(a.id, 2)]),
        // What the two before it left does not cover it: nothing of it is taken.
        paid(&[(b.id, 1), (a.id, 2)]),
        paid(&[(a.id, 1), (b.id, 4)]),
        paid(&[(Uuid::now_v7(), 1)]),
    ];
    let events: Vec<Envelope> = orders.iter().map(|(event, _)| event.clone()).collect();
    assert!(
        events
            .iter()
            .all(|event| InventoryEventHandler.handles_together(event))
    );

    let batch = testing::apply_as_batch(&uow, &InventoryEventHandler, &events).await;
    assert_eq!(batch.applied, 5);
    assert!(batch.failure.is_none());
    let (a, b) = (
        service::get_product(&db, a.id).await?,
        service::get_product(&db, b.id).await?,
    );
    assert_eq!(
        (a.available, a.reserved, b.available, b.reserved),
        (0, 5, 0, 5)
    );
    let decided = [
        "InventoryReserved",
        "InventoryReserved",
        "InventoryReservationFailed",
        "InventoryReserved",
        "InventoryReservationFailed",
    ];
    let mut expected = vec!["ProductUpserted", "ProductUpserted"];
    expected.extend(decided);
    assert_eq!(testing::outbox_event_types(&db).await?, expected);
    for ((event, payment), outcome) in orders.iter().zip(decided) {
        let reservation = service::get_reservation(&db, payment.order_id)
            .await?
            .ok_or("no reservation")?;
        assert_eq!(reservation.saga_id, event.saga_id()?);
        assert_eq!(reservation.customer_id, Some(payment.customer_id));
        assert_eq!(reservation.lines, payment.items);
        assert_eq!(
            reservation.reason.is_none(),
            outcome == "InventoryReserved",
            "a refusal says why"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_order_decided_before_sends_its_batch_one_by_one_and_is_still_refused() -> TestResult {
    let (db, uow) = service().await?;
    let stocked = product(&uow, 5).await?;
    let (first, _) = paid(&[(stocked.id, 1)]);
    let (cancelled_paid, cancelled_payment) = paid(&[(stocked.id, 1)]);
    let (last, _) = paid(&[(stocked.id, 1)]);
    let cancellation = Envelope::new(
        "orders-svc",
        cancelled_paid.sagaid,
        SagaEvent::OrderCancelled(OrderCancelled {
            order_id: cancelled_payment.order_id,
            reason: "deadline".into(),
        }),
    );
    uow.apply(&InventoryEventHandler, &cancellation).await?;

    let batch =
        testing::apply_as_batch(&uow, &InventoryEventHandler, &[first, cancelled_paid, last]).await;
    assert_eq!(batch.applied, 3);
    assert!(batch.failure.is_none());
    let stocked = service::get_product(&db, stocked.id).await?;
    assert_eq!((stocked.available, stocked.reserved), (3, 2));
    assert_eq!(
        testing::outbox_event_types(&db).await?,
        [
            "ProductUpserted",
            "InventoryReserved",
            "InventoryReservationFailed",
            "InventoryReserved"
        ]
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

/// `method uri` with `body` through `app`, as an admin; the status and the body.
async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: serde_json::Value,
) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error>> {
    let answer = testing::send(app, method, uri, &[], &body).await?;
    Ok((answer.status, answer.body))
}

fn shoes_schema(level: &str, action: &str) -> serde_json::Value {
    serde_json::json!({
        "schema": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 30, "maximum": 50},
                "colour": {"type": "string"},
            },
        },
        "validation_level": level,
        "validation_action": action,
    })
}

fn shoe(sku: &str, attributes: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"sku": sku, "name": "Shoe", "price_cents": 5000, "stock": 3,
        "category": "shoes", "attributes": attributes})
}

#[tokio::test]
async fn a_categorys_schema_judges_its_products_attributes_on_create_and_update() -> TestResult {
    let (db, uow) = service().await?;
    let app = testing::authorized(inventory_svc::http::router(uow).into());
    // A product made before its category has a schema: free-form, and invalid later.
    let (status, early) = call(
        &app,
        "POST",
        "/products",
        shoe("EARLY-1", serde_json::json!({"colour": "red"})),
    )
    .await?;
    assert_eq!(status, 201, "{early}");
    let early_uri = format!("/products/{}", early["id"].as_str().unwrap_or_default());

    let (status, set) = call(
        &app,
        "POST",
        "/categories/shoes/schema",
        shoes_schema("strict", "error"),
    )
    .await?;
    assert_eq!(status, 200, "{set}");
    let (status, read) = call(
        &app,
        "GET",
        "/categories/shoes/schema",
        serde_json::Value::Null,
    )
    .await?;
    assert_eq!((status, &read), (200, &set));

    let (status, body) = call(
        &app,
        "POST",
        "/products",
        shoe("OK-42", serde_json::json!({"size": 42, "colour": "red"})),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        &app,
        "POST",
        "/products",
        shoe("BAD-60", serde_json::json!({"size": 60})),
    )
    .await?;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "attributes_refused");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/size"),
        "{body}"
    );

    // strict: the early product cannot be updated while it stays invalid...
    let rename = serde_json::json!({"name": "Old shoe"});
    let (status, _) = call(&app, "PATCH", &early_uri, rename.clone()).await?;
    assert_eq!(status, 422, "strict checks every update");
    // ...moderate lets it be, and still checks a product that was valid;
    call(
        &app,
        "POST",
        "/categories/shoes/schema",
        shoes_schema("moderate", "error"),
    )
    .await?;
    let (status, renamed) = call(&app, "PATCH", &early_uri, rename).await?;
    assert_eq!((status, renamed["name"].as_str()), (200, Some("Old shoe")));
    // ...and warn accepts what breaks the schema.
    call(
        &app,
        "POST",
        "/categories/shoes/schema",
        shoes_schema("strict", "warn"),
    )
    .await?;
    let (status, _) = call(
        &app,
        "POST",
        "/products",
        shoe("WARNED-1", serde_json::json!({"size": "big"})),
    )
    .await?;
    assert_eq!(status, 201);

    // A schema that does not compile, or fetches a remote one, is refused.
    for schema in [
        serde_json::json!({"type": 12}),
        serde_json::json!({"$ref": "https://example.com/s.json"}),
    ] {
        let (status, body) = call(
            &app,
            "POST",
            "/categories/shoes/schema",
            serde_json::json!({"schema": schema}),
        )
        .await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid_schema")),
            "{body}"
        );
    }
    // Every version went to the catalog with its category and attributes.
    let published = testing::outbox_payloads(&db).await?;
    let last = published.last().ok_or("no catalog event")?;
    assert_eq!(last["data"]["category"], "shoes");
    assert_eq!(last["data"]["attributes"]["size"], "big");
    Ok(())
}

#[tokio::test]
async fn products_are_filtered_by_category_and_by_attributes() -> TestResult {
    let (_db, uow) = service().await?;
    let app = testing::authorized(inventory_svc::http::router(uow).into());
    for (sku, attributes) in [
        ("F-1", serde_json::json!({"size": 42, "colour": "red"})),
        ("F-2", serde_json::json!({"size": 43, "colour": "red"})),
        ("F-3", serde_json::json!({"size": "42", "colour": "blue"})),
    ] {
        let (status, body) = call(&app, "POST", "/products", shoe(sku, attributes)).await?;
        assert_eq!(status, 201, "{body}");
    }
    let skus = |body: &serde_json::Value| -> Vec<String> {
        let mut skus: Vec<String> = body["products"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["sku"].as_str().map(str::to_owned))
            .collect();
        skus.sort();
        skus
    };
    let (_, red) = call(
        &app,
        "GET",
        "/products?category=shoes&attr.colour=red",
        serde_json::Value::Null,
    )
    .await?;
    assert_eq!(skus(&red), ["F-1", "F-2"], "{red}");
    // 42 matches the number and the text "42".
    let (_, size) = call(
        &app,
        "GET",
        "/products?attr.size=42",
        serde_json::Value::Null,
    )
    .await?;
    assert_eq!(skus(&size), ["F-1", "F-3"]);
    let (_, both) = call(
        &app,
        "GET",
        "/products?attr.size=42&attr.colour=blue&limit=5",
        serde_json::Value::Null,
    )
    .await?;
    assert_eq!(skus(&both), ["F-3"]);
    let (_, none) = call(
        &app,
        "GET",
        "/products?category=hats",
        serde_json::Value::Null,
    )
    .await?;
    assert_eq!(none["count"], 0);
    let (status, _) = call(&app, "GET", "/products?colour=red", serde_json::Value::Null).await?;
    assert_eq!(status, 400, "an unknown parameter is refused, not ignored");
    let (status, _) = call(&app, "GET", "/products?limit=0", serde_json::Value::Null).await?;
    assert_eq!(status, 422);
    Ok(())
}
