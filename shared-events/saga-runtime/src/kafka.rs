//! librdkafka client configuration. Producer and consumer share the broker list, the client ID
//! and the timeouts; librdkafka's own logs reach `tracing` through rdkafka's `tracing` feature.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use crate::config::KafkaSettings;

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
    config
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
pub fn producer(settings: &KafkaSettings, client_id: &str) -> Result<FutureProducer, KafkaError> {
    base_config(settings, client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", millis(settings.message_timeout))
        .set("linger.ms", millis(settings.producer_linger))
        .set("compression.type", "none")
        .create()
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
        .set("partition.assignment.strategy", "cooperative-sticky");
    // Static membership: a restarted instance with the same ID takes its partitions back at
    // once instead of after `session.timeout.ms`.
    if let Some(instance) = &settings.group_instance_id {
        config.set("group.instance.id", instance);
    }
    config
}

/// Commits stored offsets synchronously when partitions are taken away, so the next owner
/// starts after the last committed record instead of redoing up to a second of work.
#[derive(Debug, Default)]
pub struct CommitOnRevoke;

impl ClientContext for CommitOnRevoke {}

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
