//! librdkafka client configuration. Producer and consumer share the broker list, the client ID
//! and the timeouts; librdkafka's own logs reach `tracing` through rdkafka's `tracing` feature.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use crate::config::KafkaSettings;
pub use crate::producer::SagaProducer;
use crate::{fault, metrics};

fn base_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", client_id)
        .set("socket.timeout.ms", millis(settings.socket_timeout))
        .set("log.connection.close", "false")
        // Nagle's algorithm holds small writes back for up to ~40 ms (delayed ACKs); a saga is a
        // chain of small records, so every hop would pay it.
        .set("socket.nagle.disable", "true");
    with_client_properties(&mut config, settings);
    config
}

/// Adds the operator's `KAFKA_CLIENT_*` properties (SASL, TLS, …) to `config`, last, so they
/// win over the defaults above.
pub fn with_client_properties(config: &mut ClientConfig, settings: &KafkaSettings) {
    for (property, value) in &settings.client {
        config.set(property, value);
    }
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// An idempotent producer: `acks=all`, retries without duplicates or reordering within a
/// partition, and a bounded `message.timeout.ms` after which the relay retries the batch.
///
/// Records are not compressed. A saga event is a few hundred bytes and a batch holds a few of
/// them, so compression saves little, and every compressed batch is compressed by the relay
/// and decompressed by the broker (to validate it) and by each consumer. The difference from
/// `lz4` was within the benchmark's noise at 500 sagas/s (broker CPU 0.73 against 0.74 ms per
/// saga); this setting is the one with less work in it.
pub fn producer(settings: &KafkaSettings, client_id: &str) -> Result<SagaProducer, KafkaError> {
    let mut config = base_config(settings, client_id);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", millis(settings.message_timeout))
        // A float in librdkafka: sub-millisecond lingers are kept, not rounded to 0.
        .set(
            "linger.ms",
            format!("{:.3}", settings.producer_linger.as_secs_f64() * 1000.0),
        )
        .set("compression.type", "none");
    SagaProducer::new(&config, QuietErrors::default())
}

/// How often a client logs librdkafka's errors that are not fatal.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Logs a stream of errors at most once per interval, with how many there were since. While
/// the broker is down, librdkafka reports an error for every failed connection attempt, about
/// 20 a second per client; logged one by one they bury everything else.
#[derive(Debug)]
pub(crate) struct ErrorLog {
    interval: Duration,
    /// When an error was last logged, and how many came since.
    since: Mutex<(Option<Instant>, u64)>,
}

impl Default for ErrorLog {
    fn default() -> Self {
        Self {
            interval: ERROR_LOG_INTERVAL,
            since: Mutex::new((None, 0)),
        }
    }
}

impl ErrorLog {
    pub(crate) fn note(&self, error: &dyn std::fmt::Display, what: &str) {
        let mut since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        since.1 += 1;
        if since.0.is_some_and(|at| at.elapsed() < self.interval) {
            return;
        }
        tracing::warn!(%error, errors = since.1, "{what}; continuing");
        *since = (Some(Instant::now()), 0);
    }
}

/// A client context whose librdkafka errors are logged through an [`ErrorLog`] instead of one
/// line each (rdkafka's default).
#[derive(Debug, Default)]
pub struct QuietErrors {
    errors: ErrorLog,
}

impl ClientContext for QuietErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors
            .note(&format_args!("{error}: {reason}"), "kafka producer errors");
    }
}

/// The process's producer, shared by the relay, the dead letters and `/health`. A producer
/// that librdkafka declares fatally failed (e.g. its idempotence state cannot be recovered)
/// refuses every record for good; [`SharedProducer::usable`] replaces it, as the consumer loop
/// replaces a dead consumer, so the outbox does not grow for ever behind it.
#[derive(Clone)]
pub struct SharedProducer {
    current: Arc<RwLock<SagaProducer>>,
    settings: KafkaSettings,
    client_id: String,
}

impl std::fmt::Debug for SharedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedProducer")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl SharedProducer {
    pub fn new(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            current: Arc::new(RwLock::new(producer(settings, client_id)?)),
            settings: settings.clone(),
            client_id: client_id.to_owned(),
        })
    }

    /// A second producer like this one, but without linger: for records that should leave
    /// at once rather than wait for company.
    pub fn without_linger(&self) -> Result<Self, KafkaError> {
        let settings = KafkaSettings {
            producer_linger: Duration::ZERO,
            ..self.settings.clone()
        };
        Self::new(&settings, &self.client_id)
    }

    /// The current producer, failed or not: for requests that only read (metadata).
    pub fn current(&self) -> SagaProducer {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The producer to publish with: the current one, or a new one in its place if the
    /// current one has failed fatally. `Err` if a new one cannot be made yet.
    pub fn usable(&self) -> Result<SagaProducer, KafkaError> {
        let current = self.current();
        if fatal_error(&current).is_none() {
            return Ok(current);
        }
        let mut slot = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // Another caller may have replaced it meanwhile.
        if !std::ptr::eq(slot.client(), current.client()) {
            return Ok(slot.clone());
        }
        let fresh = producer(&self.settings, &self.client_id)?;
        *slot = fresh.clone();
        metrics::PRODUCERS_REPLACED.increment();
        tracing::warn!("kafka producer replaced after a fatal error");
        Ok(fresh)
    }
}

/// Why librdkafka (or an injected fault) declares the producer dead, if it does.
fn fatal_error(producer: &SagaProducer) -> Option<String> {
    let fatal = producer
        .client()
        .fatal_error()
        .map(|(code, reason)| format!("{code:?}: {reason}"))
        .or_else(fault::injected_producer_fatal);
    if let Some(reason) = &fatal {
        tracing::error!(reason, "kafka producer failed fatally");
    }
    fatal
}

/// A consumer that never stores an offset by itself: the consumer loop stores each record's
/// offset after the record's transaction commits, and auto-commit then commits what is stored.
pub fn consumer_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = base_config(settings, client_id);
    config
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", millis(settings.session_timeout))
        .set("fetch.min.bytes", settings.fetch_min_bytes.to_string())
        .set("fetch.wait.max.ms", millis(settings.fetch_wait_max))
        .set("partition.assignment.strategy", "cooperative-sticky")
        // The consumer lag gauge comes from librdkafka's statistics (`CommitOnRevoke::stats`).
        .set("statistics.interval.ms", millis(STATISTICS_INTERVAL));
    // Static membership: a restarted instance with the same ID takes its partitions back at
    // once instead of after `session.timeout.ms`.
    if let Some(instance) = &settings.group_instance_id {
        config.set("group.instance.id", instance);
    }
    config
}

/// How often librdkafka reports its statistics, from which the consumer lag gauge is set.
const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// Commits stored offsets synchronously when partitions are taken away, so the next owner
/// starts after the last committed record instead of redoing up to a second of work. Its
/// librdkafka errors are logged through an [`ErrorLog`].
#[derive(Debug, Default)]
pub struct CommitOnRevoke {
    errors: ErrorLog,
}

impl ClientContext for CommitOnRevoke {
    /// Sets `saga_consumer_lag` for each partition librdkafka reports. A partition this
    /// instance does not consume (any more) reports no lag (-1) and is set to 0, so that a
    /// sum over the instances counts each partition's lag once.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, state) in &statistics.topics {
            for (partition, partition_state) in &state.partitions {
                // -1 is librdkafka's "unassigned" pseudo-partition.
                if *partition < 0 {
                    continue;
                }
                #[allow(clippy::cast_precision_loss)]
                let lag = partition_state.consumer_lag.max(0) as f64;
                metrics::CONSUMER_LAG.set_with(
                    lag,
                    &[
                        ("topic", topic.clone()),
                        ("partition", partition.to_string()),
                    ],
                );
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.note(
            &format_args!("{error}: {reason}"),
            "kafka consumer client errors",
        );
    }
}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            tracing::info!(
                partitions = partitions.count(),
                "partitions revoked; committing stored offsets"
            );
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(())
                | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => tracing::warn!(%error, "commit on revoke failed"),
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(partitions = partitions.count(), "partitions assigned");
        }
    }
}
