//! The unit of work against a real PostgreSQL: what it commits, what it refuses, that the
//! inbox alone (not a service's own checks) keeps an event from applying twice, and that the
//! parked table alone holds a saga back, for every instance that shares the database.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use saga_runtime::consumer::{Applier, FailureClass, HandlerError};
use saga_runtime::group_commit::CommandQueue;
use saga_runtime::inbox::Delivery;
use saga_runtime::outbox::{OutboxError, OutboxSignal};
use saga_runtime::parking::{Origin, Parking};
use saga_runtime::testing::{self, CountingHandler};
use saga_runtime::unit_of_work::{Announcements, Batch, Command, MAX_BATCH_EVENTS, Tx, UnitOfWork};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use sea_orm_migration::SchemaManager;
use shared_events::{Envelope, InventoryReserved, SagaEvent};
use tracing::Span;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn database() -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    Ok(database_and_url().await?.0)
}

/// A fresh database with the runtime's tables, and its URL for a second pool on it.
async fn database_and_url() -> Result<(DatabaseConnection, String), Box<dyn std::error::Error>> {
    let url = testing::fresh_database("orders_svc", "orders", "it").await?;
    let db = sea_orm::Database::connect(&url).await?;
    let schema = SchemaManager::new(&db);
    saga_schema::create_outbox(&schema).await?;
    saga_schema::create_inbox(&schema).await?;
    saga_schema::create_parked_events(&schema).await?;
    testing::create_effects(&db).await?;
    Ok((db, url))
}

fn reserved(saga_id: Uuid) -> Envelope {
    testing::inventory_reserved(saga_id)
}

async fn count(db: &DatabaseConnection, table: &str) -> Result<i64, DbErr> {
    testing::count_rows(db, table).await
}

#[tokio::test]
async fn a_redelivered_event_is_refused_by_the_inbox_before_the_handler_runs() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let handler = CountingHandler::default();
    let event = reserved(Uuid::now_v7());

    assert_eq!(uow.apply(&handler, &event).await?, Delivery::First);
    assert_eq!(uow.apply(&handler, &event).await?, Delivery::Duplicate);
    assert_eq!(uow.apply(&handler, &event).await?, Delivery::Duplicate);

    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    assert_eq!(count(&db, "effects").await?, 1);
    assert_eq!(count(&db, "outbox").await?, 1);
    assert_eq!(count(&db, "inbox").await?, 1);
    Ok(())
}

#[tokio::test]
async fn what_a_handler_returns_is_published_in_the_consumed_events_saga() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let saga_id = Uuid::now_v7();
    uow.apply(&CountingHandler::default(), &reserved(saga_id))
        .await?;
    let payloads = testing::outbox_payloads(&db).await?;
    let published: Envelope = serde_json::from_value(payloads[0].clone())?;
    assert_eq!(published.sagaid, Some(saga_id));
    assert_eq!(published.source, "orders-svc");
    assert_eq!(published.event_type(), "OrderConfirmed");
    Ok(())
}

#[tokio::test]
async fn a_failing_handler_commits_nothing_and_the_event_applies_on_redelivery() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let event = reserved(Uuid::now_v7());
    let failing = CountingHandler {
        fail: true,
        ..CountingHandler::default()
    };
    assert!(uow.apply(&failing, &event).await.is_err());
    for table in ["effects", "outbox", "inbox"] {
        assert_eq!(count(&db, table).await?, 0, "{table}");
    }
    assert_eq!(
        uow.apply(&CountingHandler::default(), &event).await?,
        Delivery::First
    );
    assert_eq!(count(&db, "effects").await?, 1);
    Ok(())
}

struct StartSaga(Uuid);

impl Command for StartSaga {
    type Output = ();
    type Error = OutboxError;

    async fn execute(self, tx: &Tx) -> Result<((), Announcements), OutboxError> {
        tx.execute_unprepared(&format!("INSERT INTO effects VALUES ('{}')", self.0))
            .await?;
        let started = SagaEvent::InventoryReserved(InventoryReserved { order_id: self.0 });
        Ok(((), Announcements::saga(self.0, started)))
    }
}

#[tokio::test]
async fn a_command_commits_its_change_and_its_announcements_together() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    uow.run(StartSaga(Uuid::now_v7())).await?;
    assert_eq!(count(&db, "effects").await?, 1);
    assert_eq!(count(&db, "outbox").await?, 1);
    assert_eq!(count(&db, "inbox").await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_deadlock_inside_the_outbox_insert_is_still_transient() -> TestResult {
    // A real PostgreSQL error with SQLSTATE 40P01, wrapped as enqueue wraps it.
    let db = database().await?;
    let deadlock = db
        .execute_unprepared(
            "DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = 'deadlock_detected'; END $$",
        )
        .await
        .err()
        .ok_or("the statement should have failed")?;
    let error = HandlerError::new(OutboxError::Db(deadlock));
    assert_eq!(error.class(), FailureClass::Transient);
    Ok(())
}

fn origin() -> Origin {
    Origin {
        topic: "payments.events".to_owned(),
        partition: 0,
        offset: 0,
    }
}

/// Applies `events` as one batch, as the consumer hands them over.
async fn apply_batch(uow: &UnitOfWork, handler: &CountingHandler, events: &[Envelope]) -> Batch {
    testing::apply_as_batch(uow, handler, events).await
}

#[tokio::test]
async fn a_batch_applies_every_event_in_one_transaction() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let handler = CountingHandler::default();
    let events: Vec<Envelope> = (0..3).map(|_| reserved(Uuid::now_v7())).collect();

    let batch = apply_batch(&uow, &handler, &events).await;
    assert_eq!(batch.applied, 3);
    assert!(batch.failure.is_none());
    for table in ["effects", "outbox", "inbox"] {
        assert_eq!(count(&db, table).await?, 3, "{table}");
    }
    Ok(())
}

#[tokio::test]
async fn a_failing_event_rolls_back_alone_and_stops_the_batch_behind_it() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let events: Vec<Envelope> = (0..4).map(|_| reserved(Uuid::now_v7())).collect();
    let handler = CountingHandler {
        fail_on: Some(events[2].id),
        ..CountingHandler::default()
    };

    let batch = apply_batch(&uow, &handler, &events).await;
    assert_eq!(
        batch.applied, 2,
        "the two events before the failure are committed"
    );
    assert!(batch.failure.is_some());
    let ran = handler.ran.lock().map_err(|_| "poisoned")?.clone();
    assert!(!ran.contains(&events[3].id), "the fourth never ran");
    assert_eq!(
        ran.iter().filter(|id| **id == events[2].id).count(),
        1,
        "the batch does not retry the failed event; the consumer does"
    );
    for table in ["effects", "outbox", "inbox"] {
        assert_eq!(
            count(&db, table).await?,
            2,
            "{table}: the failed event left nothing"
        );
    }

    // Its redelivery, alone, applies; the ones before it are duplicates now.
    let retry = apply_batch(&uow, &CountingHandler::default(), &events).await;
    assert_eq!(retry.applied, 4);
    assert_eq!(count(&db, "effects").await?, 4);
    Ok(())
}

#[tokio::test]
async fn a_failing_first_event_commits_nothing() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let events: Vec<Envelope> = (0..2).map(|_| reserved(Uuid::now_v7())).collect();
    let handler = CountingHandler {
        fail_on: Some(events[0].id),
        ..CountingHandler::default()
    };
    let batch = apply_batch(&uow, &handler, &events).await;
    assert_eq!(batch.applied, 0);
    assert!(batch.failure.is_some());
    assert_eq!(count(&db, "inbox").await?, 0);
    Ok(())
}

#[tokio::test]
async fn an_event_twice_in_one_batch_applies_once_and_a_batch_is_capped() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let handler = CountingHandler::default();
    let event = reserved(Uuid::now_v7());
    let batch = apply_batch(&uow, &handler, &[event.clone(), event]).await;
    assert_eq!(batch.applied, 2);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    assert_eq!(count(&db, "effects").await?, 1);

    let many: Vec<Envelope> = (0..MAX_BATCH_EVENTS + 5)
        .map(|_| reserved(Uuid::now_v7()))
        .collect();
    let batch = apply_batch(&uow, &handler, &many).await;
    assert_eq!(
        batch.applied, MAX_BATCH_EVENTS,
        "the rest is left to the caller"
    );
    assert_eq!(count(&db, "effects").await?, 1 + MAX_BATCH_EVENTS as i64);
    Ok(())
}

/// A handler that also takes events together: one multi-row statement for the whole run,
/// which fails if the run holds `CountingHandler::fail_on` or if told to give up. One by one,
/// it is the `CountingHandler` it wraps.
#[derive(Default)]
struct TogetherHandler {
    one_by_one: CountingHandler,
    /// The events of each run handled together, including runs that were rolled back.
    runs: std::sync::Mutex<Vec<Vec<Uuid>>>,
    /// Fails every run handled together, whatever it holds.
    give_up: bool,
    /// Not taken together, so it splits runs.
    alone: Option<Uuid>,
}

impl saga_runtime::consumer::EventHandler for TogetherHandler {
    async fn handle(
        &self,
        tx: &Tx,
        event: &Envelope,
    ) -> Result<saga_runtime::unit_of_work::Reaction, HandlerError> {
        self.one_by_one.handle(tx, event).await
    }

    fn handles_together(&self, event: &Envelope) -> bool {
        self.alone != Some(event.id)
    }

    async fn handle_together(
        &self,
        tx: &Tx,
        events: &[&Envelope],
    ) -> Result<Vec<saga_runtime::unit_of_work::Reaction>, HandlerError> {
        let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
        if let Ok(mut runs) = self.runs.lock() {
            runs.push(ids.clone());
        }
        let values: Vec<String> = ids.iter().map(|id| format!("('{id}')")).collect();
        tx.execute_unprepared(&format!("INSERT INTO effects VALUES {}", values.join(", ")))
            .await
            .map_err(HandlerError::new)?;
        let holds_failing = ids.iter().any(|id| Some(*id) == self.one_by_one.fail_on);
        if self.give_up || holds_failing {
            return Err(HandlerError::new(DbErr::Custom("not together".into())));
        }
        Ok(events
            .iter()
            .map(|_| {
                saga_runtime::unit_of_work::Reaction::publish(SagaEvent::InventoryReserved(
                    InventoryReserved {
                        order_id: Uuid::now_v7(),
                    },
                ))
            })
            .collect())
    }
}

/// The saga IDs of the outbox rows, in the order they were written.
async fn outbox_sagas(db: &DatabaseConnection) -> Result<Vec<Uuid>, DbErr> {
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT saga_id FROM outbox ORDER BY id",
        ))
        .await?;
    rows.iter().map(|row| row.try_get("", "saga_id")).collect()
}

#[tokio::test]
async fn events_taken_together_go_to_the_handler_at_once_and_each_answers_in_its_saga() -> TestResult
{
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let events: Vec<Envelope> = (0..5).map(|_| reserved(Uuid::now_v7())).collect();
    let handler = TogetherHandler {
        alone: Some(events[2].id),
        ..TogetherHandler::default()
    };

    let batch = testing::apply_as_batch(&uow, &handler, &events).await;
    assert_eq!(batch.applied, 5);
    assert!(batch.failure.is_none());
    let runs = handler.runs.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(
        runs,
        [
            vec![events[0].id, events[1].id],
            vec![events[3].id, events[4].id]
        ],
        "the event not taken together splits the runs"
    );
    assert_eq!(
        handler
            .one_by_one
            .ran
            .lock()
            .map_err(|_| "poisoned")?
            .clone(),
        [events[2].id],
        "only the event not taken together went to `handle`"
    );
    let sagas: Vec<Uuid> = events.iter().filter_map(|event| event.sagaid).collect();
    assert_eq!(
        outbox_sagas(&db).await?,
        sagas,
        "one answer per event, in its saga"
    );
    for table in ["effects", "inbox"] {
        assert_eq!(count(&db, table).await?, 5, "{table}");
    }

    // A single event of a batch is never a run: `handle` takes it.
    let single = [reserved(Uuid::now_v7())];
    testing::apply_as_batch(&uow, &handler, &single).await;
    assert_eq!(handler.runs.lock().map_err(|_| "poisoned")?.len(), 2);
    assert_eq!(handler.one_by_one.calls.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn when_events_taken_together_fail_the_batch_is_applied_one_by_one() -> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let events: Vec<Envelope> = (0..4).map(|_| reserved(Uuid::now_v7())).collect();

    // Together fails for a reason one by one does not have: every event applies.
    let giving_up = TogetherHandler {
        give_up: true,
        ..TogetherHandler::default()
    };
    let batch = testing::apply_as_batch(&uow, &giving_up, &events).await;
    assert_eq!(batch.applied, 4);
    assert!(batch.failure.is_none());
    assert_eq!(giving_up.runs.lock().map_err(|_| "poisoned")?.len(), 1);
    assert_eq!(giving_up.one_by_one.calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        count(&db, "effects").await?,
        4,
        "the failed run left nothing"
    );
    assert_eq!(count(&db, "outbox").await?, 4);

    // An event that fails alone too is found, as in a batch without runs.
    let more: Vec<Envelope> = (0..4).map(|_| reserved(Uuid::now_v7())).collect();
    let failing = TogetherHandler {
        one_by_one: CountingHandler {
            fail_on: Some(more[2].id),
            ..CountingHandler::default()
        },
        ..TogetherHandler::default()
    };
    let batch = testing::apply_as_batch(&uow, &failing, &more).await;
    assert_eq!(batch.applied, 2, "the two events before the failing one");
    assert!(batch.failure.is_some());
    assert_eq!(count(&db, "effects").await?, 6);
    assert_eq!(count(&db, "inbox").await?, 6);
    Ok(())
}

/// A command for group commit: it records its ID and its transaction's ID, and fails after
/// writing when told to (its row must then vanish).
#[derive(Clone)]
struct Record {
    id: Uuid,
    fail: bool,
}

impl Command for Record {
    type Output = Uuid;
    type Error = OutboxError;

    async fn execute(self, tx: &Tx) -> Result<(Uuid, Announcements), OutboxError> {
        tx.execute_unprepared(&format!(
            "INSERT INTO recorded VALUES ('{}', txid_current())",
            self.id
        ))
        .await?;
        if self.fail {
            return Err(OutboxError::Db(DbErr::Custom("refused".into())));
        }
        let started = SagaEvent::InventoryReserved(InventoryReserved { order_id: self.id });
        Ok((self.id, Announcements::saga(self.id, started)))
    }
}

async fn recording_database() -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    let db = database().await?;
    db.execute_unprepared("CREATE TABLE recorded (id UUID NOT NULL, txid BIGINT NOT NULL)")
        .await?;
    Ok(db)
}

async fn strings(db: &DatabaseConnection, sql: &str) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql,
        ))
        .await?;
    rows.iter().map(|row| row.try_get("", "v")).collect()
}

fn records(fails: &[bool]) -> Vec<(Record, Span)> {
    fails
        .iter()
        .map(|&fail| {
            let record = Record {
                id: Uuid::now_v7(),
                fail,
            };
            (record, Span::none())
        })
        .collect()
}

#[tokio::test]
async fn commands_run_together_share_one_commit_and_keep_their_order() -> TestResult {
    let db = recording_database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let commands = records(&[false, false, false]);
    let ids: Vec<String> = commands.iter().map(|(c, _)| c.id.to_string()).collect();
    let results = uow.run_all(commands, |_| true).await;
    let outputs: Vec<String> = results
        .into_iter()
        .map(|result| result.map(|id| id.to_string()))
        .collect::<Result<_, _>>()?;
    assert_eq!(outputs, ids, "each command gets its own result, in order");
    let transactions = strings(&db, "SELECT count(DISTINCT txid)::text AS v FROM recorded").await?;
    assert_eq!(transactions, ["1"], "one transaction for all three");
    let published = strings(&db, "SELECT saga_id::text AS v FROM outbox ORDER BY id").await?;
    assert_eq!(published, ids, "announcements in the commands' order");
    Ok(())
}

#[tokio::test]
async fn a_failing_command_fails_alone_and_leaves_nothing() -> TestResult {
    let db = recording_database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let commands = records(&[false, true, false]);
    let good = [commands[0].0.id, commands[2].0.id].map(|id| id.to_string());
    let results = uow.run_all(commands, |_| true).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(results[1].is_err(), "the failing command fails");
    let kept = strings(&db, "SELECT id::text AS v FROM recorded ORDER BY id").await?;
    assert_eq!(
        kept, good,
        "nothing of the failing command, each other one once"
    );
    let published = strings(&db, "SELECT saga_id::text AS v FROM outbox ORDER BY id").await?;
    assert_eq!(published, good);
    Ok(())
}

#[tokio::test]
async fn after_a_rollback_a_command_whose_caller_went_away_is_not_run_again() -> TestResult {
    let db = recording_database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let commands = records(&[false, true, false]);
    let first = commands[0].0.id.to_string();
    // The third command's caller has gone: its request timed out while the batch ran.
    let results = uow.run_all(commands, |index| index != 2).await;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(results[1].is_err() && results[2].is_err(), "{results:?}");
    let kept = strings(&db, "SELECT id::text AS v FROM recorded ORDER BY id").await?;
    assert_eq!(
        kept,
        [first],
        "only the command whose caller waits ran again"
    );
    Ok(())
}

#[tokio::test]
async fn a_command_queue_answers_every_concurrent_caller() -> TestResult {
    let db = recording_database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let queue = CommandQueue::start(uow, 8, 2);
    let mut callers = tokio::task::JoinSet::new();
    for (record, _) in records(&[false; 40]) {
        let queue = queue.clone();
        callers.spawn(async move { (record.id, queue.run(record).await) });
    }
    while let Some(called) = callers.join_next().await {
        let (id, result) = called?;
        assert_eq!(result?, id);
    }
    let kept = strings(&db, "SELECT count(*)::text AS v FROM recorded").await?;
    assert_eq!(kept, ["40"]);
    let published = strings(&db, "SELECT count(*)::text AS v FROM outbox").await?;
    assert_eq!(published, ["40"]);
    Ok(())
}

/// The event IDs in `parked_events`, oldest first.
async fn parked(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    strings(
        db,
        "SELECT event_id::text AS v FROM parked_events ORDER BY id",
    )
    .await
}

fn ids(events: &[&Envelope]) -> Vec<String> {
    events.iter().map(|event| event.id.to_string()).collect()
}

#[tokio::test]
async fn a_saga_with_a_parked_event_parks_its_later_events_in_the_applying_transaction()
-> TestResult {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let parking = Parking::new(db.clone());
    let (blocked_saga, other_saga) = (Uuid::now_v7(), Uuid::now_v7());
    let applied = reserved(blocked_saga);
    apply_batch(
        &uow,
        &CountingHandler::default(),
        std::slice::from_ref(&applied),
    )
    .await;
    let first = reserved(blocked_saga);
    parking.park(&first, &origin(), "refused", 5).await?;

    let (later, unrelated) = (reserved(blocked_saga), reserved(other_saga));
    let handler = CountingHandler::default();
    let batch = apply_batch(
        &uow,
        &handler,
        &[applied.clone(), later.clone(), unrelated.clone()],
    )
    .await;

    assert_eq!(batch.applied, 3, "{:?}", batch.failure);
    assert_eq!(
        batch.deliveries,
        [Delivery::Duplicate, Delivery::Blocked, Delivery::First],
        "a redelivery of an event applied before the saga was blocked stays a duplicate"
    );
    let ran = handler.ran.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(ran, [unrelated.id], "the blocked event's handler never ran");
    assert_eq!(parked(&db).await?, ids(&[&first, &later]), "in saga order");
    assert_eq!(
        strings(
            &db,
            "SELECT event_id::text AS v FROM inbox ORDER BY event_id"
        )
        .await?,
        ids(&[&applied, &unrelated]),
        "a parked event is not recorded as applied"
    );
    Ok(())
}

#[tokio::test]
async fn a_retry_through_another_instance_replays_in_order_and_unblocks_the_saga() -> TestResult {
    let (db, url) = database_and_url().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let saga = Uuid::now_v7();
    let (first, second) = (reserved(saga), reserved(saga));
    Parking::new(db.clone())
        .park(&first, &origin(), "refused", 5)
        .await?;
    apply_batch(
        &uow,
        &CountingHandler::default(),
        std::slice::from_ref(&second),
    )
    .await;
    assert_eq!(parked(&db).await?, ids(&[&first, &second]));

    // Another instance: its own pool on the same database, and nothing in memory.
    let other_db = sea_orm::Database::connect(url).await?;
    let handler = Arc::new(CountingHandler::default());
    let other = Applier {
        handler: Arc::clone(&handler),
        uow: UnitOfWork::new(other_db.clone(), OutboxSignal::default(), "orders-svc"),
        parking: Parking::new(other_db),
    };
    let outcome = other.parking.retry(saga, &other).await?;
    assert_eq!((outcome.retried, outcome.remaining), (2, 0), "{outcome:?}");
    let ran = handler.ran.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(ran, [first.id, second.id], "replayed in saga order");
    assert!(parked(&db).await?.is_empty());

    // The first instance applies the saga's next event at once.
    let next = apply_batch(&uow, &CountingHandler::default(), &[reserved(saga)]).await;
    assert_eq!(next.deliveries, [Delivery::First]);
    Ok(())
}

/// What a retry holds while it replays a parked event: that event's row, locked for update,
/// in a transaction that deletes it if the replay succeeds. A consumer that meets a later
/// event of the saga meanwhile must wait for that outcome, not guess it.
async fn consumer_behind_a_retry(
    retry_succeeds: bool,
) -> Result<Batch, Box<dyn std::error::Error>> {
    let db = database().await?;
    let uow = UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc");
    let saga = Uuid::now_v7();
    let first = reserved(saga);
    Parking::new(db.clone())
        .park(&first, &origin(), "refused", 5)
        .await?;

    let retry = db.begin().await?;
    retry
        .execute_unprepared(&format!(
            "SELECT id FROM parked_events WHERE event_id = '{}' FOR UPDATE",
            first.id
        ))
        .await?;
    let later = reserved(saga);
    let consumer =
        tokio::spawn(async move { apply_batch(&uow, &CountingHandler::default(), &[later]).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !consumer.is_finished(),
        "the consumer must wait for the retry's outcome"
    );
    if retry_succeeds {
        retry
            .execute_unprepared(&format!(
                "DELETE FROM parked_events WHERE event_id = '{}'",
                first.id
            ))
            .await?;
        retry.commit().await?;
    } else {
        retry.rollback().await?;
    }
    Ok(consumer.await?)
}

#[tokio::test]
async fn an_event_behind_a_retry_in_flight_applies_once_the_retry_succeeds() -> TestResult {
    let batch = consumer_behind_a_retry(true).await?;
    assert_eq!(batch.deliveries, [Delivery::First], "{:?}", batch.failure);
    Ok(())
}

#[tokio::test]
async fn an_event_behind_a_retry_in_flight_parks_when_the_retry_fails() -> TestResult {
    let batch = consumer_behind_a_retry(false).await?;
    assert_eq!(batch.deliveries, [Delivery::Blocked], "{:?}", batch.failure);
    Ok(())
}

mod migrations {
    use sea_orm_migration::prelude::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(Outbox), Box::new(Inbox)]
        }
    }

    struct Outbox;

    impl MigrationName for Outbox {
        fn name(&self) -> &str {
            "m1_outbox"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Outbox {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            saga_schema::create_outbox(manager).await
        }
    }

    struct Inbox;

    impl MigrationName for Inbox {
        fn name(&self) -> &str {
            "m2_inbox"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Inbox {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            saga_schema::create_inbox(manager).await
        }
    }
}

#[tokio::test]
async fn instances_that_start_at_the_same_moment_all_migrate() -> TestResult {
    let url = testing::fresh_database("orders_svc", "orders", "it").await?;
    let mut instances = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let settings = testing::database_settings(url.clone());
        instances.spawn(async move {
            let db = saga_runtime::db::connect(&settings).await?;
            saga_runtime::db::migrate::<migrations::Migrator>(&db, settings.migration_lock_timeout)
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(started) = instances.join_next().await {
        started?.map_err(|error| error.to_string())?;
    }
    let db = sea_orm::Database::connect(url).await?;
    let applied = strings(&db, "SELECT count(*)::text AS v FROM seaql_migrations").await?;
    assert_eq!(applied, ["2"], "each migration applied once");
    Ok(())
}
