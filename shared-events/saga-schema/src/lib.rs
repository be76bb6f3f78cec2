//! The tables of the saga protocol: outbox, inbox and parked events. Every service has them
//! with the same shape; each service's migration crate calls these so the definition lives
//! once. This crate depends on sea-orm-migration only, so migrations build without Kafka or
//! HTTP.

use sea_orm_migration::sea_orm::ConnectionTrait;
use sea_orm_migration::{DbErr, SchemaManager};

/// Runs a migration's SQL, which may hold several statements.
pub async fn execute(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(sql)
        .await
        .map(|_| ())
}

/// Creates `outbox`: events written in the same transaction as the change they announce,
/// waiting for the relay. A row is deleted once Kafka has acknowledged it, so the table's
/// size is the relay's backlog.
pub async fn create_outbox(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(
            r#"
            CREATE TABLE outbox (
                id           BIGSERIAL PRIMARY KEY,
                event_id     UUID NOT NULL UNIQUE,
                saga_id      UUID,
                topic        TEXT NOT NULL,
                message_key  TEXT NOT NULL,
                event_type   TEXT NOT NULL,
                payload      JSONB NOT NULL,
                traceparent  TEXT,
                created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
            );
            -- The relay publishes only the oldest waiting row of each key, to keep a saga's
            -- events in order even with several relays; this index answers that check.
            CREATE INDEX outbox_key_order ON outbox (message_key, id);
            "#,
        )
        .await
        .map(|_| ())
}

/// Creates `inbox`: the IDs of consumed events, inserted in the same transaction as their
/// effect, so an event redelivered by Kafka is recognised and has no second effect.
pub async fn create_inbox(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(
            r#"
            CREATE TABLE inbox (
                event_id      UUID PRIMARY KEY,
                event_type    TEXT NOT NULL,
                saga_id       UUID,
                processed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
            );
            "#,
        )
        .await
        .map(|_| ())
}

/// Creates `parked_events`: consumed events whose handler kept failing with an error no retry
/// fixes. They wait here, visible at `GET /sagas/stuck`, until an operator retries them with
/// `POST /sagas/{saga_id}/retry`. Later events of the same saga park behind them, in order.
pub async fn create_parked_events(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(
            r#"
            CREATE TABLE parked_events (
                id          BIGSERIAL PRIMARY KEY,
                event_id    UUID NOT NULL UNIQUE,
                saga_id     UUID,
                event_type  TEXT NOT NULL,
                topic       TEXT NOT NULL,
                partition   INT NOT NULL,
                "offset"    BIGINT NOT NULL,
                payload     JSONB NOT NULL,
                error       TEXT NOT NULL,
                attempts    INT NOT NULL,
                parked_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
                retried_at  TIMESTAMPTZ
            );
            CREATE INDEX parked_events_saga ON parked_events (saga_id, id);
            "#,
        )
        .await
        .map(|_| ())
}

/// Creates `saga_events`, the saga view (`saga_runtime::saga_view`): one row per event of
/// the service's sagas, written in the transactions that publish or apply them.
pub async fn create_saga_view(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    execute(
        manager,
        r#"
        CREATE TABLE saga_events (
            event_id     UUID PRIMARY KEY,
            saga_id      UUID NOT NULL,
            event_type   TEXT NOT NULL,
            source       TEXT NOT NULL,
            occurred_at  TIMESTAMPTZ NOT NULL,
            outcome      TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'compensation')),
            terminal     TEXT
        );
        -- A saga's timeline; and the retention job, which deletes the oldest rows.
        CREATE INDEX saga_events_by_saga ON saga_events (saga_id, occurred_at);
        CREATE INDEX saga_events_by_age ON saga_events (occurred_at);
        "#,
    )
    .await
}

pub async fn drop_saga_view(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    execute(manager, "DROP TABLE IF EXISTS saga_events;").await
}

pub async fn drop_parked_events(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared("DROP TABLE IF EXISTS parked_events;")
        .await
        .map(|_| ())
}

pub async fn drop_outbox_and_inbox(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared("DROP TABLE IF EXISTS outbox; DROP TABLE IF EXISTS inbox;")
        .await
        .map(|_| ())
}

/// A migration every service runs after its own first ones: indexes `inbox` by age, for the
/// retention job, which deletes the oldest rows in small batches (`saga_runtime::retention`).
/// Defined once here, with one name, since the index is the same in every service.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexInboxByAge;

impl sea_orm_migration::MigrationName for IndexInboxByAge {
    fn name(&self) -> &str {
        "m20261128_000100_index_inbox_by_age"
    }
}

#[async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for IndexInboxByAge {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        execute(
            manager,
            "CREATE INDEX IF NOT EXISTS inbox_by_age ON inbox (processed_at);",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        execute(manager, "DROP INDEX IF EXISTS inbox_by_age;").await
    }
}

/// A migration every service runs: the outbox keeps each event's payload as the text that was
/// written (`json`), not as `jsonb`, which stores objects with their keys reordered (shortest
/// first). The relay publishes that text unchanged, so a record's keys keep the envelope's
/// order, context attributes before `data`, and the relay no longer re-encodes every payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreOutboxPayloadAsWritten;

impl StoreOutboxPayloadAsWritten {
    /// The change itself, for a database that has `outbox` but no migration history (the
    /// benchmark's pgbench scratch database).
    pub async fn apply(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
        execute(
            manager,
            "ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;",
        )
        .await
    }
}

impl sea_orm_migration::MigrationName for StoreOutboxPayloadAsWritten {
    fn name(&self) -> &str {
        "m20261129_000100_store_outbox_payload_as_written"
    }
}

#[async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for StoreOutboxPayloadAsWritten {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        Self::apply(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        execute(
            manager,
            "ALTER TABLE outbox ALTER COLUMN payload TYPE jsonb USING payload::jsonb;",
        )
        .await
    }
}

/// A migration every service runs: the `Idempotency-Key`s of the requests that created
/// something, each with a fingerprint of its request and the response it got, written in the
/// transaction that made the change (`saga_runtime::idempotency`). A retry with the same key
/// gets that response again instead of making the change twice. `created_at` orders the
/// retention job's deletes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateIdempotencyKeys;

impl sea_orm_migration::MigrationName for CreateIdempotencyKeys {
    fn name(&self) -> &str {
        "m20261129_000200_create_idempotency_keys"
    }
}

#[async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for CreateIdempotencyKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        execute(
            manager,
            "CREATE TABLE IF NOT EXISTS idempotency_keys (
                 scope TEXT NOT NULL,
                 key TEXT NOT NULL,
                 fingerprint TEXT NOT NULL,
                 status SMALLINT,
                 location TEXT,
                 body JSONB,
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 PRIMARY KEY (scope, key)
             );
             CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        execute(manager, "DROP TABLE IF EXISTS idempotency_keys;").await
    }
}
