//! Inbox retention against a real PostgreSQL and a real Kafka: what the job deletes, and the
//! start-up rule that the inbox must outlive every consumed topic.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use saga_runtime::retention::{self, RetentionError};
use saga_runtime::testing;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::SchemaManager;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn inbox_database() -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    let url = testing::fresh_database("orders_svc", "orders", "it").await?;
    let db = sea_orm::Database::connect(url).await?;
    let schema = SchemaManager::new(&db);
    saga_schema::create_inbox(&schema).await?;
    sea_orm_migration::MigrationTrait::up(&saga_schema::IndexInboxByAge, &schema).await?;
    Ok(db)
}

async fn inbox_rows(db: &DatabaseConnection, age: &str, n: usize) -> Result<(), sea_orm::DbErr> {
    for _ in 0..n {
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO inbox (event_id, event_type, processed_at) \
                 VALUES ($1, 'OrderCreated', now() - interval '{age}')"
            ),
            [Uuid::now_v7().into()],
        ))
        .await?;
    }
    Ok(())
}

async fn inbox_count(db: &DatabaseConnection) -> Result<i64, sea_orm::DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM inbox",
        ))
        .await?;
    row.map_or(Ok(0), |row| row.try_get("", "n"))
}

#[tokio::test]
async fn only_rows_older_than_the_retention_are_deleted_in_bounded_batches() -> TestResult {
    let db = inbox_database().await?;
    inbox_rows(&db, "9 days", 5).await?;
    inbox_rows(&db, "1 day", 3).await?;
    let retention = Duration::from_secs(8 * 24 * 3600);

    assert_eq!(retention::delete_batch(&db, retention, 2).await?, 2);
    assert_eq!(retention::delete_batch(&db, retention, 2).await?, 2);
    assert_eq!(retention::delete_batch(&db, retention, 2).await?, 1);
    assert_eq!(retention::delete_batch(&db, retention, 2).await?, 0);
    assert_eq!(inbox_count(&db).await?, 3, "the recent rows stay");
    Ok(())
}

async fn topic_with_retention(retention_ms: i64) -> Result<String, Box<dyn std::error::Error>> {
    // Named like the e2e suites' topics, which `deploy/stack test` deletes before each run.
    let name = format!("e2e-retention-{}", Uuid::now_v7());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", testing::kafka_brokers())
        .create()?;
    let retention = retention_ms.to_string();
    let topic = NewTopic::new(&name, 1, TopicReplication::Fixed(1)).set("retention.ms", &retention);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &options).await? {
        result.map_err(|(topic, code)| format!("topic {topic}: {code}"))?;
    }
    Ok(name)
}

#[tokio::test]
async fn a_topic_that_keeps_records_as_long_as_the_inbox_or_longer_is_refused() -> TestResult {
    let kafka = testing::kafka_settings("", "it-retention");
    let hour = topic_with_retention(3_600_000).await?;
    let forever = topic_with_retention(-1).await?;

    let longer = Duration::from_secs(7200);
    retention::check_topics(&kafka, std::slice::from_ref(&hour), longer).await?;

    let equal = Duration::from_secs(3600);
    let refused = retention::check_topics(&kafka, std::slice::from_ref(&hour), equal).await;
    assert!(
        matches!(&refused, Err(RetentionError::TopicOutlivesInbox { topic, .. }) if *topic == hour),
        "{refused:?}"
    );
    let refused = retention::check_topics(&kafka, &[hour, forever.clone()], longer).await;
    match refused {
        Err(RetentionError::TopicOutlivesInbox {
            topic,
            topic_retention,
            ..
        }) => {
            assert_eq!(topic, forever);
            assert_eq!(topic_retention, "ever");
        }
        other => {
            return Err(
                format!("a topic that keeps records forever must be refused: {other:?}").into(),
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn without_a_broker_the_check_is_skipped_so_the_service_can_start() -> TestResult {
    let mut kafka = testing::kafka_settings("", "it-retention");
    kafka.brokers = "127.0.0.1:1".to_owned();
    kafka.metadata_timeout = Duration::from_millis(500);
    retention::check_topics(
        &kafka,
        &["orders.events".to_owned()],
        Duration::from_secs(1),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn expired_idempotency_keys_are_deleted_and_recent_ones_stay() -> TestResult {
    let url = testing::fresh_database("orders_svc", "orders", "it").await?;
    let db = sea_orm::Database::connect(url).await?;
    let schema = SchemaManager::new(&db);
    sea_orm_migration::MigrationTrait::up(&saga_schema::CreateIdempotencyKeys, &schema).await?;
    for (key, age) in [
        ("old-1", "2 days"),
        ("old-2", "25 hours"),
        ("new", "1 hour"),
    ] {
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, status, body, created_at) \
                 VALUES ('POST /orders', $1, 'f', 202, '{{}}', now() - interval '{age}')"
            ),
            [key.into()],
        ))
        .await?;
    }
    let keys = retention::Expiring::idempotency_keys(Duration::from_secs(24 * 3600));
    assert_eq!(retention::delete_expired_batch(&db, &keys, 1).await?, 1);
    assert_eq!(retention::delete_expired_batch(&db, &keys, 10).await?, 1);
    assert_eq!(retention::delete_expired_batch(&db, &keys, 10).await?, 0);
    assert_eq!(
        testing::count_rows(&db, "idempotency_keys").await?,
        1,
        "the recent key stays"
    );
    Ok(())
}
