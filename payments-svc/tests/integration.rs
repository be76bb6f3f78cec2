//! payments-svc against a real PostgreSQL: each test gets a fresh, migrated database.

use payments_migration::Migrator;
use payments_svc::messaging::PaymentsEventHandler;
use payments_svc::service::{self, CreateAccount, ServiceError};
use saga_runtime::consumer::EventHandler;
use saga_runtime::inbox::Delivery;
use saga_runtime::outbox::OutboxSignal;
use saga_runtime::testing;
use saga_runtime::unit_of_work::UnitOfWork;
use sea_orm::DatabaseConnection;
use shared_events::{
    Envelope, InventoryReservationFailed, OrderCancelled, OrderCreated, OrderLine, SagaEvent,
};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// payments-svc's unit of work on a fresh database, as the service runs it.
async fn service() -> Result<(DatabaseConnection, UnitOfWork), sea_orm::DbErr> {
    let db = testing::migrated_database::<Migrator>("payments_svc", "payments").await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "payments-svc");
    Ok((db, uow))
}

async fn open_account(uow: &UnitOfWork, customer_id: Uuid, balance_cents: i64) -> TestResult {
    uow.run(CreateAccount {
        customer_id,
        balance_cents,
    })
    .await?;
    Ok(())
}

/// A fresh database with one customer whose account holds `balance_cents`.
async fn funded_customer(
    balance_cents: i64,
) -> Result<(DatabaseConnection, UnitOfWork, Uuid), Box<dyn std::error::Error>> {
    let (db, uow) = service().await?;
    let customer = Uuid::now_v7();
    open_account(&uow, customer, balance_cents).await?;
    Ok((db, uow, customer))
}

async fn balance(db: &DatabaseConnection, customer_id: Uuid) -> Result<i64, ServiceError> {
    Ok(service::get_account(db, customer_id).await?.balance_cents)
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

fn reservation_failed(saga: &Envelope, order_id: Uuid) -> Envelope {
    let failure = InventoryReservationFailed {
        order_id,
        product_id: Some(Uuid::now_v7()),
        reason: "out of stock".into(),
    };
    Envelope::new(
        "inventory-svc",
        saga.sagaid,
        SagaEvent::InventoryReservationFailed(failure),
    )
}

#[tokio::test]
async fn a_covered_order_is_charged_once_even_when_its_event_repeats() -> TestResult {
    let (db, uow, customer) = funded_customer(10_000).await?;
    let (event, _) = order_created(customer, 2_500);

    assert_eq!(
        uow.apply(&PaymentsEventHandler, &event).await?,
        Delivery::First
    );
    assert_eq!(
        uow.apply(&PaymentsEventHandler, &event).await?,
        Delivery::Duplicate
    );
    // The same order under a new event ID (a producer bug) passes the inbox, and the unique
    // payment per order still refuses a second charge.
    let again = Envelope::new("orders-svc", event.sagaid, event.event.clone());
    uow.apply(&PaymentsEventHandler, &again).await?;

    assert_eq!(balance(&db, customer).await?, 7_500);
    assert_eq!(
        testing::outbox_event_types(&db).await?,
        ["PaymentSucceeded"]
    );
    Ok(())
}

#[tokio::test]
async fn an_uncovered_order_is_declined_without_touching_the_balance() -> TestResult {
    let (db, uow, customer) = funded_customer(1_000).await?;
    uow.apply(&PaymentsEventHandler, &order_created(customer, 1_001).0)
        .await?;

    assert_eq!(balance(&db, customer).await?, 1_000);
    assert_eq!(testing::outbox_event_types(&db).await?, ["PaymentFailed"]);
    Ok(())
}

#[tokio::test]
async fn the_refund_compensation_is_idempotent() -> TestResult {
    let (db, uow, customer) = funded_customer(5_000).await?;
    let (event, order) = order_created(customer, 3_000);
    uow.apply(&PaymentsEventHandler, &event).await?;
    let failed = reservation_failed(&event, order.order_id);

    uow.apply(&PaymentsEventHandler, &failed).await?;
    uow.apply(&PaymentsEventHandler, &failed).await?;
    let failed_again = reservation_failed(&event, order.order_id);
    uow.apply(&PaymentsEventHandler, &failed_again).await?;

    assert_eq!(balance(&db, customer).await?, 5_000);
    assert_eq!(
        testing::outbox_event_types(&db).await?,
        ["PaymentSucceeded", "PaymentRefunded"]
    );
    Ok(())
}

#[tokio::test]
async fn a_refund_for_a_declined_payment_gives_no_money() -> TestResult {
    let (db, uow, customer) = funded_customer(100).await?;
    let (event, order) = order_created(customer, 500);
    uow.apply(&PaymentsEventHandler, &event).await?;
    let failed = reservation_failed(&event, order.order_id);
    uow.apply(&PaymentsEventHandler, &failed).await?;

    assert_eq!(balance(&db, customer).await?, 100);
    assert_eq!(testing::outbox_event_types(&db).await?, ["PaymentFailed"]);
    Ok(())
}

#[tokio::test]
async fn concurrent_charges_never_overdraw_an_account() -> TestResult {
    let (db, uow, customer) = funded_customer(5_000).await?;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let uow = uow.clone();
        tasks.push(tokio::spawn(async move {
            let (event, _) = order_created(customer, 1_000);
            uow.apply(&PaymentsEventHandler, &event).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    assert_eq!(balance(&db, customer).await?, 0);
    Ok(())
}

#[tokio::test]
async fn an_account_is_opened_once_and_never_negative() -> TestResult {
    let (db, uow, customer) = funded_customer(0).await?;
    let again = CreateAccount {
        customer_id: customer,
        balance_cents: 10,
    };
    assert!(matches!(
        uow.run(again).await,
        Err(ServiceError::AccountExists(_))
    ));
    let negative = CreateAccount {
        customer_id: Uuid::now_v7(),
        balance_cents: -1,
    };
    assert!(matches!(
        uow.run(negative).await,
        Err(ServiceError::Rejected(_))
    ));
    assert_eq!(balance(&db, customer).await?, 0);
    Ok(())
}

#[tokio::test]
async fn the_inbox_alone_refuses_a_redelivered_refund_and_commits_nothing_more() -> TestResult {
    let (db, uow, customer) = funded_customer(5_000).await?;
    let (event, order) = order_created(customer, 3_000);
    uow.apply(&PaymentsEventHandler, &event).await?;
    let failed = reservation_failed(&event, order.order_id);
    assert_eq!(
        uow.apply(&PaymentsEventHandler, &failed).await?,
        Delivery::First
    );
    let outbox_before = testing::outbox_event_types(&db).await?;
    assert_eq!(
        uow.apply(&PaymentsEventHandler, &failed).await?,
        Delivery::Duplicate
    );
    assert_eq!(testing::outbox_event_types(&db).await?, outbox_before);
    assert_eq!(balance(&db, customer).await?, 5_000);
    Ok(())
}

#[tokio::test]
async fn a_cancellation_before_the_charge_leaves_a_tombstone_that_refuses_it() -> TestResult {
    let (db, uow, customer) = funded_customer(5_000).await?;
    let (created, order) = order_created(customer, 1_000);
    let cancelled = Envelope::new(
        "orders-svc",
        created.sagaid,
        SagaEvent::OrderCancelled(OrderCancelled {
            order_id: order.order_id,
            reason: "deadline".into(),
        }),
    );
    uow.apply(&PaymentsEventHandler, &cancelled).await?;
    uow.apply(&PaymentsEventHandler, &created).await?;

    assert_eq!(balance(&db, customer).await?, 5_000);
    assert_eq!(testing::outbox_event_types(&db).await?, ["PaymentFailed"]);
    Ok(())
}

/// Each saga's answer in the outbox, in the order written: (saga, event type).
async fn answers(db: &DatabaseConnection) -> Result<Vec<(Uuid, String)>, sea_orm::DbErr> {
    use sea_orm::ConnectionTrait;
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT saga_id, event_type FROM outbox ORDER BY id",
        ))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "saga_id")?, row.try_get("", "event_type")?)))
        .collect()
}

#[tokio::test]
async fn orders_charged_together_are_decided_as_one_by_one() -> TestResult {
    let (db, uow) = service().await?;
    let (rich, poor, unknown) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    open_account(&uow, rich, 5_000).await?;
    open_account(&uow, poor, 1_500).await?;
    let events: Vec<Envelope> = [
        (rich, 2_000),
        (poor, 1_000),
        // The balance the order before it left does not cover it.
        (poor, 1_000),
        (unknown, 10),
        (rich, 3_000),
    ]
    .into_iter()
    .map(|(customer, total)| order_created(customer, total).0)
    .collect();
    assert!(
        events
            .iter()
            .all(|event| PaymentsEventHandler.handles_together(event))
    );

    let batch = testing::apply_as_batch(&uow, &PaymentsEventHandler, &events).await;
    assert_eq!(batch.applied, 5);
    assert!(batch.failure.is_none());
    assert_eq!(balance(&db, rich).await?, 0);
    assert_eq!(balance(&db, poor).await?, 500);
    let expected: Vec<(Uuid, String)> = events
        .iter()
        .filter_map(|event| event.sagaid)
        .zip([
            "PaymentSucceeded",
            "PaymentSucceeded",
            "PaymentFailed",
            "PaymentFailed",
            "PaymentSucceeded",
        ])
        .map(|(saga, event_type)| (saga, event_type.to_owned()))
        .collect();
    assert_eq!(answers(&db).await?, expected);
    for event in &events {
        let SagaEvent::OrderCreated(order) = &event.event else {
            return Err("not an OrderCreated".into());
        };
        let payment = service::get_payment_of_order(&db, order.order_id)
            .await?
            .ok_or("no payment")?;
        assert_eq!(payment.amount_cents, order.total_cents);
        assert_eq!(payment.customer_id, Some(order.customer_id));
        assert_eq!(payment.saga_id, event.saga_id()?);
    }
    Ok(())
}

#[tokio::test]
async fn an_order_decided_before_sends_its_batch_one_by_one_and_is_still_refused() -> TestResult {
    let (db, uow, customer) = funded_customer(5_000).await?;
    let (first, _) = order_created(customer, 1_000);
    let (cancelled_created, cancelled_order) = order_created(customer, 1_000);
    let (last, _) = order_created(customer, 1_000);
    let cancellation = Envelope::new(
        "orders-svc",
        cancelled_created.sagaid,
        SagaEvent::OrderCancelled(OrderCancelled {
            order_id: cancelled_order.order_id,
            reason: "deadline".into(),
        }),
    );
    uow.apply(&PaymentsEventHandler, &cancellation).await?;

    let batch = testing::apply_as_batch(
        &uow,
        &PaymentsEventHandler,
        &[first, cancelled_created, last],
    )
    .await;
    assert_eq!(batch.applied, 3);
    assert!(batch.failure.is_none());
    assert_eq!(balance(&db, customer).await?, 3_000, "two orders charged");
    assert_eq!(
        testing::outbox_event_types(&db).await?,
        ["PaymentSucceeded", "PaymentFailed", "PaymentSucceeded"]
    );
    Ok(())
}

#[tokio::test]
async fn a_saga_event_without_a_saga_id_is_refused_not_given_one() -> TestResult {
    let (db, uow, customer) = funded_customer(5_000).await?;
    let (mut event, _) = order_created(customer, 1_000);
    event.sagaid = None;
    assert!(uow.apply(&PaymentsEventHandler, &event).await.is_err());
    assert_eq!(balance(&db, customer).await?, 5_000);
    assert!(testing::outbox_event_types(&db).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn every_route_is_documented_and_refuses_callers_without_the_token_it_documents() -> TestResult
{
    let settings = testing::service_settings(
        payments_svc::config::DEFAULTS,
        "payments_svc",
        "payments",
        &payments_svc::messaging::TOPICS,
    )
    .await?;
    let app = payments_svc::build(settings).await?;
    testing::check_documented(&app.router, &app.openapi).await?;
    testing::check_auth(&app.router, &app.openapi).await?;
    Ok(())
}

#[tokio::test]
async fn a_create_retried_with_its_idempotency_key_creates_once() -> TestResult {
    let (db, uow) = service().await?;
    let app = testing::authorized(payments_svc::http::router(uow).into());
    let customer = Uuid::now_v7();
    testing::check_create_is_idempotent(
        &app,
        &db,
        "/accounts",
        "accounts",
        |n| serde_json::json!({"customer_id": customer, "balance_cents": n}),
    )
    .await
}

#[tokio::test]
async fn an_orders_payment_is_shown_to_its_customer_and_to_admins() -> TestResult {
    let (_db, uow, customer) = funded_customer(10_000).await?;
    let (event, order) = order_created(customer, 2_500);
    uow.apply(&PaymentsEventHandler, &event).await?;
    let app = testing::authorized(payments_svc::http::router(uow).into());
    testing::check_order_part_is_its_customers(
        &app,
        "/payments",
        "payments",
        order.order_id,
        customer,
    )
    .await
}

/// A pooled connection the server ended, as every one is after a PostgreSQL restart, fails
/// its first statement with SQLSTATE 57P01. The request that meets it is told to come back
/// (503 `unavailable` with `Retry-After`), not that the service is broken (500), and the
/// next request runs on a new connection.
#[tokio::test]
async fn a_request_on_a_connection_the_server_ended_is_told_to_retry() -> TestResult {
    use payments_migration::MigratorTrait;
    use sea_orm::ConnectionTrait;

    let url = testing::fresh_database("payments_svc", "payments", "it").await?;
    let mut settings = testing::database_settings(url.clone());
    // One connection, so the request below gets the one that was ended.
    settings.max_connections = 1;
    let db = saga_runtime::db::connect(&settings).await?;
    Migrator::up(&db, None).await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "payments-svc");
    let customer = Uuid::now_v7();
    open_account(&uow, customer, 500).await?;
    let app = testing::authorized(payments_svc::http::router(uow).into());
    let uri = format!("/accounts/{customer}");
    let null = serde_json::Value::Null;

    // Waits (up to 5 s) until the backend has gone, its goodbye (57P01) left on the socket.
    let other_session = sea_orm::Database::connect(&url).await?;
    let ended = other_session
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(pg_terminate_backend(pid, 5000)) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ))
        .await?
        .ok_or("no row")?
        .try_get::<i64>("", "n")?;
    assert_eq!(ended, 1, "the pool's one connection");

    let refused = testing::send(&app, "GET", &uri, &[], &null).await?;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.body["error"]["code"], "unavailable", "{refused:?}");
    assert!(refused.headers.contains_key("retry-after"), "{refused:?}");

    let served = testing::send(&app, "GET", &uri, &[], &null).await?;
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(served.body["balance_cents"], 500, "{served:?}");
    Ok(())
}
