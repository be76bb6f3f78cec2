//! The PostgreSQL connection pool. One per service; every request and every consumed event
//! borrows a connection from it for the length of one transaction.

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

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
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(settings.idle_timeout)
        .max_lifetime(settings.max_lifetime)
        .statement_timeout(settings.statement_timeout)
        // sqlx pings every connection it lends out by default: one more round trip per
        // transaction. A connection the server dropped fails its first statement instead,
        // which the caller already treats as the database being unavailable and retries.
        .test_before_acquire(false)
        .sqlx_logging(false);
    tokio::time::timeout(settings.connect_timeout, Database::connect(options))
        .await
        .map_err(|_| ConnectError::Timeout(settings.connect_timeout))?
        .map_err(ConnectError::Db)
}
