//! Retention of the inbox. Every consumed event a service reacts to leaves an inbox row, so
//! without a limit the table grows with every saga, forever.
//!
//! **Rule:** the inbox must keep an event's ID longer than Kafka keeps the event. A record
//! older than the inbox's memory could be read again (a consumer group reset to the earliest
//! offset, a replay from a backup of the offsets) and would then apply a second time. So at
//! start-up [`check_topics`] compares `INBOX_RETENTION_MS` with the `retention.ms` of every
//! topic the service consumes, and refuses to start if a topic keeps records as long or
//! longer (or forever).
//!
//! The job deletes expired rows in small batches, each its own short transaction, with a
//! pause between batches, so it never holds many locks or stalls the consumer's inserts.
//! Parked events need no job: a retry deletes each one it applies. Outbox rows are deleted as
//! soon as Kafka has them.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaSettings, RetentionSettings};
use crate::metrics;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "topic {topic} keeps records for {topic_retention}, but the inbox forgets events after \
         {inbox:?} (INBOX_RETENTION_MS): a replay of older records would apply them twice; \
         raise INBOX_RETENTION_MS above the topic's retention.ms"
    )]
    TopicOutlivesInbox {
        topic: String,
        topic_retention: String,
        inbox: Duration,
    },
}

/// Refuses an inbox retention that is not longer than the retention of every topic in
/// `topics` (physical names). When Kafka cannot be asked (it is down at start-up), the check
/// is skipped with a warning: the service must be able to start without the broker.
pub async fn check_topics(
    kafka: &KafkaSettings,
    topics: &[String],
    inbox: Duration,
) -> Result<(), RetentionError> {
    let retentions = match topic_retentions(kafka, topics).await {
        Ok(retentions) => retentions,
        Err(error) => {
            tracing::warn!(%error, "cannot read the topics' retention; inbox retention not checked");
            return Ok(());
        }
    };
    for (topic, retention_ms) in retentions {
        let outlives = match u64::try_from(retention_ms) {
            // -1: the topic keeps records forever.
            Err(_) => true,
            Ok(ms) => Duration::from_millis(ms) >= inbox,
        };
        if outlives {
            let topic_retention = if retention_ms < 0 {
                "ever".to_owned()
            } else {
                format!("{:?}", Duration::from_millis(retention_ms.unsigned_abs()))
            };
            return Err(RetentionError::TopicOutlivesInbox {
                topic,
                topic_retention,
                inbox,
            });
        }
    }
    Ok(())
}

/// `retention.ms` of each topic, as the broker reports it (its default included).
async fn topic_retentions(
    kafka: &KafkaSettings,
    topics: &[String],
) -> Result<Vec<(String, i64)>, Box<dyn std::error::Error + Send + Sync>> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers).set(
        "socket.timeout.ms",
        kafka.metadata_timeout.as_millis().to_string(),
    );
    crate::kafka::with_client_properties(&mut config, kafka);
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let options = AdminOptions::new().request_timeout(Some(kafka.metadata_timeout));
    let specifiers: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|t| ResourceSpecifier::Topic(t.as_str()))
        .collect();
    let described = admin.describe_configs(&specifiers, &options).await?;
    let mut retentions = Vec::with_capacity(topics.len());
    for (topic, resource) in topics.iter().zip(described) {
        let resource = resource?;
        let retention = resource
            .get("retention.ms")
            .and_then(|entry| entry.value.as_deref())
            .ok_or_else(|| format!("topic {topic} reports no retention.ms"))?;
        retentions.push((topic.clone(), retention.parse::<i64>()?));
    }
    Ok(retentions)
}

/// A table whose rows expire: deleted, oldest first, once older than `retention` by
/// `age_column`.
#[derive(Debug, Clone, Copy)]
pub struct Expiring {
    pub table: &'static str,
    pub key: &'static str,
    pub age_column: &'static str,
    pub retention: Duration,
    /// Counts the rows deleted.
    pub deleted: &'static metrics::Counter,
}

impl Expiring {
    /// Requests' `Idempotency-Key`s (see [`crate::idempotency`]). Their key is two columns,
    /// so rows are picked by their physical address (`ctid`), which no update moves: a key's
    /// row is final once its transaction commits.
    pub fn idempotency_keys(retention: Duration) -> Expiring {
        Expiring {
            table: "idempotency_keys",
            key: "ctid",
            age_column: "created_at",
            retention,
            deleted: &metrics::IDEMPOTENCY_KEYS_EXPIRED,
        }
    }

    /// The inbox, whose retention the rule above bounds.
    pub fn inbox(retention: Duration) -> Expiring {
        Expiring {
            table: "inbox",
            key: "event_id",
            age_column: "processed_at",
            retention,
            deleted: &metrics::INBOX_EXPIRED,
        }
    }
}

/// Deletes expired inbox rows every `interval` until `stop`.
pub async fn run(db: DatabaseConnection, settings: RetentionSettings, stop: CancellationToken) {
    run_for(db, Expiring::inbox(settings.inbox), settings, stop).await;
}

/// Deletes `expiring`'s expired rows every `settings.interval` until `stop`, in batches of
/// `settings.batch` with `settings.pause` between them.
pub async fn run_for(
    db: DatabaseConnection,
    expiring: Expiring,
    settings: RetentionSettings,
    stop: CancellationToken,
) {
    loop {
        match delete_expired(&db, &expiring, &settings, &stop).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, table = expiring.table, "expired rows deleted"),
            Err(error) => {
                tracing::warn!(%error, table = expiring.table, "retention pass failed; retrying later")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(settings.interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One pass: batches of at most `batch` rows until none is left or `stop`.
async fn delete_expired(
    db: &DatabaseConnection,
    expiring: &Expiring,
    settings: &RetentionSettings,
    stop: &CancellationToken,
) -> Result<u64, DbErr> {
    let mut total = 0;
    loop {
        let deleted = delete_expired_batch(db, expiring, settings.batch).await?;
        total += deleted;
        expiring.deleted.add(deleted);
        if deleted < settings.batch || stop.is_cancelled() {
            return Ok(total);
        }
        tokio::time::sleep(settings.pause).await;
    }
}

/// Deletes up to `batch` inbox rows older than `retention`, oldest first, and says how many.
pub async fn delete_batch<C: ConnectionTrait>(
    db: &C,
    retention: Duration,
    batch: u64,
) -> Result<u64, DbErr> {
    delete_expired_batch(db, &Expiring::inbox(retention), batch).await
}

/// Deletes up to `batch` of `expiring`'s expired rows, oldest first, and says how many.
pub async fn delete_expired_batch<C: ConnectionTrait>(
    db: &C,
    expiring: &Expiring,
    batch: u64,
) -> Result<u64, DbErr> {
    let Expiring {
        table,
        key,
        age_column,
        ..
    } = expiring;
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "DELETE FROM {table} WHERE {key} IN ( \
                     SELECT {key} FROM {table} \
                     WHERE {age_column} < now() - make_interval(secs => $1) \
                     ORDER BY {age_column} LIMIT $2)"
            ),
            [expiring.retention.as_secs_f64().into(), batch.into()],
        ))
        .await?;
    Ok(result.rows_affected())
}
