//! The PostgreSQL connection pool. One per service; every request and every consumed event
//! borrows a connection from it for the length of one transaction.

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::config::DatabaseSettings;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("database did not accept a connection within {0:?}")]
    Timeout(std::time::Duration),
    #[error("database connection failed: {0}")]
    Db(#[from] DbErr),
}

/// Opens the pool and waits for its first connection, bounded by `connect_timeout`.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, ConnectError> {
    open(pool_options(settings), settings).await
}

/// Opens the outbox relay's own connection. The relay runs one batch at a time, and one
/// query, the claim, written to walk the outbox's indexes. The outbox is a queue: rows are
/// inserted and deleted all the time, so between vacuums its heap holds far more dead rows
/// than live ones, and its statistics are stale. Left to itself the planner then chose a
/// sequential scan of every page, measured at 4 ms per claim against 0.1 ms through the
/// primary key, and the relay spent PostgreSQL's CPU on it. On this connection alone, a
/// sequential scan is the last resort.
///
/// Its commits are also asynchronous (`synchronous_commit=off`): the only thing the relay
/// commits is the deletion of rows Kafka has acknowledged, and losing that deletion in a
/// crash loses no data. The rows come back and are published again, which consumers' inboxes
/// absorb, exactly as after a crash between the acknowledgement and the commit. WAL is
/// replayed in order, so the deletions that survive are always a prefix of those made, and a
/// saga's records are republished in their order. Every business transaction, and with it
/// every outbox insert, still waits for its WAL flush. This spares the relay a WAL flush per
/// batch, which it used to wait for before it could claim the next one.
pub async fn connect_relay(
    settings: &DatabaseSettings,
) -> Result<DatabaseConnection, ConnectError> {
    let mut options = pool_options(settings);
    options
        .max_connections(1)
        .min_connections(settings.min_connections.min(1))
        .map_sqlx_postgres_opts(|connection| {
            connection.options([("enable_seqscan", "off"), ("synchronous_commit", "off")])
        });
    open(options, settings).await
}

/// The key of the advisory lock that lets one instance at a time migrate a database. Advisory
/// locks are per database, and each service has its own, so one constant serves all three.
const MIGRATION_LOCK: i64 = 0x5a6a_6d69_6772;
/// How often a waiting instance asks for the migration lock again.
const MIGRATION_LOCK_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("another instance held the migration lock for more than {0:?}")]
    LockTimeout(Duration),
    #[error("migrations failed: {0}")]
    Db(#[from] DbErr),
}

/// Runs `M`'s pending migrations while holding a PostgreSQL advisory lock, so that instances
/// of a service that start at the same moment migrate one after the other: the first applies
/// the migrations, the others wait (at most `wait`) and then find nothing left to do. Without
/// the lock two of them would both create the migrations table or the same table, and one
/// would fail to start.
///
/// The lock is transaction-scoped, held by a transaction that does nothing else, so it is
/// released however this ends, even if the process dies. The migrations run on other pooled
/// connections, each in its own transaction as sea-orm-migration does it.
pub async fn migrate<M: MigratorTrait>(
    db: &DatabaseConnection,
    wait: Duration,
) -> Result<(), MigrateError> {
    let lock = db.begin().await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let row = lock
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_try_advisory_xact_lock($1) AS locked",
                [MIGRATION_LOCK.into()],
            ))
            .await?;
        let locked = match row {
            Some(row) => row.try_get::<bool>("", "locked")?,
            None => false,
        };
        if locked {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(MigrateError::LockTimeout(wait));
        }
        tracing::info!("another instance is migrating the database; waiting");
        tokio::time::sleep(MIGRATION_LOCK_POLL).await;
    }
    M::up(db, None).await?;
    lock.commit().await?;
    Ok(())
}

fn pool_options(settings: &DatabaseSettings) -> ConnectOptions {
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(settings.idle_timeout)
        .max_lifetime(settings.max_lifetime)
        .statement_timeout(settings.statement_timeout)
        // sqlx pings every connection it lends out by default: one more round trip per
        // transaction. Only a connection that sat idle is pinged here, because that is where
        // a restart of PostgreSQL leaves dead ones: the ping finds each and sqlx opens a new
        // connection in its place, so the first requests after the restart (and readiness
        // probes, which borrow one connection each) do not fail one per dead connection.
        // Under load every connection is back within the threshold and none pays the ping;
        // one that the server closes while it is in use fails its statement, which callers
        // treat as the database being unavailable and retry.
        .test_before_acquire_if_idle_for(settings.ping_if_idle_for)
        .sqlx_logging(false);
    options
}

async fn open(
    options: ConnectOptions,
    settings: &DatabaseSettings,
) -> Result<DatabaseConnection, ConnectError> {
    tokio::time::timeout(settings.connect_timeout, Database::connect(options))
        .await
        .map_err(|_| ConnectError::Timeout(settings.connect_timeout))?
        .map_err(ConnectError::Db)
}
