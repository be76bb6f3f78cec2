//! The outbox relay against a real PostgreSQL and a real Kafka broker.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use saga_runtime::config::{KafkaSettings, RelaySettings};
use saga_runtime::health::{Health, Loop};
use saga_runtime::kafka::SharedProducer;
use saga_runtime::outbox::{self, OutboxSignal};
use saga_runtime::relay::Relay;
use saga_runtime::testing;
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use sea_orm_migration::SchemaManager;
use shared_events::{Envelope, InventoryReserved, SagaEvent, topics};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn outbox_database() -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    let url = testing::fresh_database("orders_svc", "orders", "it").await?;
    let db = sea_orm::Database::connect(url).await?;
    saga_schema::create_outbox(&SchemaManager::new(&db)).await?;
    Ok(db)
}

/// A topic of its own for one test, behind a fresh prefix: the prefix, and Kafka settings that
/// use it.
async fn fresh_topic() -> Result<(String, KafkaSettings), Box<dyn std::error::Error>> {
    let prefix = testing::fresh_topics("it", &[topics::INVENTORY_EVENTS]).await?;
    let kafka_settings = testing::kafka_settings(&prefix, "unused");
    Ok((prefix, kafka_settings))
}

fn settings(batch_size: u64) -> RelaySettings {
    RelaySettings {
        batch_size,
        poll_interval: Duration::from_millis(100),
        retry_backoff: Duration::from_millis(100),
        linger: Duration::ZERO,
    }
}

fn event(saga: Uuid) -> Envelope {
    Envelope::new(
        "orders-svc",
        Some(saga),
        SagaEvent::InventoryReserved(InventoryReserved {
            order_id: Uuid::now_v7(),
        }),
    )
}

#[tokio::test]
async fn the_relay_publishes_each_sagas_events_in_order_and_deletes_them() -> TestResult {
    let db = outbox_database().await?;
    let (prefix, kafka_settings) = fresh_topic().await?;

    // Three sagas, four events each, interleaved as concurrent transactions would write them.
    let sagas: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let mut written: HashMap<String, Vec<Uuid>> = HashMap::new();
    for _ in 0..4 {
        for saga in &sagas {
            let event = event(*saga);
            outbox::enqueue(&db, &event).await?;
            written.entry(saga.to_string()).or_default().push(event.id);
        }
    }

    let relay = relay(&db, &kafka_settings, Health::default())?;
    // A batch takes only the oldest waiting event of each saga: three per batch, four batches.
    // Each but the last held events back, and says so, so the relay comes back at once.
    let mut batches = Vec::new();
    while outbox::backlog_and_age(&db).await?.0 > 0 && batches.len() < 10 {
        let published = relay.publish_batch().await?;
        batches.push((published.rows, published.more_waiting));
    }
    assert_eq!(batches, [(3, true), (3, true), (3, true), (3, false)]);

    let topic = kafka_settings.topic(topics::INVENTORY_EVENTS);
    let read = read_back(&topic, &format!("{prefix}reader"), 12).await?;
    assert_eq!(
        read, written,
        "every saga's events, each once, in the order they were written"
    );
    Ok(())
}

/// A large batch leaves through the lingering producer, a small one through the producer
/// without linger; a saga whose events are split between them still reads back in order.
#[tokio::test]
async fn small_and_large_batches_keep_each_sagas_order_across_the_two_producers() -> TestResult {
    let db = outbox_database().await?;
    let (prefix, kafka_settings) = fresh_topic().await?;
    let long = Uuid::now_v7();
    let others: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let mut written: HashMap<String, Vec<Uuid>> = HashMap::new();
    let mut write = async |saga: Uuid| -> TestResult {
        let event = event(saga);
        outbox::enqueue(&db, &event).await?;
        written.entry(saga.to_string()).or_default().push(event.id);
        Ok(())
    };
    write(long).await?;
    for saga in &others {
        write(*saga).await?;
    }
    for _ in 0..4 {
        write(long).await?;
    }

    let relay = relay(&db, &kafka_settings, Health::default())?;
    let mut batches = Vec::new();
    while outbox::backlog_and_age(&db).await?.0 > 0 && batches.len() < 10 {
        batches.push(relay.publish_batch().await?.rows);
    }
    // The oldest event of each of the four sagas, then the long saga's other four, one by one.
    assert_eq!(batches, [4, 1, 1, 1, 1]);
    assert!(batches[0] > saga_runtime::relay::SENT_WITHOUT_LINGER);
    assert!(batches[1] <= saga_runtime::relay::SENT_WITHOUT_LINGER);

    let topic = kafka_settings.topic(topics::INVENTORY_EVENTS);
    let read = read_back(&topic, &format!("{prefix}reader"), 8).await?;
    assert_eq!(read, written, "each saga's events, once, in order");
    Ok(())
}

/// Reads `count` records of `topic` from the beginning: each key's event IDs, in order.
async fn read_back(
    topic: &str,
    group: &str,
    count: usize,
) -> Result<HashMap<String, Vec<Uuid>>, Box<dyn std::error::Error>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", testing::kafka_brokers())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut read: HashMap<String, Vec<Uuid>> = HashMap::new();
    while read.values().map(Vec::len).sum::<usize>() < count {
        let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await??;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let envelope = Envelope::decode(message.payload().unwrap_or_default())?;
        read.entry(key).or_default().push(envelope.id);
    }
    Ok(read)
}

/// What makes several relays (one per instance of a service) safe: a saga's row that another
/// relay has claimed, and not yet deleted, holds back that saga's later rows; other sagas go
/// on.
#[tokio::test]
async fn a_row_claimed_elsewhere_holds_back_its_sagas_later_rows() -> TestResult {
    let db = outbox_database().await?;
    let (_, kafka_settings) = fresh_topic().await?;
    let (held, other) = (Uuid::now_v7(), Uuid::now_v7());
    for saga in [held, held, other] {
        outbox::enqueue(&db, &event(saga)).await?;
    }
    let relay = relay(&db, &kafka_settings, Health::default())?;

    // Another relay's claim, as a lock on the saga's first row.
    let elsewhere = db.begin().await?;
    elsewhere
        .execute_unprepared(
            "SELECT id FROM outbox WHERE id = (SELECT min(id) FROM outbox) FOR UPDATE",
        )
        .await?;
    let published = relay.publish_batch().await?;
    assert_eq!(published.rows, 1, "only the other saga's row goes out");
    assert_eq!(outbox::backlog_and_age(&db).await?.0, 2);

    elsewhere.rollback().await?;
    assert_eq!(relay.publish_batch().await?.rows, 1, "the first row, alone");
    assert_eq!(relay.publish_batch().await?.rows, 1, "then the second");
    Ok(())
}

#[tokio::test]
async fn rows_stay_in_the_outbox_while_kafka_is_unreachable() -> TestResult {
    let db = outbox_database().await?;
    let mut unreachable = testing::kafka_settings("", "unused");
    // Nothing listens on port 1: every delivery times out.
    unreachable.brokers = "127.0.0.1:1".to_owned();
    unreachable.message_timeout = Duration::from_millis(500);
    outbox::enqueue(&db, &event(Uuid::now_v7())).await?;
    outbox::enqueue(&db, &event(Uuid::now_v7())).await?;

    let health = Health::default();
    let relay = relay(&db, &unreachable, health.clone())?;
    assert!(
        relay.publish_batch().await.is_err(),
        "an unacknowledged batch is an error"
    );
    assert_eq!(
        outbox::backlog_and_age(&db).await?.0,
        2,
        "nothing was deleted"
    );

    // Running, the relay keeps beating (it is alive) and reports why it cannot publish, which
    // makes the service not ready.
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = health.report(Duration::from_secs(5));
    let relay_part = report
        .iter()
        .find(|part| part.name == "relay")
        .ok_or("no relay in the report")?;
    assert!(relay_part.alive, "{relay_part:?}");
    assert!(
        relay_part
            .trouble
            .as_deref()
            .is_some_and(|why| why.contains("not acknowledged")),
        "{relay_part:?}"
    );
    stop.cancel();
    running.await?;
    assert_eq!(outbox::backlog_and_age(&db).await?.0, 2);
    Ok(())
}

#[tokio::test]
async fn a_running_relay_is_alive_and_untroubled_once_it_publishes() -> TestResult {
    let db = outbox_database().await?;
    let (_, kafka_settings) = fresh_topic().await?;
    outbox::enqueue(&db, &event(Uuid::now_v7())).await?;
    let health = Health::default();
    health.trouble(Loop::Relay, "an earlier failure");
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay(&db, &kafka_settings, health.clone())?.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while outbox::backlog_and_age(&db).await?.0 > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The relay clears its trouble right after the deletion commits, so the empty outbox
    // can be seen a moment before the clear report.
    let relay_part = loop {
        let report = health.report(Duration::from_secs(5));
        let relay_part = report
            .into_iter()
            .find(|part| part.name == "relay")
            .ok_or("no relay in the report")?;
        if relay_part.trouble.is_none() || tokio::time::Instant::now() >= deadline {
            break relay_part;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        relay_part.alive && relay_part.trouble.is_none(),
        "{relay_part:?}"
    );
    stop.cancel();
    running.await?;
    Ok(())
}

/// A relay on `db` that publishes with a producer of its own to `kafka_settings`' broker.
fn relay(
    db: &DatabaseConnection,
    kafka_settings: &KafkaSettings,
    health: Health,
) -> Result<Relay, Box<dyn std::error::Error>> {
    Ok(Relay::new(
        db.clone(),
        SharedProducer::new(kafka_settings, "relay-test")?,
        OutboxSignal::default(),
        settings(100),
        kafka_settings.clone(),
        health,
    ))
}

/// The relay's own connection commits its deletions without waiting for the WAL flush; the
/// pool that every business transaction (and so every outbox insert) uses still waits.
#[tokio::test]
async fn only_the_relays_connection_commits_asynchronously() -> TestResult {
    let url = testing::fresh_database("orders_svc", "orders", "it").await?;
    let settings = testing::database_settings(url);
    let setting = |db: DatabaseConnection| async move {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT current_setting('synchronous_commit') AS value",
            ))
            .await?
            .ok_or("no row")?;
        Ok::<String, Box<dyn std::error::Error>>(row.try_get("", "value")?)
    };
    let pool = saga_runtime::db::connect(&settings).await?;
    let relay = saga_runtime::db::connect_relay(&settings).await?;
    assert_eq!(setting(pool).await?, "on");
    assert_eq!(setting(relay).await?, "off");
    Ok(())
}

/// Rows are inserted with one array per column; a missing saga ID and trace context come back
/// as NULL, the payload as written, and the IDs rise in the order given.
#[tokio::test]
async fn a_batch_of_outbox_rows_keeps_its_order_and_its_missing_columns() -> TestResult {
    let db = outbox_database().await?;
    let with_saga = event(Uuid::now_v7());
    let without_saga = Envelope::new(
        "orders-svc",
        None,
        SagaEvent::InventoryReserved(InventoryReserved {
            order_id: Uuid::now_v7(),
        }),
    );
    let events = [&with_saga, &without_saga, &event(Uuid::now_v7())];
    let entries = events
        .iter()
        .map(|event| outbox::OutboxEntry::new(event))
        .collect::<Result<Vec<_>, _>>()?;
    outbox::enqueue_all(&db, entries).await?;

    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT event_id, saga_id, traceparent, payload::text AS payload FROM outbox ORDER BY id",
        ))
        .await?;
    assert_eq!(rows.len(), events.len());
    for (row, event) in rows.iter().zip(events) {
        assert_eq!(row.try_get::<Uuid>("", "event_id")?, event.id);
        assert_eq!(row.try_get::<Option<Uuid>>("", "saga_id")?, event.sagaid);
        assert_eq!(row.try_get::<Option<String>>("", "traceparent")?, None);
        let payload: serde_json::Value =
            serde_json::from_str(&row.try_get::<String>("", "payload")?)?;
        assert_eq!(payload, serde_json::to_value(event)?);
    }
    Ok(())
}
