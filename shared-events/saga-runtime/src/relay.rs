//! The outbox relay: claims and deletes waiting rows in one transaction, publishes them with
//! the idempotent producer, and commits the deletion only once Kafka has acknowledged them.
//!
//! If the process dies before that commit, the rows are published again after restart;
//! consumers' inboxes make that harmless (at least once). If Kafka is down, the batch's
//! transaction rolls back, the rows stay, and the relay retries after a pause: nothing is lost.

use futures::future::join_all;
use opentelemetry_semantic_conventions::attribute as semconv;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use sea_orm::{DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement, TransactionTrait};
use shared_events::envelope::headers;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use uuid::Uuid;

use crate::config::{KafkaSettings, RelaySettings};
use crate::fault::{self, CrashPoint};
use crate::health::{BEAT_INTERVAL, Health, Loop};
use crate::kafka::SharedProducer;
use crate::metrics;
use crate::outbox::{AnnouncedCommits, OutboxSignal};
use crate::telemetry;

/// Publishes one service's outbox. Several relays (several instances of a service) may run
/// against one database: `SKIP LOCKED` shares the rows out between them.
pub struct Relay {
    db: DatabaseConnection,
    producer: SharedProducer,
    /// The same producer without linger, made when the relay starts (or, if that failed, at
    /// the first small batch): see [`SENT_WITHOUT_LINGER`].
    without_linger: tokio::sync::OnceCell<SharedProducer>,
    signal: OutboxSignal,
    settings: RelaySettings,
    kafka: KafkaSettings,
    health: Health,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox query failed: {0}")]
    Db(#[from] DbErr),
    #[error("no usable kafka producer: {0}")]
    Producer(KafkaError),
    #[error("{failed} of {claimed} events were not acknowledged by Kafka: {first_error}")]
    Publish {
        claimed: usize,
        failed: usize,
        first_error: rdkafka::error::KafkaError,
    },
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub rows: usize,
    /// Rows are known to be waiting: the batch was full, or held back a key's later rows.
    pub more_waiting: bool,
}

/// Batches of at most this many rows go out through a producer without linger. A small
/// batch is light load: the linger (`KAFKA_LINGER_MS`) would only delay it, and every hop of
/// a saga would pay it. A larger batch waits for the linger, so that all its records, queued
/// one after another, leave in one produce request instead of the first ones alone. Order
/// holds across the two producers because the relay claims a batch only once the previous
/// one is acknowledged.
pub const SENT_WITHOUT_LINGER: usize = 2;

/// One outbox row as the relay reads it.
#[derive(Debug, FromQueryResult)]
struct OutboxRow {
    id: i64,
    event_id: Uuid,
    saga_id: Option<Uuid>,
    topic: String,
    message_key: String,
    event_type: String,
    /// The envelope as the transaction wrote it; published unchanged.
    payload: String,
    traceparent: Option<String>,
    /// A later row of the same key waits behind this one; the claim held it back.
    has_successor: bool,
}

/// Claims and deletes the oldest waiting rows, but of each key only its oldest row: a saga's
/// second event is never published before its first, even when another relay holds the first
/// (its deletion is not committed, so it still counts as waiting). The delete is undone by a
/// rollback when Kafka does not acknowledge the batch; claiming and deleting in one statement
/// saves a round trip per batch. It also says which claimed rows have a successor waiting, so
/// the relay knows to come back at once.
///
/// "An earlier (later) row of the same key" is written as a row comparison on
/// `(message_key, id)`, the columns of the `outbox_key_order` index, so that it can only be
/// answered from that index: a few entries of one key. Written as `id < o.id`, the planner,
/// misled by a queue table's stale statistics, answered it from the primary key instead,
/// reading every earlier row of the outbox for each candidate, a cost that grows with the
/// rows deleted since the last vacuum (`pg_stat_user_indexes` counted 1.7 billion index
/// tuples read on one outbox).
const CLAIM: &str = "\
    WITH claimed AS MATERIALIZED ( \
        SELECT id FROM outbox o \
        WHERE NOT EXISTS (SELECT 1 FROM outbox earlier \
                          WHERE earlier.message_key = o.message_key \
                            AND (earlier.message_key, earlier.id) < (o.message_key, o.id)) \
        ORDER BY id \
        LIMIT $1 \
        FOR UPDATE SKIP LOCKED) \
    DELETE FROM outbox o WHERE o.id = ANY (ARRAY (SELECT id FROM claimed)) \
    RETURNING o.id, o.event_id, o.saga_id, o.topic, o.message_key, o.event_type, o.payload::text AS payload, \
              o.traceparent, \
              EXISTS (SELECT 1 FROM outbox later \
                      WHERE later.message_key = o.message_key \
                        AND (later.message_key, later.id) > (o.message_key, o.id)) \
              AS has_successor";

impl Relay {
    pub fn new(
        db: DatabaseConnection,
        producer: SharedProducer,
        signal: OutboxSignal,
        settings: RelaySettings,
        kafka: KafkaSettings,
        health: Health,
    ) -> Self {
        Self {
            db,
            producer,
            without_linger: tokio::sync::OnceCell::new(),
            signal,
            settings,
            kafka,
            health,
        }
    }

    /// Runs until `shutdown`, then publishes what is waiting once more (bounded by the
    /// producer's message timeout) so a clean stop leaves the outbox drained.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("outbox relay started");
        // The producer for small batches is made now rather than at the first one: a new
        // idempotent producer first connects and obtains its producer ID, and the first saga
        // would wait for that at every hop (more than a second in all, seen in the e2e suite).
        if !self.settings_linger_is_zero()
            && let Err(error) = self.without_linger().await
        {
            tracing::warn!(%error, "no producer without linger yet; made at the first small batch");
        }
        let mut commits = self.signal.commits();
        loop {
            // The claim below sees every commit announced until now; only a later one is a
            // reason to claim again.
            commits.see_all();
            match self.publish_batch().await {
                // More is waiting: a full batch's remainder, or a saga's next event, which the
                // claim held back until its predecessor was out. A commit announced since the
                // claim wakes the wait at once, so otherwise the relay may wait.
                Ok(Published {
                    more_waiting: true, ..
                }) => self.health.working(Loop::Relay),
                Ok(Published { .. }) => {
                    self.health.working(Loop::Relay);
                    if !self
                        .wait(self.settings.poll_interval, Some(&mut commits), &shutdown)
                        .await
                    {
                        break;
                    }
                    if !self.settings.linger.is_zero() {
                        tokio::time::sleep(self.settings.linger).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "outbox batch failed; rows stay and are retried");
                    self.health.trouble(Loop::Relay, &error);
                    if !self
                        .wait(self.settings.retry_backoff, None, &shutdown)
                        .await
                    {
                        break;
                    }
                }
            }
        }
        match self.publish_batch().await {
            Ok(Published { rows, .. }) => {
                tracing::info!(published = rows, "outbox relay stopped after a final flush")
            }
            Err(error) => {
                tracing::warn!(%error, "outbox relay stopped; final flush failed, rows stay")
            }
        }
    }

    /// Waits `at_most`, or until a commit announced on `commits` (if given) wakes the relay,
    /// beating meanwhile so that `/health/live` knows the loop runs. False on shutdown.
    async fn wait(
        &self,
        at_most: std::time::Duration,
        mut commits: Option<&mut AnnouncedCommits>,
        shutdown: &CancellationToken,
    ) -> bool {
        let until = tokio::time::Instant::now() + at_most;
        loop {
            let woken = async {
                match commits.as_deref_mut() {
                    Some(commits) => commits.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = woken => return true,
                () = tokio::time::sleep_until(until) => return true,
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(BEAT_INTERVAL) => self.health.beat(Loop::Relay),
            }
        }
    }

    /// The producer for small batches, made the first time it is asked for.
    async fn without_linger(&self) -> Result<&SharedProducer, RelayError> {
        self.without_linger
            .get_or_try_init(|| async { self.producer.without_linger() })
            .await
            .map_err(RelayError::Producer)
    }

    /// Whether the configured linger is 0 already, so one producer serves every batch.
    fn settings_linger_is_zero(&self) -> bool {
        self.kafka.producer_linger.is_zero()
    }

    /// Publishes one batch: how many rows it published and deleted, and whether more wait.
    /// The rows' deletion commits only if Kafka acknowledged every one of them; otherwise it
    /// rolls back and the whole batch is published again later (consumers' inboxes absorb the
    /// records that had gone out).
    pub async fn publish_batch(&self) -> Result<Published, RelayError> {
        let txn = self.db.begin().await?;
        let mut rows = OutboxRow::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            CLAIM,
            [self.settings.batch_size.into()],
        ))
        .all(&txn)
        .await?;
        if rows.is_empty() {
            txn.commit().await?;
            return Ok(Published::default());
        }
        rows.sort_unstable_by_key(|row| row.id);
        let chosen = if rows.len() <= SENT_WITHOUT_LINGER && !self.settings_linger_is_zero() {
            self.without_linger().await?
        } else {
            &self.producer
        };
        // A producer that failed fatally would refuse every record: it is replaced here. If no
        // new one can be made yet, dropping the transaction hands the rows back.
        let producer = chosen.usable().map_err(RelayError::Producer)?;
        let more_waiting = rows.len() as u64 >= self.settings.batch_size
            || rows.iter().any(|row| row.has_successor);

        let topics: Vec<String> = rows
            .iter()
            .map(|row| self.kafka.topic(&row.topic))
            .collect();
        // All sends are queued before any is awaited, so one batch costs one round trip.
        let deliveries = rows.iter().zip(&topics).map(|(row, topic)| {
            let span = send_span(row, topic);
            // The consumer's process span becomes a child of this send span.
            let traceparent = telemetry::traceparent_of(&span);
            let record = FutureRecord::to(topic)
                .key(&row.message_key)
                .payload(row.payload.as_bytes())
                .headers(record_headers(row, traceparent.as_deref()));
            let delivery = producer.send(record, Timeout::After(self.kafka.message_timeout));
            (delivery, span)
        });
        let several = rows.len() > 1;
        let handed_over = std::time::Instant::now();
        let outcomes = join_all(deliveries.map(|(delivery, span)| async move {
            let outcome = delivery.instrument(span.clone()).await;
            if outcome.is_err() {
                span.record("otel.status_code", "ERROR");
            }
            if several {
                // Everything is queued and part of it acknowledged: the middle of a batch.
                fault::crash_point(CrashPoint::MidBatch);
            }
            outcome
        }))
        .await;
        fault::crash_point(CrashPoint::AfterPublishBeforeMark);

        let mut failed = 0;
        let mut first_error = None;
        for (row, outcome) in rows.iter().zip(outcomes) {
            match outcome {
                Ok(_) => {
                    tracing::trace!(event_id = %row.event_id, saga_id = ?row.saga_id, event_type = %row.event_type, "event acknowledged");
                }
                Err((error, _)) => {
                    tracing::warn!(event_id = %row.event_id, saga_id = ?row.saga_id, %error, "event not acknowledged");
                    failed += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(first_error) = first_error {
            // Dropping the transaction rolls the deletion back: every row of the batch waits
            // again, in its place.
            return Err(RelayError::Publish {
                claimed: rows.len(),
                failed,
                first_error,
            });
        }
        metrics::observe(&metrics::RELAY_PUBLISH_DURATION, handed_over.elapsed(), &[]);
        txn.commit().await?;
        metrics::OUTBOX_PUBLISHED.add(rows.len() as u64);
        for row in rows.iter().filter(|row| {
            shared_events::COMPENSATING_EVENT_TYPES.contains(&row.event_type.as_str())
        }) {
            metrics::COMPENSATIONS.add_with(1, &[("type", row.event_type.clone())]);
        }
        tracing::debug!(published = rows.len(), "outbox batch published");
        Ok(Published {
            rows: rows.len(),
            more_waiting,
        })
    }
}

/// The producer span of one record, as the OpenTelemetry messaging conventions name it, in
/// the trace of the transaction that wrote the row. It lasts until Kafka acknowledges the
/// record.
fn send_span(row: &OutboxRow, topic: &str) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        { semconv::MESSAGING_SYSTEM } = "kafka",
        { semconv::MESSAGING_OPERATION_NAME } = "send",
        { semconv::MESSAGING_OPERATION_TYPE } = "send",
        { semconv::MESSAGING_DESTINATION_NAME } = topic,
        { semconv::MESSAGING_MESSAGE_ID } = %row.event_id,
        { semconv::MESSAGING_KAFKA_MESSAGE_KEY } = %row.message_key,
        saga_id = row.saga_id.map(tracing::field::display),
        event_type = %row.event_type,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    telemetry::continue_trace(&span, row.traceparent.as_deref());
    span
}

fn record_headers(row: &OutboxRow, traceparent: Option<&str>) -> OwnedHeaders {
    let saga_id = row.saga_id.map(|id| id.to_string());
    let mut headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: headers::CONTENT_TYPE,
            value: Some(headers::CONTENT_TYPE_VALUE),
        })
        .insert(Header {
            key: headers::EVENT_TYPE,
            value: Some(row.event_type.as_str()),
        });
    if let Some(saga_id) = &saga_id {
        headers = headers.insert(Header {
            key: headers::SAGA_ID,
            value: Some(saga_id.as_str()),
        });
    }
    if let Some(traceparent) = traceparent {
        headers = headers.insert(Header {
            key: headers::TRACEPARENT,
            value: Some(traceparent),
        });
    }
    headers
}
