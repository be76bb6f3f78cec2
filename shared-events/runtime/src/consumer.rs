//! The consumer loop. It reads a service's topics and hands each decoded event to the
//! service's [`EventHandler`], which applies it in one local transaction (inbox row, effect,
//! outbox rows). The record's offset is stored only after that transaction has committed.
//!
//! Records are spread over parallel lanes by partition: one partition always goes to the same
//! lane, so a saga's events (one key, one partition) are applied in order, while different
//! partitions proceed side by side.
//!
//! What happens to a record that does not simply apply:
//! - undecodable or oversized: sent to the dead-letter topic `<topic>.dlq` with the reason and
//!   its origin in headers, then skipped;
//! - the database is unreachable or the failure is transient (serialization failure, deadlock,
//!   timeout): retried with bounded exponential backoff until it applies;
//! - a permanent failure: retried `max_attempts` times, then parked for an operator
//!   ([`crate::parking`]), and the saga's later events park behind it.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sea_orm::DbErr;
use shared_events::Envelope;
use shared_events::envelope::headers;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{ConsumerSettings, KafkaSettings};
use crate::fault::{self, CrashPoint};
use crate::kafka::{self, CommitOnRevoke};
use crate::metrics;
use crate::parking::{Origin, Parking};
use crate::telemetry;

/// A service's reaction to events. `handle` must either commit the event's whole effect (inbox
/// row included) and return `Ok`, or commit nothing and return `Err`; the loop then retries.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, event: Envelope) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A failure to apply an event. A handler must not return an error for a business outcome
/// (a declined payment is an event, not an error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub Box<dyn std::error::Error + Send + Sync>);

/// How the consumer treats a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The database cannot be reached: retry until it can; parking would need it too.
    Unavailable,
    /// Serialization failure, deadlock, timeout: retrying is the cure.
    Transient,
    /// Anything else: retrying a few times is worth it, then an operator must look.
    Permanent,
}

impl HandlerError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }

    /// Classifies by the first database error in the source chain.
    pub fn class(&self) -> FailureClass {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self.0.as_ref());
        while let Some(error) = cause {
            if let Some(db) = error.downcast_ref::<DbErr>() {
                return classify_db(db);
            }
            cause = error.source();
        }
        FailureClass::Permanent
    }
}

/// Classifies a database error by its kind and SQLSTATE.
pub fn classify_db(error: &DbErr) -> FailureClass {
    use sea_orm::RuntimeErr;
    let runtime = match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return FailureClass::Unavailable,
        DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return FailureClass::Permanent,
    };
    let RuntimeErr::SqlxError(sqlx_error) = runtime else {
        return FailureClass::Permanent;
    };
    match sqlx_error.as_ref() {
        sea_orm::sqlx::Error::Io(_)
        | sea_orm::sqlx::Error::PoolTimedOut
        | sea_orm::sqlx::Error::PoolClosed => FailureClass::Unavailable,
        sea_orm::sqlx::Error::Database(db) => match db.code().as_deref() {
            // serialization_failure, deadlock_detected, lock_not_available, query_canceled
            // (statement timeout), too_many_connections, admin/crash shutdown, cannot_connect_now.
            Some("40001" | "40P01" | "55P03" | "57014" | "53300" | "57P01" | "57P02" | "57P03") => {
                FailureClass::Transient
            }
            Some(code) if code.starts_with("08") => FailureClass::Unavailable,
            _ => FailureClass::Permanent,
        },
        _ => FailureClass::Permanent,
    }
}

type SagaConsumer = StreamConsumer<CommitOnRevoke>;

/// One service's subscription: topics, group, lanes and handler.
pub struct EventConsumer<H> {
    consumer: Arc<SagaConsumer>,
    /// Physical topic names, kept to subscribe a replacement client.
    topics: Vec<String>,
    client_id: String,
    handler: Arc<H>,
    dead_letters: FutureProducer,
    parking: Parking,
    settings: ConsumerSettings,
    kafka: KafkaSettings,
}

impl<H> std::fmt::Debug for EventConsumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<H: EventHandler> EventConsumer<H> {
    /// Subscribes the service's group to the logical `topics` (the prefix is applied here).
    pub fn subscribe(
        kafka_settings: &KafkaSettings,
        settings: ConsumerSettings,
        client_id: &str,
        topics: &[&str],
        handler: Arc<H>,
        dead_letters: FutureProducer,
        parking: Parking,
    ) -> Result<Self, KafkaError> {
        let physical: Vec<String> = topics.iter().map(|t| kafka_settings.topic(t)).collect();
        let consumer = connect(kafka_settings, client_id, &physical)?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topics: physical,
            client_id: client_id.to_owned(),
            handler,
            dead_letters,
            parking,
            settings,
            kafka: kafka_settings.clone(),
        })
    }

    /// Runs until `shutdown`. Each lane finishes the record in hand, then the stored offsets
    /// are committed synchronously before returning. A client that librdkafka declares dead
    /// (a fatal error, e.g. fenced after a broker restart) is replaced by a new one; the inbox
    /// makes the records it redelivers harmless.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut consumer = Arc::clone(&self.consumer);
        loop {
            match self.session(Arc::clone(&consumer), &shutdown).await {
                SessionEnd::Shutdown => break,
                SessionEnd::Fatal(reason) => {
                    tracing::error!(reason, "kafka consumer failed fatally; replacing it");
                    consumer = loop {
                        tokio::select! {
                            () = tokio::time::sleep(self.settings.retry_backoff_max) => {}
                            () = shutdown.cancelled() => return,
                        }
                        match connect(&self.kafka, &self.client_id, &self.topics) {
                            Ok(fresh) => break Arc::new(fresh),
                            Err(error) => {
                                tracing::warn!(%error, "kafka consumer cannot be created yet; retrying")
                            }
                        }
                    };
                }
            }
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("consumer stopped; offsets committed"),
            Err(error) => tracing::info!(%error, "consumer stopped; nothing left to commit"),
        }
    }

    /// Feeds the lanes from one client until shutdown or until the client fails fatally.
    async fn session(
        &self,
        consumer: Arc<SagaConsumer>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let lanes = self.settings.lanes.max(1);
        // Stops this session's lanes without stopping the service.
        let session_stop = shutdown.child_token();
        let mut senders = Vec::with_capacity(lanes);
        let mut workers = JoinSet::new();
        for lane in 0..lanes {
            // A short queue per lane: the broker, not memory, holds the backlog.
            let (tx, rx) = mpsc::channel::<OwnedMessage>(64);
            senders.push(tx);
            let worker = Lane {
                consumer: Arc::clone(&consumer),
                handler: Arc::clone(&self.handler),
                dead_letters: self.dead_letters.clone(),
                parking: self.parking.clone(),
                settings: self.settings.clone(),
                kafka: self.kafka.clone(),
                shutdown: session_stop.clone(),
            };
            workers.spawn(
                worker
                    .run(rx)
                    .instrument(tracing::info_span!("consumer_lane", lane)),
            );
        }

        let end = loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break SessionEnd::Shutdown,
                received = consumer.recv() => received,
            };
            match message {
                Ok(message) => {
                    let lane = lane_of(message.topic(), message.partition(), lanes);
                    let owned = message.detach();
                    // A closed lane means shutdown has begun; the record is redelivered later.
                    let sent = tokio::select! {
                        () = shutdown.cancelled() => break SessionEnd::Shutdown,
                        sent = senders[lane].send(owned) => sent,
                    };
                    if sent.is_err() {
                        break SessionEnd::Shutdown;
                    }
                }
                Err(error) => {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        break SessionEnd::Fatal(format!("{code:?}: {reason}"));
                    }
                    tracing::warn!(%error, "kafka consumer error; continuing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        if matches!(end, SessionEnd::Fatal(_)) {
            // Records in the lanes' queues belong to a dead client: drop them unapplied.
            session_stop.cancel();
        }
        drop(senders);
        while workers.join_next().await.is_some() {}
        end
    }
}

enum SessionEnd {
    Shutdown,
    Fatal(String),
}

fn connect(
    kafka: &KafkaSettings,
    client_id: &str,
    topics: &[String],
) -> Result<SagaConsumer, KafkaError> {
    let consumer: SagaConsumer =
        kafka::consumer_config(kafka, client_id).create_with_context(CommitOnRevoke)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    tracing::info!(topics = ?names, group = %kafka.group_id, "consumer subscribed");
    Ok(consumer)
}

fn lane_of(topic: &str, partition: i32, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    (topic, partition).hash(&mut hasher);
    usize::try_from(hasher.finish() % lanes as u64).unwrap_or(0)
}

/// One lane: applies its records strictly in arrival order.
struct Lane<H> {
    consumer: Arc<SagaConsumer>,
    handler: Arc<H>,
    dead_letters: FutureProducer,
    parking: Parking,
    settings: ConsumerSettings,
    kafka: KafkaSettings,
    shutdown: CancellationToken,
}

/// What became of a record.
enum Outcome {
    /// Applied, a duplicate, dead-lettered or parked: its offset may be stored.
    Done,
    /// Shutdown interrupted it: not stored, so the partition's next owner gets it again.
    Interrupted,
}

impl<H: EventHandler> Lane<H> {
    async fn run(self, mut records: mpsc::Receiver<OwnedMessage>) {
        while let Some(record) = records.recv().await {
            if self.shutdown.is_cancelled() {
                break;
            }
            match self.process(&record).await {
                Outcome::Done => {
                    fault::crash_point(CrashPoint::AfterConsumeCommitBeforeOffset);
                    self.store_offset(&record);
                }
                Outcome::Interrupted => break,
            }
        }
    }

    async fn process(&self, record: &OwnedMessage) -> Outcome {
        let payload = record.payload().unwrap_or_default();
        if payload.len() > self.settings.max_record_bytes {
            let reason = format!(
                "record of {} bytes exceeds the limit of {}",
                payload.len(),
                self.settings.max_record_bytes
            );
            return self.dead_letter(record, &reason).await;
        }
        let envelope = match Envelope::decode(payload) {
            Ok(envelope) => envelope,
            Err(error) => return self.dead_letter(record, &error.to_string()).await,
        };
        let span = tracing::info_span!(
            "consume",
            event_type = envelope.event_type(),
            event_id = %envelope.id,
            saga_id = ?envelope.sagaid,
            topic = record.topic(),
            partition = record.partition(),
            offset = record.offset(),
        );
        telemetry::continue_trace(&span, header(record, headers::TRACEPARENT));
        self.apply(record, envelope).instrument(span).await
    }

    async fn apply(&self, record: &OwnedMessage, envelope: Envelope) -> Outcome {
        let origin = Origin {
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
        };
        if self.parking.blocks(envelope.sagaid) {
            let reason = "an earlier event of this saga is parked";
            return self.park(&envelope, &origin, reason, 0).await;
        }
        let mut backoff = self.settings.retry_backoff_initial;
        let mut attempt = 1u32;
        loop {
            let error = match self.handler.handle(envelope.clone()).await {
                Ok(()) => {
                    metrics::EVENTS_APPLIED.increment();
                    return Outcome::Done;
                }
                Err(error) => error,
            };
            let class = error.class();
            if class == FailureClass::Permanent && attempt >= self.settings.max_attempts {
                return self
                    .park(&envelope, &origin, &error.to_string(), attempt)
                    .await;
            }
            metrics::EVENTS_RETRIED.increment();
            tracing::warn!(attempt, ?class, %error, retry_in = ?backoff, "event handler failed; retrying");
            if !self.pause(backoff).await {
                return Outcome::Interrupted;
            }
            backoff = (backoff * 2).min(self.settings.retry_backoff_max);
            attempt = attempt.saturating_add(1);
        }
    }

    async fn park(
        &self,
        envelope: &Envelope,
        origin: &Origin,
        reason: &str,
        attempts: u32,
    ) -> Outcome {
        let mut backoff = self.settings.retry_backoff_initial;
        loop {
            match self.parking.park(envelope, origin, reason, attempts).await {
                Ok(()) => return Outcome::Done,
                Err(error) => tracing::warn!(%error, "cannot park the event yet; retrying"),
            }
            if !self.pause(backoff).await {
                return Outcome::Interrupted;
            }
            backoff = (backoff * 2).min(self.settings.retry_backoff_max);
        }
    }

    /// Publishes the record unchanged to `<topic>.dlq`, with why and where from in headers,
    /// and waits for the acknowledgement: the record is skipped only once it is safe there.
    async fn dead_letter(&self, record: &OwnedMessage, reason: &str) -> Outcome {
        let (topic, partition, offset) = (record.topic(), record.partition(), record.offset());
        tracing::error!(
            topic,
            partition,
            offset,
            reason,
            "undecodable record sent to the dead-letter topic"
        );
        let dlq = shared_events::topics::dead_letter(topic);
        let (partition_text, offset_text) = (partition.to_string(), offset.to_string());
        let mut backoff = self.settings.retry_backoff_initial;
        loop {
            let mut dlq_headers = OwnedHeaders::new()
                .insert(Header {
                    key: "dlq_reason",
                    value: Some(reason),
                })
                .insert(Header {
                    key: "dlq_original_topic",
                    value: Some(topic),
                })
                .insert(Header {
                    key: "dlq_original_partition",
                    value: Some(partition_text.as_str()),
                })
                .insert(Header {
                    key: "dlq_original_offset",
                    value: Some(offset_text.as_str()),
                });
            if let Some(original) = record.headers() {
                for h in original.iter() {
                    dlq_headers = dlq_headers.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
            let mut dead = FutureRecord::to(&dlq)
                .headers(dlq_headers)
                .payload(record.payload().unwrap_or_default());
            if let Some(key) = record.key() {
                dead = dead.key(key);
            }
            match self
                .dead_letters
                .send(dead, self.kafka.message_timeout)
                .await
            {
                Ok(_) => {
                    metrics::DEAD_LETTERS.increment();
                    return Outcome::Done;
                }
                Err((error, _)) => {
                    tracing::warn!(%error, dlq, "dead-letter publish failed; retrying")
                }
            }
            if !self.pause(backoff).await {
                return Outcome::Interrupted;
            }
            backoff = (backoff * 2).min(self.settings.retry_backoff_max);
        }
    }

    /// Sleeps for `duration` unless shutdown comes first; returns whether to go on.
    async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.shutdown.cancelled() => false,
        }
    }

    fn store_offset(&self, record: &OwnedMessage) {
        // Fails harmlessly ("Erroneous state") when a rebalance took the partition meanwhile;
        // the new owner redelivers the record and the inbox makes it a no-op.
        if let Err(error) =
            self.consumer
                .store_offset(record.topic(), record.partition(), record.offset())
        {
            tracing::debug!(topic = record.topic(), partition = record.partition(), offset = record.offset(), %error, "offset not stored");
        }
    }
}

fn header<'a>(record: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    let headers = record.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}
