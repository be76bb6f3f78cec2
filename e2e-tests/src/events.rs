//! What is on Kafka: every record of this run's saga topics read back as it arrives, a raw
//! producer for replays and poison records, and a one-off reader for other topics.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use shared_events::{Envelope, topics};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::TestResult;
use crate::stack::Stack;

/// A record read back from a saga topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// `None` for a value that is not a valid event.
    pub envelope: Option<Envelope>,
}

impl Record {
    /// Copies a consumed message, decoding its value when it is an event.
    fn read<M: Message>(message: &M) -> Record {
        let payload = message.payload().unwrap_or_default().to_vec();
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            envelope: Envelope::decode(&payload).ok(),
            payload,
            headers,
        }
    }
}

/// The event types that can cause an event of type `event_type` in a saga; none for the
/// saga's first event.
pub fn causes(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "PaymentSucceeded" | "PaymentFailed" | "OrderCancelled" => &["OrderCreated"],
        "InventoryReserved" | "InventoryReservationFailed" => &["PaymentSucceeded"],
        "OrderConfirmed" => &["InventoryReserved"],
        "PaymentRefunded" => &["InventoryReservationFailed", "OrderCancelled"],
        "OrderFailed" => &["PaymentFailed", "PaymentRefunded"],
        _ => &[],
    }
}

/// Every record on this run's saga topics, by key, collected by a background consumer.
#[derive(Clone)]
pub struct EventLog {
    records: Arc<Mutex<HashMap<String, Vec<Record>>>>,
    /// The next offset to read of each (topic, partition) the log has read from.
    positions: Arc<Mutex<HashMap<(String, i32), i64>>>,
    /// The physical topics read, to ask Kafka where each ends.
    topics: Vec<String>,
    arrived: Arc<Notify>,
}

impl EventLog {
    /// Starts reading the saga topics from the beginning.
    pub fn start(stack: &Stack) -> TestResult<EventLog> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", saga_runtime::testing::kafka_brokers())
            .set("group.id", format!("{}event-log", stack.prefix))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        let topics: Vec<String> = [
            topics::ORDERS_EVENTS,
            topics::PAYMENTS_EVENTS,
            topics::INVENTORY_EVENTS,
        ]
        .iter()
        .map(|t| stack.topic(t))
        .collect();
        consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
        let log = EventLog {
            records: Arc::default(),
            positions: Arc::default(),
            topics: topics.clone(),
            arrived: Arc::default(),
        };
        let sink = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok(message) = consumer.recv().await else {
                    continue;
                };
                let record = Record::read(&message);
                let key = record.key.clone();
                let position = (record.topic.clone(), record.partition);
                if let Ok(mut records) = sink.records.lock() {
                    records.entry(key).or_default().push(record);
                }
                if let Ok(mut positions) = sink.positions.lock() {
                    positions.insert(position, message.offset() + 1);
                }
                sink.arrived.notify_waiters();
            }
        });
        Ok(log)
    }

    /// Waits until the log has read every record Kafka holds on its topics right now, so a
    /// check that follows sees everything published before it.
    pub async fn wait_caught_up(&self, within: Duration) -> TestResult {
        let watermarks: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", saga_runtime::testing::kafka_brokers())
            .create()?;
        let mut ends = Vec::new();
        for topic in &self.topics {
            for partition in 0..topics::PARTITIONS {
                let (_, high) =
                    watermarks.fetch_watermarks(topic, partition, Duration::from_secs(5))?;
                ends.push(((topic.clone(), partition), high));
            }
        }
        let deadline = Instant::now() + within;
        loop {
            let behind: Vec<String> = {
                let positions = self.positions.lock().map_err(|_| "event log poisoned")?;
                ends.iter()
                    .filter(|(at, high)| {
                        *high > 0 && positions.get(at).copied().unwrap_or(0) < *high
                    })
                    .map(|((topic, partition), high)| format!("{topic}[{partition}] to {high}"))
                    .collect()
            };
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(
                    format!("the event log has not read {behind:?} within {within:?}").into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn records(&self, key: &str) -> Vec<Record> {
        self.records
            .lock()
            .map(|r| r.get(key).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The saga's events in the order they happened (event time, then ID).
    pub fn events(&self, saga_id: Uuid) -> Vec<Envelope> {
        let mut events: Vec<Envelope> = self
            .records(&saga_id.to_string())
            .into_iter()
            .filter_map(|r| r.envelope)
            .collect();
        events.sort_by_key(|e| (e.time, e.id));
        events
    }

    /// How the saga's events break causal order, if they do. Each event must come after one
    /// of its possible causes (by event time), and each topic must carry the saga's events in
    /// the order their producer wrote them (arrival order never goes back in time). A record
    /// repeating an event already read (a replay) is left out of the second check, and the
    /// events in `forged` (which a scenario published itself, out of order on purpose) out of
    /// both.
    pub fn causal_order_violations(&self, saga_id: Uuid, forged: &HashSet<Uuid>) -> Vec<String> {
        let mut violations = Vec::new();
        let mut events = self.events(saga_id);
        events.retain(|event| !forged.contains(&event.id));
        for event in &events {
            let causes = causes(event.event_type());
            if causes.is_empty() {
                continue;
            }
            let caused = events.iter().any(|earlier| {
                causes.contains(&earlier.event_type()) && earlier.time <= event.time
            });
            if !caused {
                violations.push(format!(
                    "saga {saga_id}: {} at {} has none of {causes:?} before it",
                    event.event_type(),
                    event.time
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut latest: HashMap<String, Envelope> = HashMap::new();
        for record in self.records(&saga_id.to_string()) {
            let Some(event) = record.envelope else {
                continue;
            };
            if !seen.insert(event.id) {
                continue;
            }
            if let Some(before) = latest.get(&record.topic)
                && before.time > event.time
            {
                violations.push(format!(
                    "saga {saga_id}: {} arrived on {} after the later {}",
                    event.event_type(),
                    record.topic,
                    before.event_type()
                ));
            }
            latest.insert(record.topic, event);
        }
        violations
    }

    pub fn event_types(&self, saga_id: Uuid) -> Vec<&'static str> {
        self.events(saga_id)
            .iter()
            .map(Envelope::event_type)
            .collect()
    }

    /// Waits until each of the sagas has at least `count` events in the log, and fails
    /// naming the ones still short when `within` runs out. Unlike [`EventLog::wait_for`] it
    /// returns as soon as they have, so that sagas still running can be acted on.
    pub async fn wait_until_each_has(
        &self,
        saga_ids: &[Uuid],
        count: usize,
        within: Duration,
    ) -> TestResult {
        let deadline = Instant::now() + within;
        loop {
            let short: Vec<&Uuid> = saga_ids
                .iter()
                .filter(|saga_id| self.events(**saga_id).len() < count)
                .collect();
            if short.is_empty() {
                return Ok(());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !remaining.is_zero(),
                "sagas with fewer than {count} events in the log after {within:?}: {short:?}"
            );
            let _ = tokio::time::timeout(
                remaining.min(Duration::from_millis(100)),
                self.arrived.notified(),
            )
            .await;
        }
    }

    /// Waits until the saga has at least `count` events, then a little longer so that an
    /// unexpected extra event would show up too, and returns the event types.
    pub async fn wait_for(
        &self,
        saga_id: Uuid,
        count: usize,
        within: Duration,
    ) -> TestResult<Vec<&'static str>> {
        let deadline = Instant::now() + within;
        while self.events(saga_id).len() < count {
            let remaining = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !remaining.is_zero(),
                "saga {saga_id} has events {:?} after {within:?}, expected {count}",
                self.event_types(saga_id)
            );
            let _ = tokio::time::timeout(
                remaining.min(Duration::from_millis(100)),
                self.arrived.notified(),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(self.event_types(saga_id))
    }
}

/// Produces raw records to this run's topics, as a misbehaving or replaying producer would.
pub struct RawProducer {
    producer: FutureProducer,
}

impl RawProducer {
    pub fn new() -> TestResult<RawProducer> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", saga_runtime::testing::kafka_brokers())
            .set("message.timeout.ms", "10000")
            .create()?;
        Ok(RawProducer { producer })
    }

    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &str,
        payload: &[u8],
    ) -> TestResult {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
        Ok(())
    }

    /// Publishes `record` again, byte for byte, to its topic and key.
    pub async fn republish(&self, record: &Record) -> TestResult {
        self.send(&record.topic, None, &record.key, &record.payload)
            .await
    }
}

/// Reads `topic` from the beginning until it has been quiet for a second.
pub async fn read_topic(topic: &str, within: Duration) -> TestResult<Vec<Record>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", saga_runtime::testing::kafka_brokers())
        .set("group.id", format!("reader-{}", Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + within;
    let mut records = Vec::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(message)) => records.push(Record::read(&message)),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) if !records.is_empty() => break,
            Err(_) => {}
        }
    }
    Ok(records)
}
