//! The consumer loop against a real Kafka broker and a real PostgreSQL: a lane that is stuck
//! does not stop the partitions of the other lanes.

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

type TestResult = Result<(), Box<dyn std::error::Error>>;

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

#[tokio::test]
async fn a_stuck_lane_does_not_stop_the_other_lanes_partitions() -> TestResult {
    let url = testing::fresh_database("orders_svc", "orders", "it").await?;
    let db = sea_orm::Database::connect(url).await?;
    let schema = SchemaManager::new(&db);
    saga_schema::create_outbox(&schema).await?;
    saga_schema::create_inbox(&schema).await?;
    saga_schema::create_parked_events(&schema).await?;
    let prefix = format!("it-{}.", &Uuid::new_v4().simple().to_string()[..8]);
    testing::create_topics(&prefix, &[topics::ORDERS_EVENTS]).await?;
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
    let applier = Applier {
        handler: Arc::clone(&handler),
        uow: UnitOfWork::new(db.clone(), OutboxSignal::default(), "orders-svc"),
        parking: Parking::new(db.clone()),
    };
    let settings = ConsumerSettings {
        lanes,
        retry_backoff_initial: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(100),
        max_attempts: 3,
        max_transient_attempts: 3,
        max_record_bytes: 64 * 1024,
    };
    let producer = SharedProducer::new(&kafka, "consumer-test")?;
    let consumer = EventConsumer::subscribe(
        &kafka,
        settings,
        "consumer-test",
        &[topics::ORDERS_EVENTS],
        applier,
        producer.clone(),
        Health::default(),
    )?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(consumer.run(stop.clone()));

    // The stuck saga first, then more records behind it on its partition than its lane's
    // queue and the dispatcher's allowance hold (so the partition is paused), then records on
    // the other lane's partition.
    let send = |partition: i32, event: Envelope| {
        let producer = producer.current();
        let topic = topic.clone();
        async move {
            let payload = event.encode()?;
            let key = event.sagaid.map(|s| s.to_string()).unwrap_or_default();
            producer
                .send(
                    FutureRecord::to(&topic)
                        .partition(partition)
                        .key(&key)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(error, _)| error)?;
            Ok::<Uuid, Box<dyn std::error::Error>>(event.id)
        }
    };
    let mut behind = vec![send(stuck_partition, confirmed(handler.stuck_saga)).await?];
    for _ in 0..600 {
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
