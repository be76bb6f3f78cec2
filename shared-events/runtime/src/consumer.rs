//! The consumer loop. It reads a service's topics and hands each decoded event to the
//! service's [`EventHandler`], which applies it in one local transaction (inbox row, effect,
//! outbox rows). The record's offset is stored only after that transaction has committed.
//!
//! Records are spread over parallel lanes by partition: one partition always goes to the same
//! lane, so a saga's events (one key, one partition) are applied in order, while different
//! partitions proceed side by side.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use shared_events::Envelope;
use shared_events::envelope::headers;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{ConsumerSettings, KafkaSettings};
use crate::kafka::{self, CommitOnRevoke};
use crate::telemetry;

/// A service's reaction to events. `handle` must either commit the event's whole effect (inbox
/// row included) and return `Ok`, or commit nothing and return `Err`; the loop then retries.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, event: Envelope) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A failure to apply an event. Retried with backoff: a handler must not return an error for
/// a business outcome (a declined payment is an event, not an error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub Box<dyn std::error::Error + Send + Sync>);

impl HandlerError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }
}

type SagaConsumer = StreamConsumer<CommitOnRevoke>;

/// One service's subscription: topics, group, lanes and handler.
pub struct EventConsumer<H> {
    consumer: Arc<SagaConsumer>,
    handler: Arc<H>,
    settings: ConsumerSettings,
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
        handler: H,
    ) -> Result<Self, KafkaError> {
        let consumer: SagaConsumer = kafka::consumer_config(kafka_settings, client_id)
            .create_with_context(CommitOnRevoke)?;
        let physical: Vec<String> = topics.iter().map(|t| kafka_settings.topic(t)).collect();
        let names: Vec<&str> = physical.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        tracing::info!(topics = ?names, group = %kafka_settings.group_id, "consumer subscribed");
        Ok(Self {
            consumer: Arc::new(consumer),
            handler: Arc::new(handler),
            settings,
        })
    }

    /// Runs until `shutdown`. Each lane finishes the record in hand, then the stored offsets
    /// are committed synchronously before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let lanes = self.settings.lanes.max(1);
        let mut senders = Vec::with_capacity(lanes);
        let mut workers = JoinSet::new();
        for lane in 0..lanes {
            // A short queue per lane: the broker, not memory, holds the backlog.
            let (tx, rx) = mpsc::channel::<OwnedMessage>(64);
            senders.push(tx);
            let worker = Lane {
                consumer: Arc::clone(&self.consumer),
                handler: Arc::clone(&self.handler),
                settings: self.settings.clone(),
                shutdown: shutdown.clone(),
            };
            workers.spawn(
                worker
                    .run(rx)
                    .instrument(tracing::info_span!("consumer_lane", lane)),
            );
        }

        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                received = self.consumer.recv() => received,
            };
            match message {
                Ok(message) => {
                    let lane = lane_of(message.topic(), message.partition(), lanes);
                    let owned = message.detach();
                    // A closed lane means shutdown has begun; the record is redelivered later.
                    let sent = tokio::select! {
                        () = shutdown.cancelled() => break,
                        sent = senders[lane].send(owned) => sent,
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "kafka consumer error; continuing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }

        drop(senders);
        while workers.join_next().await.is_some() {}
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("consumer stopped; offsets committed"),
            Err(error) => tracing::info!(%error, "consumer stopped; nothing left to commit"),
        }
    }
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
    settings: ConsumerSettings,
    shutdown: CancellationToken,
}

impl<H: EventHandler> Lane<H> {
    async fn run(self, mut records: mpsc::Receiver<OwnedMessage>) {
        while let Some(record) = records.recv().await {
            if self.shutdown.is_cancelled() {
                // Not applied and not stored: the next owner of the partition gets it.
                break;
            }
            if self.apply(&record).await {
                self.store_offset(&record);
            } else {
                break;
            }
        }
    }

    /// Returns whether the record is done with (applied, duplicate or undecodable), and so
    /// whether its offset may be stored. Returns false only when shutdown interrupted retries.
    async fn apply(&self, record: &OwnedMessage) -> bool {
        let (topic, partition, offset) = (record.topic(), record.partition(), record.offset());
        let Some(payload) = record.payload() else {
            tracing::error!(topic, partition, offset, "record without a value skipped");
            return true;
        };
        let envelope = match Envelope::decode(payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::error!(topic, partition, offset, %error, "undecodable record skipped");
                return true;
            }
        };
        let span = tracing::info_span!(
            "consume",
            event_type = envelope.event_type(),
            event_id = %envelope.id,
            saga_id = ?envelope.sagaid,
            topic,
            partition,
            offset,
        );
        telemetry::continue_trace(&span, header(record, headers::TRACEPARENT));

        let mut backoff = self.settings.retry_backoff_initial;
        let mut attempt = 1u32;
        loop {
            match self
                .handler
                .handle(envelope.clone())
                .instrument(span.clone())
                .await
            {
                Ok(()) => return true,
                Err(error) => {
                    span.in_scope(|| {
                        tracing::warn!(attempt, %error, retry_in = ?backoff, "event handler failed; retrying");
                    });
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.shutdown.cancelled() => return false,
                    }
                    backoff = (backoff * 2).min(self.settings.retry_backoff_max);
                    attempt = attempt.saturating_add(1);
                }
            }
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
