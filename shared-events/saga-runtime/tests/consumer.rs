//! The consumer loop against a real Kafka broker and a real PostgreSQL: a lane that is stuck
//! does not stop the partitions of the other lanes, and a consumer started before its broker
//! is reachable consumes soon after it is.

use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use saga_runtime::config::ConsumerSettings;
use saga_runtime::consumer::{Applier, EventConsumer, EventHandler, HandlerError, lane_of};
use saga_runtime::health::Health;
use saga_runtime::kafka::SharedProducer;
use saga_runtime::outbox::OutboxSignal;
use saga_runtime::parking::Parking;
use saga_runtime::testing;
use saga_runtime::unit_of_work::{Reaction, Tx, UnitOfWork};
use sea_orm_migration::SchemaManager;
use shared_events::topics::{self, PARTITIONS};
use shared_events::{Envelope, OrderConfirmed, SagaEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn Error>>;

/// Applies every event at once, except those of one saga, which wait until the gate opens:
/// the lane that gets that saga is stuck meanwhile.
struct GatedHandler {
    stuck_saga: Uuid,
    gate: watch::Receiver<bool>,
    applied: Mutex<Vec<Uuid>>,
}

impl EventHandler for GatedHandler {
    async fn handle(&self, _tx: &Tx, event: &Envelope) -> Result<Reaction, HandlerError> {
        if event.sagaid == Some(self.stuck_saga) {
            let mut gate = self.gate.clone();
            gate.wait_for(|open| *open)
                .await
                .map_err(HandlerError::new)?;
        }
        if let Ok(mut applied) = self.applied.lock() {
            applied.push(event.id);
        }
        Ok(Reaction::none())
    }
}

fn confirmed(saga: Uuid) -> Envelope {
    Envelope::new(
        "orders-svc",
        Some(saga),
        SagaEvent::OrderConfirmed(OrderConfirmed {
            order_id: Uuid::now_v7(),
            total_cents: 1,
        }),
    )
}

fn applied(handler: &GatedHandler, ids: &[Uuid]) -> usize {
    handler
        .applied
        .lock()
        .map(|applied| ids.iter().filter(|id| applied.contains(id)).count())
        .unwrap_or(0)
}

/// A fresh database with the runtime's tables, and a fresh orders topic behind a prefix.
async fn database_and_topic() -> Result<(sea_orm::DatabaseConnection, String), Box<dyn Error>> {
    let url = testing::fresh_database("orders_svc", "orders", "it").await?;
    let db = sea_orm::Database::connect(url).await?;
    let schema = SchemaManager::new(&db);
    saga_schema::create_outbox(&schema).await?;
    saga_schema::create_inbox(&schema).await?;
    saga_schema::create_parked_events(&schema).await?;
    let prefix = testing::fresh_topics("it", &[topics::ORDERS_EVENTS]).await?;
    Ok((db, prefix))
}

fn consumer_settings(lanes: usize) -> ConsumerSettings {
    ConsumerSettings {
        lanes,
        retry_backoff_initial: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(100),
        max_attempts: 3,
        max_transient_attempts: 3,
        max_record_bytes: 64 * 1024,
        record_only_wait: Duration::ZERO,
    }
}

/// A consumer of the orders topic running `handler` with `settings`, and a producer to feed
/// it; cancel the token to stop it.
fn start_consumer<H: EventHandler>(
    db: &sea_orm::DatabaseConnection,
    kafka: &saga_runtime::config::KafkaSettings,
    handler: Arc<H>,
    settings: ConsumerSettings,
) -> Result<
    (
        SharedProducer,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ),
    Box<dyn Error>,
> {
    let applier = Applier {
        handler,
        uow: UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc"),
        parking: Parking::new(db.clone()),
    };
    let producer = SharedProducer::new(kafka, "consumer-test")?;
    let consumer = EventConsumer::subscribe(
        kafka,
        settings,
        "consumer-test",
        &[topics::ORDERS_EVENTS],
        applier,
        producer.clone(),
        Health::default(),
    )?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(consumer.run(stop.clone()));
    Ok((producer, stop, running))
}

/// Sends `event` to `partition` of `topic`, with its `event_type` header as the relay sends
/// it, and returns its ID.
async fn send(
    producer: &SharedProducer,
    topic: &str,
    partition: i32,
    event: Envelope,
) -> Result<Uuid, Box<dyn Error>> {
    let payload = event.encode()?;
    let key = event.sagaid.map(|s| s.to_string()).unwrap_or_default();
    producer
        .current()
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(&key)
                .payload(&payload)
                .headers(
                    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                        key: shared_events::envelope::headers::EVENT_TYPE,
                        value: Some(event.event_type()),
                    }),
                ),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)?;
    Ok(event.id)
}

#[tokio::test]
async fn a_stuck_lane_does_not_stop_the_other_lanes_partitions() -> TestResult {
    let (db, prefix) = database_and_topic().await?;
    let kafka = testing::kafka_settings(&prefix, &format!("{prefix}group"));
    let topic = kafka.topic(topics::ORDERS_EVENTS);

    // Two lanes: the stuck saga's partition in one, another partition in the other.
    let lanes = 2;
    let stuck_partition = 0;
    let other_partition = (1..PARTITIONS)
        .find(|p| lane_of(&topic, *p, lanes) != lane_of(&topic, stuck_partition, lanes))
        .ok_or("every partition maps to one lane")?;

    let (open, gate) = watch::channel(false);
    let handler = Arc::new(GatedHandler {
        stuck_saga: Uuid::now_v7(),
        gate,
        applied: Mutex::new(Vec::new()),
    });
    let (producer, stop, running) =
        start_consumer(&db, &kafka, Arc::clone(&handler), consumer_settings(lanes))?;

    // The stuck saga first, then more records behind it on its partition than its lane's
    // queue (64) and the dispatcher's allowance (1,024) hold, so the partition is paused, then
    // records on the other lane's partition.
    let send = |partition: i32, event: Envelope| send(&producer, &topic, partition, event);
    let mut behind = vec![send(stuck_partition, confirmed(handler.stuck_saga)).await?];
    for _ in 0..1200 {
        behind.push(send(stuck_partition, confirmed(Uuid::now_v7())).await?);
    }
    let mut elsewhere = Vec::new();
    for _ in 0..10 {
        elsewhere.push(send(other_partition, confirmed(Uuid::now_v7())).await?);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while applied(&handler, &elsewhere) < elsewhere.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other lane's partition stopped behind the stuck lane: {} of {} applied",
            applied(&handler, &elsewhere),
            elsewhere.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        applied(&handler, &behind),
        0,
        "the stuck lane is still stuck"
    );

    // Unstuck, the held records follow, in their partition's order.
    open.send(true)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while applied(&handler, &behind) < behind.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} held records applied after the lane came free",
            applied(&handler, &behind),
            behind.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let order: Vec<Uuid> = handler
        .applied
        .lock()
        .map_err(|_| "poisoned")?
        .iter()
        .filter(|id| behind.contains(id))
        .copied()
        .collect();
    assert_eq!(
        order, behind,
        "the stuck partition's records in their order"
    );
    stop.cancel();
    running.await?;
    Ok(())
}

/// Records, for every event it handles, the transaction it ran in and when. It takes
/// `OrderConfirmed` as an event it only records, and acts on everything else.
#[derive(Default)]
struct RecordingHandler {
    handled: Mutex<Vec<(Uuid, i64, std::time::Instant)>>,
}

impl RecordingHandler {
    fn of(&self, id: Uuid) -> Option<(i64, std::time::Instant)> {
        let handled = self.handled.lock().ok()?;
        handled
            .iter()
            .find(|(event, _, _)| *event == id)
            .map(|(_, tx, at)| (*tx, *at))
    }
}

impl EventHandler for RecordingHandler {
    fn only_records(&self, event_type: &str) -> bool {
        event_type == "OrderConfirmed"
    }

    async fn handle(&self, tx: &Tx, event: &Envelope) -> Result<Reaction, HandlerError> {
        use sea_orm::ConnectionTrait as _;
        let row = tx
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT txid_current()::bigint AS tx",
            ))
            .await
            .map_err(HandlerError::new)?
            .ok_or_else(|| HandlerError::new(std::io::Error::other("no txid")))?;
        let txid: i64 = row.try_get("", "tx").map_err(HandlerError::new)?;
        if let Ok(mut handled) = self.handled.lock() {
            handled.push((event.id, txid, std::time::Instant::now()));
        }
        Ok(Reaction::none())
    }
}

async fn handled_within(
    handler: &RecordingHandler,
    id: Uuid,
    within: Duration,
) -> Result<(i64, std::time::Instant), Box<dyn Error>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(handled) = handler.of(id) {
            return Ok(handled);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("event {id} not handled within {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_event_only_recorded_waits_for_one_acted_on_and_shares_its_transaction() -> TestResult {
    let (db, prefix) = database_and_topic().await?;
    let kafka = testing::kafka_settings(&prefix, &format!("{prefix}group"));
    let topic = kafka.topic(topics::ORDERS_EVENTS);
    let handler = Arc::new(RecordingHandler::default());
    let wait = Duration::from_secs(2);
    let settings = ConsumerSettings {
        record_only_wait: wait,
        ..consumer_settings(1)
    };
    let (producer, stop, running) = start_consumer(&db, &kafka, Arc::clone(&handler), settings)?;
    let saga = Uuid::now_v7();

    // A first event acted on, so that the consumer has its partitions before the timing
    // below begins.
    let warm_up = send(&producer, &topic, 0, reserved(saga)).await?;
    handled_within(&handler, warm_up, Duration::from_secs(30)).await?;

    // Only recorded: held while nothing else comes.
    let recorded = send(&producer, &topic, 0, confirmed(saga)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        handler.of(recorded),
        None,
        "held, waiting for an event acted on"
    );
    // One acted on arrives: both commit in one transaction, in their order.
    let acted_on = send(&producer, &topic, 0, reserved(saga)).await?;
    let (recorded_tx, _) = handled_within(&handler, recorded, Duration::from_secs(10)).await?;
    let (acted_on_tx, _) = handled_within(&handler, acted_on, Duration::from_secs(10)).await?;
    assert_eq!(recorded_tx, acted_on_tx, "one transaction for both");

    // Alone, it is applied once the wait is over, not before.
    let sent = std::time::Instant::now();
    let alone = send(&producer, &topic, 0, confirmed(saga)).await?;
    let (_, at) = handled_within(&handler, alone, Duration::from_secs(10)).await?;
    assert!(
        at.duration_since(sent) >= wait - Duration::from_millis(200),
        "applied after {:?}, before the wait of {wait:?} was over",
        at.duration_since(sent)
    );
    stop.cancel();
    running.await?;
    Ok(())
}

fn reserved(saga: Uuid) -> Envelope {
    Envelope::new(
        "inventory-svc",
        Some(saga),
        SagaEvent::InventoryReserved(shared_events::InventoryReserved {
            order_id: Uuid::now_v7(),
        }),
    )
}

/// Relays TCP connections from `listener` to `target`, as if a broker had come up there.
async fn relay_to(listener: tokio::net::TcpListener, target: String) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test]
async fn a_consumer_started_before_its_broker_consumes_soon_after_the_broker_comes_up() -> TestResult
{
    // While the broker is unreachable, librdkafka queues an error event for every failed
    // connection attempt (about 20 a second here), in front of the rebalance that follows
    // the broker's return. The dispatcher once paused 100 ms per error: after an outage of
    // OUTAGE it got its partitions about OUTAGE later, and this test failed.
    const OUTAGE: Duration = Duration::from_secs(15);
    const WITHIN: Duration = Duration::from_secs(15);
    let (db, prefix) = database_and_topic().await?;
    // The consumer's only bootstrap address is a port where nothing listens yet. Once the
    // relay there answers, the broker's metadata sends the client to the broker itself.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut kafka = testing::kafka_settings(&prefix, &format!("{prefix}group"));
    kafka.brokers = format!("127.0.0.1:{port}");
    let topic = kafka.topic(topics::ORDERS_EVENTS);
    let handler = Arc::new(GatedHandler {
        stuck_saga: Uuid::now_v7(),
        gate: watch::channel(true).1,
        applied: Mutex::new(Vec::new()),
    });
    let applier = Applier {
        handler: Arc::clone(&handler),
        uow: UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc"),
        parking: Parking::new(db.clone()),
    };
    let consumer = EventConsumer::subscribe(
        &kafka,
        consumer_settings(1),
        "consumer-test",
        &[topics::ORDERS_EVENTS],
        applier,
        SharedProducer::new(&kafka, "consumer-test")?,
        Health::default(),
    )?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(consumer.run(stop.clone()));
    tokio::time::sleep(OUTAGE).await;

    let reachable = testing::kafka_settings(&prefix, &format!("{prefix}group"));
    let sent = send(
        &SharedProducer::new(&reachable, "consumer-test-producer")?,
        &topic,
        0,
        confirmed(Uuid::now_v7()),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let relay = tokio::spawn(relay_to(listener, testing::kafka_brokers()));
    let came_up = tokio::time::Instant::now();
    while applied(&handler, &[sent]) == 0 {
        assert!(
            came_up.elapsed() < WITHIN,
            "nothing consumed within {WITHIN:?} of the broker becoming reachable, after {OUTAGE:?} without it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "consumed {:.1} s after the broker became reachable",
        came_up.elapsed().as_secs_f64()
    );
    stop.cancel();
    running.await?;
    relay.abort();
    Ok(())
}
