//! orders-svc against a real PostgreSQL: each test gets a fresh, migrated database.

use chrono::Utc;
use orders_migration::Migrator;
use orders_svc::config::AdmissionSettings;
use orders_svc::domain::{LineRequest, Order, OrderStatus, PlaceOrderError};
use orders_svc::http::{AppState, router};
use orders_svc::messaging::OrdersEventHandler;
use orders_svc::repo::{CatalogProduct, catalog, orders};
use orders_svc::service::{self, InFlight, PlaceOrder, ServiceError};
use saga_runtime::consumer::EventHandler;
use saga_runtime::group_commit::CommandQueue;
use saga_runtime::inbox::Delivery;
use saga_runtime::outbox::{self, OutboxSignal};
use saga_runtime::testing;
use saga_runtime::unit_of_work::UnitOfWork;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use shared_events::{
    Envelope, InventoryReserved, OrderCreated, PaymentFailed, PaymentRefunded, PaymentSucceeded,
    ProductUpserted, SagaEvent,
};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn database() -> Result<DatabaseConnection, sea_orm::DbErr> {
    testing::migrated_database::<Migrator>("orders_svc", "orders").await
}

fn uow(db: &DatabaseConnection) -> UnitOfWork {
    UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc")
}

async fn seed_product(db: &DatabaseConnection, price_cents: i64) -> Result<Uuid, sea_orm::DbErr> {
    let product_id = Uuid::now_v7();
    catalog::upsert(
        db,
        &CatalogProduct {
            product_id,
            sku: format!("SKU-{product_id}"),
            name: "Widget".into(),
            price_cents,
            category: None,
            attributes: serde_json::json!({}),
            source_time: Utc::now(),
        },
    )
    .await?;
    Ok(product_id)
}

/// (event_type, payload) of every outbox row, oldest first.
async fn outbox_rows(
    db: &DatabaseConnection,
) -> Result<Vec<(String, serde_json::Value)>, sea_orm::DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT event_type, payload FROM outbox ORDER BY id",
        ))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "event_type")?, row.try_get("", "payload")?)))
        .collect()
}

#[tokio::test]
async fn placing_an_order_writes_the_order_and_its_order_created_event_together() -> TestResult {
    let db = database().await?;
    let product = seed_product(&db, 1250).await?;
    let customer = Uuid::now_v7();
    let order = uow(&db)
        .run(PlaceOrder {
            customer_id: customer,
            lines: vec![LineRequest {
                product_id: product,
                quantity: 2,
            }],
        })
        .await?;

    let stored = orders::find(&db, order.id)
        .await?
        .ok_or("order not stored")?;
    assert_eq!(stored.status, OrderStatus::PendingPayment);
    assert_eq!(stored.total_cents, 2500);
    assert_eq!(stored.lines[0].unit_price_cents, 1250);

    let rows = outbox_rows(&db).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "OrderCreated");
    let envelope: Envelope = serde_json::from_value(rows[0].1.clone())?;
    assert_eq!(envelope.sagaid, Some(order.saga_id));
    let SagaEvent::OrderCreated(OrderCreated {
        order_id,
        total_cents,
        items,
        ..
    }) = envelope.event
    else {
        return Err("outbox holds the wrong event".into());
    };
    assert_eq!((order_id, total_cents, items.len()), (order.id, 2500, 1));
    Ok(())
}

#[tokio::test]
async fn a_rejected_order_leaves_neither_order_nor_outbox_row() -> TestResult {
    let db = database().await?;
    let unknown = Uuid::now_v7();
    let result = uow(&db)
        .run(PlaceOrder {
            customer_id: Uuid::now_v7(),
            lines: vec![LineRequest {
                product_id: unknown,
                quantity: 1,
            }],
        })
        .await;
    assert!(
        matches!(result, Err(ServiceError::Rejected(PlaceOrderError::UnknownProduct(id))) if id == unknown)
    );
    assert_eq!(count(&db, "orders").await?, 0);
    assert_eq!(count(&db, "outbox").await?, 0);
    Ok(())
}

#[tokio::test]
async fn an_outbox_row_rolls_back_with_the_change_it_announces() -> TestResult {
    let db = database().await?;
    let product = seed_product(&db, 100).await?;
    let prices = catalog::prices(&db, &[product]).await?;
    let order = orders_svc::domain::Order::place(
        Uuid::now_v7(),
        &[LineRequest {
            product_id: product,
            quantity: 1,
        }],
        &prices,
    )?;

    let txn = db.begin().await?;
    orders::insert(&txn, &order).await?;
    let event = Envelope::new(
        "orders-svc",
        Some(order.saga_id),
        SagaEvent::InventoryReserved(InventoryReserved { order_id: order.id }),
    );
    outbox::enqueue(&txn, &event).await?;
    assert_eq!(count(&txn, "outbox").await?, 1);
    txn.rollback().await?;

    assert_eq!(count(&db, "orders").await?, 0);
    assert_eq!(count(&db, "outbox").await?, 0);
    Ok(())
}

async fn count<C: ConnectionTrait>(db: &C, table: &str) -> Result<i64, sea_orm::DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT count(*) AS n FROM {table}"),
        ))
        .await?;
    row.map_or(Ok(0), |row| row.try_get("", "n"))
}

async fn placed_order(
    db: &DatabaseConnection,
) -> Result<orders_svc::domain::Order, Box<dyn std::error::Error>> {
    let product = seed_product(db, 700).await?;
    Ok(uow(db)
        .run(PlaceOrder {
            customer_id: Uuid::now_v7(),
            lines: vec![LineRequest {
                product_id: product,
                quantity: 1,
            }],
        })
        .await?)
}

/// payments-svc's answer when it declined `order`.
fn payment_failed(order: &Order) -> Envelope {
    Envelope::new(
        "payments-svc",
        Some(order.saga_id),
        SagaEvent::PaymentFailed(PaymentFailed {
            order_id: order.id,
            customer_id: order.customer_id,
            reason: "insufficient funds".into(),
        }),
    )
}

/// inventory-svc's answer when it reserved `order`.
fn inventory_reserved(order: &Order) -> Envelope {
    Envelope::new(
        "inventory-svc",
        Some(order.saga_id),
        SagaEvent::InventoryReserved(InventoryReserved { order_id: order.id }),
    )
}

#[tokio::test]
async fn a_duplicate_event_is_applied_once() -> TestResult {
    let db = database().await?;
    let order = placed_order(&db).await?;
    let reserved = inventory_reserved(&order);

    let first = uow(&db)
        .apply(&OrdersEventHandler::default(), &reserved)
        .await?;
    let second = uow(&db)
        .apply(&OrdersEventHandler::default(), &reserved)
        .await?;
    assert_eq!((first, second), (Delivery::First, Delivery::Duplicate));

    let stored = orders::find(&db, order.id).await?.ok_or("order missing")?;
    assert_eq!(stored.status, OrderStatus::Confirmed);
    let types: Vec<String> = outbox_rows(&db)
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(types, ["OrderCreated", "OrderConfirmed"]);
    assert_eq!(count(&db, "inbox").await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_declined_payment_fails_the_order_and_a_late_confirmation_is_ignored() -> TestResult {
    let db = database().await?;
    let order = placed_order(&db).await?;
    let failed = payment_failed(&order);
    uow(&db)
        .apply(&OrdersEventHandler::default(), &failed)
        .await?;
    let late = inventory_reserved(&order);
    uow(&db)
        .apply(&OrdersEventHandler::default(), &late)
        .await?;

    let stored = orders::find(&db, order.id).await?.ok_or("order missing")?;
    assert_eq!(stored.status, OrderStatus::FailedPayment);
    assert_eq!(stored.failure_reason.as_deref(), Some("insufficient funds"));
    let types: Vec<String> = outbox_rows(&db)
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(types, ["OrderCreated", "OrderFailed"]);
    Ok(())
}

fn payment_event(order: &Order, event: SagaEvent) -> Envelope {
    Envelope::new("payments-svc", Some(order.saga_id), event)
}

/// payments-svc's step orders-svc only records: it charged `order`.
fn payment_succeeded(order: &Order) -> Envelope {
    payment_event(
        order,
        SagaEvent::PaymentSucceeded(PaymentSucceeded {
            order_id: order.id,
            customer_id: order.customer_id,
            payment_id: Uuid::now_v7(),
            amount_cents: order.total_cents,
            items: Vec::new(),
        }),
    )
}

/// payments-svc's compensation: it refunded `order`, whose stock was short.
fn payment_refunded(order: &Order) -> Envelope {
    payment_event(
        order,
        SagaEvent::PaymentRefunded(PaymentRefunded {
            order_id: order.id,
            customer_id: order.customer_id,
            payment_id: Uuid::now_v7(),
            amount_cents: order.total_cents,
            reason: "out of stock".into(),
        }),
    )
}

async fn status_of(
    db: &DatabaseConnection,
    order: &Order,
) -> Result<Order, Box<dyn std::error::Error>> {
    Ok(orders::find(db, order.id).await?.ok_or("order missing")?)
}

/// The event types of the outbox rows after the orders' `OrderCreated`.
async fn answers(db: &DatabaseConnection) -> Result<Vec<String>, sea_orm::DbErr> {
    Ok(outbox_rows(db)
        .await?
        .into_iter()
        .map(|(event_type, _)| event_type)
        .filter(|event_type| event_type != "OrderCreated")
        .collect())
}

#[tokio::test]
async fn orders_finished_together_end_as_one_by_one() -> TestResult {
    let db = database().await?;
    let mut placed = Vec::new();
    for _ in 0..4 {
        placed.push(placed_order(&db).await?);
    }
    let events = [
        payment_succeeded(&placed[0]),
        inventory_reserved(&placed[0]),
        payment_failed(&placed[1]),
        payment_refunded(&placed[2]),
        payment_succeeded(&placed[3]),
        inventory_reserved(&placed[3]),
    ];
    let handler = OrdersEventHandler::default();
    assert!(events.iter().all(|event| handler.handles_together(event)));

    let batch = testing::apply_as_batch(&uow(&db), &handler, &events).await;
    assert_eq!(batch.applied, 6);
    assert!(batch.failure.is_none());
    let mut ended = Vec::new();
    for order in &placed {
        let stored = status_of(&db, order).await?;
        ended.push((stored.status, stored.failure_reason));
    }
    assert_eq!(
        ended,
        [
            (OrderStatus::Confirmed, None),
            (
                OrderStatus::FailedPayment,
                Some("insufficient funds".into())
            ),
            (OrderStatus::FailedInventory, Some("out of stock".into())),
            (OrderStatus::Confirmed, None),
        ]
    );
    let rows = outbox_rows(&db).await?;
    let confirmed: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|(event_type, _)| event_type == "OrderConfirmed")
        .map(|(_, payload)| payload)
        .collect();
    assert_eq!(confirmed.len(), 2);
    for payload in confirmed {
        assert_eq!(payload["data"]["total_cents"], 700, "{payload}");
    }
    assert_eq!(
        answers(&db).await?,
        [
            "OrderConfirmed",
            "OrderFailed",
            "OrderFailed",
            "OrderConfirmed"
        ]
    );
    assert_eq!(count(&db, "inbox").await?, 6);
    Ok(())
}

#[tokio::test]
async fn an_order_finished_before_sends_its_batch_one_by_one_and_stays_as_it_was() -> TestResult {
    let db = database().await?;
    let (finished, open) = (placed_order(&db).await?, placed_order(&db).await?);
    let handler = OrdersEventHandler::default();
    uow(&db).apply(&handler, &payment_failed(&finished)).await?;

    let late = inventory_reserved(&finished);
    let batch =
        testing::apply_as_batch(&uow(&db), &handler, &[late, inventory_reserved(&open)]).await;
    assert_eq!(batch.applied, 2);
    assert!(batch.failure.is_none());
    assert_eq!(
        status_of(&db, &finished).await?.status,
        OrderStatus::FailedPayment
    );
    assert_eq!(status_of(&db, &open).await?.status, OrderStatus::Confirmed);
    assert_eq!(answers(&db).await?, ["OrderFailed", "OrderConfirmed"]);
    Ok(())
}

#[tokio::test]
async fn the_catalog_replica_keeps_the_newest_product_version() -> TestResult {
    let db = database().await?;
    let product_id = Uuid::now_v7();
    let upserted = |price_cents| {
        Envelope::new(
            "inventory-svc",
            None,
            SagaEvent::ProductUpserted(ProductUpserted {
                product_id,
                sku: "SKU-1".into(),
                name: "Widget".into(),
                price_cents,
                category: None,
                attributes: serde_json::json!({}),
            }),
        )
    };
    let (older, newer) = (upserted(100), upserted(200));
    for event in [&newer, &older] {
        uow(&db)
            .apply(&OrdersEventHandler::default(), event)
            .await?;
    }
    let replica = service::get_catalog_product(&db, product_id).await?;
    assert_eq!(replica.price_cents, 200);
    Ok(())
}

#[tokio::test]
async fn the_inbox_alone_refuses_a_redelivered_event_and_commits_nothing_more() -> TestResult {
    // A declined payment is applied, then delivered again. The order's own status check would
    // also refuse it; what this test pins down is that the inbox answers first: the handler is
    // not run, and no inbox or outbox row is added.
    let db = database().await?;
    let order = placed_order(&db).await?;
    let failed = payment_failed(&order);
    assert_eq!(
        uow(&db)
            .apply(&OrdersEventHandler::default(), &failed)
            .await?,
        Delivery::First
    );
    let (outbox_before, inbox_before) = (count(&db, "outbox").await?, count(&db, "inbox").await?);
    assert_eq!(
        uow(&db)
            .apply(&OrdersEventHandler::default(), &failed)
            .await?,
        Delivery::Duplicate
    );
    assert_eq!(count(&db, "outbox").await?, outbox_before);
    assert_eq!(count(&db, "inbox").await?, inbox_before);
    Ok(())
}

#[tokio::test]
async fn the_terminal_event_is_correlated_with_the_consumed_events_saga() -> TestResult {
    let db = database().await?;
    let order = placed_order(&db).await?;
    let reserved = inventory_reserved(&order);
    uow(&db)
        .apply(&OrdersEventHandler::default(), &reserved)
        .await?;
    let rows = outbox_rows(&db).await?;
    let confirmed: Envelope =
        serde_json::from_value(rows.last().ok_or("no outbox row")?.1.clone())?;
    assert_eq!(confirmed.sagaid, Some(order.saga_id));
    assert_eq!(confirmed.source, "orders-svc");
    assert_eq!(confirmed.event_type(), "OrderConfirmed");
    Ok(())
}

/// `POST /orders` through the router, as a client sends it.
async fn post_order(
    app: &axum::Router,
    customer_id: Uuid,
    product_id: Uuid,
) -> Result<axum::response::Response, Box<dyn std::error::Error>> {
    use tower::ServiceExt as _;
    let body = serde_json::json!({
        "customer_id": customer_id,
        "items": [{ "product_id": product_id, "quantity": 1 }],
    });
    let request = axum::http::Request::post("/orders")
        .header("content-type", "application/json")
        .header("authorization", testing::bearer_of_all_scopes())
        .body(axum::body::Body::from(body.to_string()))?;
    Ok(app.clone().oneshot(request).await?)
}

/// orders-svc's router with admission bounded at `max_in_flight`, and its count.
fn admitting(
    db: &DatabaseConnection,
    max_in_flight: u64,
    retry_after: std::time::Duration,
) -> (axum::Router, std::sync::Arc<InFlight>) {
    let in_flight = InFlight::new(max_in_flight);
    let app = router(AppState {
        uow: uow(db),
        place_orders: CommandQueue::start(uow(db), 32, 2),
        in_flight: std::sync::Arc::clone(&in_flight),
        admission: AdmissionSettings {
            max_in_flight,
            target_wait: None,
            retry_after,
            recount_interval: std::time::Duration::from_millis(100),
        },
        // No other service runs here; the routes these tests call never ask them.
        peers: orders_svc::peers::Peers::new(&orders_svc::config::PeerSettings {
            payments_url: "http://127.0.0.1:9".to_owned(),
            inventory_url: "http://127.0.0.1:9".to_owned(),
            timeout: std::time::Duration::from_millis(100),
        }),
    });
    (testing::authorized(app.into()), in_flight)
}

#[tokio::test]
async fn past_the_in_flight_bound_an_order_is_refused_with_503_and_leaves_no_trace() -> TestResult {
    let db = database().await?;
    let product_id = seed_product(&db, 250).await?;
    let (app, in_flight) = admitting(&db, 2, std::time::Duration::from_millis(1500));
    let customer_id = Uuid::now_v7();
    for _ in 0..2 {
        let accepted = post_order(&app, customer_id, product_id).await?;
        assert_eq!(accepted.status(), 202);
    }

    let refused = post_order(&app, customer_id, product_id).await?;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"2"[..]),
        "1.5 s rounds up to 2"
    );
    let body = axum::body::to_bytes(refused.into_body(), 1 << 16).await?;
    let body: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(
        count(&db, "orders").await?,
        2,
        "the refused order was not stored"
    );
    assert_eq!(count(&db, "outbox").await?, 2, "nor was its saga started");

    // A saga that finishes frees its place.
    in_flight.finished(1);
    let accepted = post_order(&app, customer_id, product_id).await?;
    assert_eq!(accepted.status(), 202);
    assert_eq!(count(&db, "orders").await?, 3);
    Ok(())
}

#[tokio::test]
async fn a_rejected_order_gives_its_admission_back() -> TestResult {
    let db = database().await?;
    let (app, in_flight) = admitting(&db, 1, std::time::Duration::from_secs(1));
    // An unknown product: 422, and the place it took is free again.
    let rejected = post_order(&app, Uuid::now_v7(), Uuid::now_v7()).await?;
    assert_eq!(rejected.status(), 422);
    assert_eq!(in_flight.current(), 0);
    let product_id = seed_product(&db, 100).await?;
    let accepted = post_order(&app, Uuid::now_v7(), product_id).await?;
    assert_eq!(accepted.status(), 202);
    assert_eq!(in_flight.current(), 1);
    Ok(())
}

#[tokio::test]
async fn the_recount_sees_only_orders_whose_saga_is_in_flight() -> TestResult {
    let db = database().await?;
    let finished = placed_order(&db).await?;
    placed_order(&db).await?;
    uow(&db)
        .apply(
            &OrdersEventHandler::default(),
            &inventory_reserved(&finished),
        )
        .await?;
    assert_eq!(
        orders_svc::repo::admission::census(&db).await?,
        orders_svc::repo::admission::Census {
            in_flight: 1,
            bound: None
        }
    );
    Ok(())
}

#[tokio::test]
async fn instances_share_one_admission_limit_and_step_it_at_most_once_a_window() -> TestResult {
    use orders_svc::repo::admission;
    use std::time::Duration;
    let db = database().await?;
    placed_order(&db).await?;
    let target = Some(Duration::from_millis(500));
    let (first, second) = (
        InFlight::with_target_wait(64, target),
        InFlight::with_target_wait(64, target),
    );
    // The service's limit, as an earlier step left it; no step since for longer than a window.
    assert!(admission::step_bound(&db, 20, Duration::ZERO).await?);
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // Both windows have passed, and both saw fast sagas. The first to recount steps up by a
    // quarter; the second adopts that and its own step is refused.
    first.saga_finished(Duration::from_millis(10));
    second.saga_finished(Duration::from_millis(10));
    assert_eq!(service::recount_in_flight(&db, &first).await?, 1);
    assert_eq!(first.limit(), 25);
    assert_eq!(service::recount_in_flight(&db, &second).await?, 1);
    assert_eq!(second.limit(), 25, "adopted, and not stepped again");
    assert_eq!(admission::census(&db).await?.bound, Some(25));

    // A recount inside the window only adopts: this instance knows the service's limit.
    let third = InFlight::with_target_wait(64, target);
    service::recount_in_flight(&db, &third).await?;
    assert_eq!((third.current(), third.limit()), (1, 25));
    Ok(())
}

#[tokio::test]
async fn every_route_is_documented_and_refuses_callers_without_the_token_it_documents() -> TestResult
{
    let settings = testing::service_settings(
        orders_svc::config::DEFAULTS,
        "orders_svc",
        "orders",
        &orders_svc::messaging::TOPICS,
    )
    .await?;
    let app = orders_svc::build(settings).await?;
    testing::check_documented(&app.router, &app.openapi).await?;
    testing::check_auth(&app.router, &app.openapi).await?;
    Ok(())
}

/// `POST /orders` with an `Idempotency-Key`, and the answer's status, replay mark and body.
async fn post_keyed_order(
    app: &axum::Router,
    key: &str,
    customer_id: Uuid,
    product_id: Uuid,
    quantity: u32,
) -> Result<(u16, bool, serde_json::Value), Box<dyn std::error::Error>> {
    let body = serde_json::json!({
        "customer_id": customer_id,
        "items": [{ "product_id": product_id, "quantity": quantity }],
    });
    let answer = testing::send(app, "POST", "/orders", &[("idempotency-key", key)], &body).await?;
    let replayed = answer.headers.contains_key("idempotent-replayed");
    Ok((answer.status, replayed, answer.body))
}

#[tokio::test]
async fn a_retried_order_with_its_idempotency_key_is_placed_once() -> TestResult {
    let db = database().await?;
    let product_id = seed_product(&db, 250).await?;
    let (app, in_flight) = admitting(&db, 10, std::time::Duration::from_secs(1));
    let customer_id = Uuid::now_v7();
    let key = Uuid::now_v7().to_string();

    let (status, replayed, first) =
        post_keyed_order(&app, &key, customer_id, product_id, 2).await?;
    assert_eq!((status, replayed), (202, false));
    let (status, replayed, again) =
        post_keyed_order(&app, &key, customer_id, product_id, 2).await?;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again, first, "the retry gets the first answer");
    assert_eq!(count(&db, "orders").await?, 1);
    assert_eq!(count(&db, "outbox").await?, 1, "one saga started");
    assert_eq!(in_flight.current(), 1, "the replay took no place in flight");

    // The same key for another order is refused, and places nothing.
    let (status, _, body) = post_keyed_order(&app, &key, customer_id, product_id, 3).await?;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(count(&db, "orders").await?, 1);

    // Another key is another order; a malformed key is refused before anything runs.
    let (status, _, _) = post_keyed_order(&app, "another", customer_id, product_id, 2).await?;
    assert_eq!(status, 202);
    let (status, _, body) = post_keyed_order(&app, " padded", customer_id, product_id, 2).await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_idempotency_key");
    assert_eq!(count(&db, "orders").await?, 2);
    assert_eq!(count(&db, "idempotency_keys").await?, 2);
    Ok(())
}

#[tokio::test]
async fn requests_with_one_key_at_the_same_time_place_one_order() -> TestResult {
    let db = database().await?;
    let product_id = seed_product(&db, 100).await?;
    let (app, _) = admitting(&db, 100, std::time::Duration::from_secs(1));
    let customer_id = Uuid::now_v7();
    let key = "same-time";
    // Sent together, they meet in one group-commit batch or in transactions that overlap;
    // either way the key is claimed once.
    let answers = futures::future::join_all(
        (0..12).map(|_| post_keyed_order(&app, key, customer_id, product_id, 1)),
    )
    .await;
    let mut ids = std::collections::HashSet::new();
    for answer in answers {
        let (status, _, body) = answer?;
        assert_eq!(status, 202, "{body}");
        ids.insert(body["id"].to_string());
    }
    assert_eq!(ids.len(), 1, "every answer names the same order");
    assert_eq!(count(&db, "orders").await?, 1);
    assert_eq!(count(&db, "outbox").await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_refused_order_leaves_no_key_so_its_retry_is_judged_again() -> TestResult {
    let db = database().await?;
    let (app, _) = admitting(&db, 10, std::time::Duration::from_secs(1));
    let customer_id = Uuid::now_v7();
    let product_id = Uuid::now_v7();
    let (status, _, _) = post_keyed_order(&app, "k", customer_id, product_id, 1).await?;
    assert_eq!(status, 422, "not in the catalog yet");
    assert_eq!(count(&db, "idempotency_keys").await?, 0);
    // The product arrives; the client's retry with the same key now places the order.
    catalog::upsert(
        &db,
        &CatalogProduct {
            product_id,
            sku: "LATE-1".into(),
            name: "Late".into(),
            price_cents: 10,
            category: None,
            attributes: serde_json::json!({}),
            source_time: Utc::now(),
        },
    )
    .await?;
    let (status, replayed, _) = post_keyed_order(&app, "k", customer_id, product_id, 1).await?;
    assert_eq!((status, replayed), (202, false));
    Ok(())
}

/// The case idempotency keys exist for: the request times out (503 `timed_out`) while its
/// order is being committed, and the client's retry with the same key gets that order
/// instead of placing a second one.
#[tokio::test]
async fn an_order_that_timed_out_but_committed_is_not_placed_again_by_its_retry() -> TestResult {
    let db = database().await?;
    let product_id = seed_product(&db, 250).await?;
    let (app, _) = admitting(&db, 10, std::time::Duration::from_secs(1));
    let limit = std::time::Duration::from_millis(300);
    let app = saga_runtime::http::with_api_layers(
        app,
        &saga_runtime::config::HttpSettings {
            host: "127.0.0.1".to_owned(),
            port: 0,
            request_timeout: limit,
            max_body_bytes: 64 * 1024,
            max_connections: 1024,
            probe_port: None,
            shutdown_timeout: std::time::Duration::from_secs(1),
            health_stale_after: std::time::Duration::from_secs(1),
        },
    );
    let customer_id = Uuid::now_v7();
    let key = Uuid::now_v7().to_string();

    // Another session holds the orders table, so the order's batch waits on its insert
    // past the request's time limit.
    let holder = db.begin().await?;
    holder
        .execute_unprepared("LOCK TABLE orders IN EXCLUSIVE MODE")
        .await?;
    let (status, _, body) = post_keyed_order(&app, &key, customer_id, product_id, 1).await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "timed_out");
    holder.commit().await?;

    // The batch the request joined commits anyway: the timeout did not undo the order.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count(&db, "orders").await? == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the order was never committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, replayed, body) = post_keyed_order(&app, &key, customer_id, product_id, 1).await?;
    assert_eq!((status, replayed), (202, true), "{body}");
    assert_eq!(
        count(&db, "orders").await?,
        1,
        "the retry placed no second order"
    );
    assert_eq!(count(&db, "outbox").await?, 1, "and started no second saga");
    Ok(())
}

#[tokio::test]
async fn a_customer_orders_and_reads_only_for_themselves_and_an_admin_for_anyone() -> TestResult {
    use saga_runtime::auth::Scope;
    let db = database().await?;
    let product_id = seed_product(&db, 100).await?;
    let (app, _) = admitting(&db, 10, std::time::Duration::from_secs(1));
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let as_alice = format!("Bearer {}", testing::token(&alice.to_string(), &[]));
    let as_admin = format!("Bearer {}", testing::token("support", &[Scope::Admin]));
    let order = |customer: Uuid| serde_json::json!({"customer_id": customer, "items": [{"product_id": product_id, "quantity": 1}]});
    let own = testing::send(
        &app,
        "POST",
        "/orders",
        &[("authorization", as_alice.as_str())],
        &order(alice),
    )
    .await?;
    assert_eq!(own.status, 202, "{:?}", own.body);
    let for_bob = testing::send(
        &app,
        "POST",
        "/orders",
        &[("authorization", as_alice.as_str())],
        &order(bob),
    )
    .await?;
    assert_eq!(for_bob.status, 403, "{:?}", for_bob.body);
    assert_eq!(for_bob.body["error"]["code"], "forbidden");
    let by_admin = testing::send(
        &app,
        "POST",
        "/orders",
        &[("authorization", as_admin.as_str())],
        &order(bob),
    )
    .await?;
    assert_eq!(by_admin.status, 202);
    assert_eq!(
        count(&db, "orders").await?,
        2,
        "the refused order was not placed"
    );

    let alices = format!("/orders/{}", own.body["id"].as_str().unwrap_or_default());
    let bobs = format!(
        "/orders/{}",
        by_admin.body["id"].as_str().unwrap_or_default()
    );
    let read = |uri: String, bearer: String| {
        let app = app.clone();
        async move {
            testing::send(
                &app,
                "GET",
                &uri,
                &[("authorization", bearer.as_str())],
                &serde_json::Value::Null,
            )
            .await
            .map(|answer| answer.status)
        }
    };
    assert_eq!(read(alices.clone(), as_alice.clone()).await?, 200);
    assert_eq!(read(bobs.clone(), as_alice.clone()).await?, 403);
    assert_eq!(read(bobs, as_admin).await?, 200);
    assert_eq!(read(alices, String::new()).await?, 401);
    Ok(())
}

#[tokio::test]
async fn the_explorer_login_keeps_an_operators_token_in_a_cookie_and_goes_on_only_to_its_pages()
-> TestResult {
    use saga_runtime::auth::Scope;
    let db = database().await?;
    let (app, _) = admitting(&db, 10, std::time::Duration::from_secs(1));
    let operator = testing::token("ops", &[Scope::Operator]);
    let login = |token: &str, next: &str| format!("/ui/login?token={token}&next={next}");
    let no_auth = [("authorization", "")];
    let null = serde_json::Value::Null;

    let answer = testing::send(
        &app,
        "GET",
        &login(&operator, "/ui/sagas/x"),
        &no_auth,
        &null,
    )
    .await?;
    assert_eq!(answer.status, 303);
    assert_eq!(
        answer.headers.get("location").map(|v| v.as_bytes()),
        Some(&b"/ui/sagas/x"[..])
    );
    let cookie = answer
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        cookie.starts_with(&format!("saga_token={operator};")),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // The cookie opens the explorer; without it, it is 401.
    let session = format!("saga_token={operator}");
    let page = testing::send(
        &app,
        "GET",
        "/ui/",
        &[("authorization", ""), ("cookie", &session)],
        &null,
    )
    .await?;
    assert_eq!(page.status, 200);
    assert_eq!(
        testing::send(&app, "GET", "/ui/", &no_auth, &null)
            .await?
            .status,
        401
    );

    // Never a redirect off the explorer; never a login without the operator scope.
    for next in ["//evil.example", "https://evil.example/ui/", "/orders"] {
        let answer = testing::send(&app, "GET", &login(&operator, next), &no_auth, &null).await?;
        assert_eq!(
            answer.headers.get("location").map(|v| v.as_bytes()),
            Some(&b"/ui/"[..]),
            "{next}"
        );
    }
    let customer = testing::token("c", &[]);
    assert_eq!(
        testing::send(&app, "GET", &login(&customer, "/ui/"), &no_auth, &null)
            .await?
            .status,
        403
    );
    assert_eq!(
        testing::send(&app, "GET", &login("garbage", "/ui/"), &no_auth, &null)
            .await?
            .status,
        401
    );
    Ok(())
}

#[tokio::test]
async fn a_products_attributes_reach_the_replica_and_the_orders_that_contain_it() -> TestResult {
    let db = database().await?;
    let product_id = Uuid::now_v7();
    let upserted = Envelope::new(
        "inventory-svc",
        None,
        SagaEvent::ProductUpserted(ProductUpserted {
            product_id,
            sku: "SHOE-42".into(),
            name: "Shoe".into(),
            price_cents: 5000,
            category: Some("shoes".into()),
            attributes: serde_json::json!({"size": 42, "colour": "red"}),
        }),
    );
    uow(&db)
        .apply(&OrdersEventHandler::default(), &upserted)
        .await?;
    let (app, _) = admitting(&db, 10, std::time::Duration::from_secs(1));
    let catalog = testing::send(
        &app,
        "GET",
        &format!("/catalog/{product_id}"),
        &[],
        &serde_json::Value::Null,
    )
    .await?;
    assert_eq!(catalog.body["category"], "shoes");
    assert_eq!(catalog.body["attributes"]["size"], 42);

    let placed = post_order(&app, Uuid::now_v7(), product_id).await?;
    assert_eq!(placed.status(), 202);
    let bytes = axum::body::to_bytes(placed.into_body(), 1 << 16).await?;
    let placed: serde_json::Value = serde_json::from_slice(&bytes)?;
    let order_uri = format!("/orders/{}", placed["id"].as_str().unwrap_or_default());
    let order = testing::send(&app, "GET", &order_uri, &[], &serde_json::Value::Null).await?;
    assert_eq!(
        order.body["items"][0]["attributes"]["colour"], "red",
        "{:?}",
        order.body
    );
    Ok(())
}
