//! The saga view against a real PostgreSQL: a unit of work with the view on records the
//! events it applies and publishes in the same transaction, once each, and nothing of a
//! transaction that rolls back; the timeline read back is the one Kafka would show.

use saga_runtime::inbox::Delivery;
use saga_runtime::outbox::OutboxSignal;
use saga_runtime::saga_view;
use saga_runtime::testing::{self, CountingHandler};
use saga_runtime::unit_of_work::UnitOfWork;
use sea_orm::{DatabaseConnection, DbErr};
use sea_orm_migration::SchemaManager;
use shared_events::{Envelope, Outcome};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn database() -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    let url = testing::fresh_database("orders_svc", "orders", "it").await?;
    let db = sea_orm::Database::connect(&url).await?;
    let schema = SchemaManager::new(&db);
    saga_schema::create_outbox(&schema).await?;
    saga_schema::StoreOutboxPayloadAsWritten::apply(&schema).await?;
    saga_schema::create_inbox(&schema).await?;
    saga_schema::create_parked_events(&schema).await?;
    saga_schema::create_saga_view(&schema).await?;
    testing::create_effects(&db).await?;
    Ok(db)
}

fn reserved(saga_id: Uuid) -> Envelope {
    testing::inventory_reserved(saga_id)
}

async fn rows(db: &DatabaseConnection) -> Result<i64, DbErr> {
    testing::count_rows(db, "saga_events").await
}

#[tokio::test]
async fn the_view_records_what_is_applied_and_published_once_and_nothing_rolled_back() -> TestResult
{
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc").with_saga_view();
    let saga = Uuid::now_v7();
    let event = reserved(saga);

    assert_eq!(
        uow.apply(&CountingHandler::default(), &event).await?,
        Delivery::First
    );
    // The consumed event and the one published in answer.
    assert_eq!(rows(&db).await?, 2);
    let timeline = saga_view::timeline(&db, saga).await?;
    let steps: Vec<(&str, &str, Outcome)> = timeline
        .steps
        .iter()
        .map(|s| (s.step, s.service.as_str(), s.outcome))
        .collect();
    assert_eq!(
        steps,
        [
            ("InventoryReserved", "inventory-svc", Outcome::Success),
            ("OrderConfirmed", "orders-svc", Outcome::Success),
        ]
    );
    assert_eq!(timeline.terminal, Some("CONFIRMED"));
    assert!(timeline.steps[1].hop.is_some());

    // A redelivery changes nothing.
    assert_eq!(
        uow.apply(&CountingHandler::default(), &event).await?,
        Delivery::Duplicate
    );
    assert_eq!(rows(&db).await?, 2);

    // A failing handler leaves no row of its event.
    let other = reserved(Uuid::now_v7());
    assert!(
        uow.apply(
            &CountingHandler {
                fail: true,
                ..CountingHandler::default()
            },
            &other
        )
        .await
        .is_err()
    );
    assert_eq!(rows(&db).await?, 2);
    Ok(())
}

#[tokio::test]
async fn without_the_view_nothing_is_recorded() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "payments-svc");
    uow.apply(&CountingHandler::default(), &reserved(Uuid::now_v7()))
        .await?;
    assert_eq!(rows(&db).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_batch_that_rolls_back_leaves_no_view_row_behind() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc").with_saga_view();
    let events = [reserved(Uuid::now_v7()), reserved(Uuid::now_v7())];
    let handler = CountingHandler {
        fail_on: Some(events[1].id),
        ..CountingHandler::default()
    };
    // Both in one transaction first; the second fails, the transaction rolls back, and the
    // first is applied again alone. Its answer gets a new event ID each time, so a row kept
    // from the rolled-back attempt would make three.
    let batch = testing::apply_as_batch(&uow, &handler, &events).await;
    assert_eq!(batch.applied, 1);
    assert_eq!(rows(&db).await?, 2);
    assert!(
        saga_view::timeline(&db, events[1].sagaid.unwrap_or_default())
            .await?
            .steps
            .is_empty()
    );
    Ok(())
}
