//! The connection pool against a real PostgreSQL: connections the server closed while they
//! sat idle (PostgreSQL restarted or failed over, a proxy timed them out) are found and
//! replaced before they are lent out, so the first requests afterwards do not fail.

use std::time::Duration;

use saga_runtime::{db, testing};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How many connections the pool under test holds; all of them are closed by the server.
const POOL_SIZE: u32 = 3;

/// The backend process ID of the connection `db` runs its statement on.
async fn backend_pid<C: ConnectionTrait>(db: &C) -> Result<i32, sea_orm::DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_backend_pid() AS pid",
        ))
        .await?
        .ok_or_else(|| sea_orm::DbErr::Custom("pg_backend_pid() returned no row".to_owned()))?;
    row.try_get("", "pid")
}

/// How many of `pids` are still connected.
async fn still_connected(admin: &DatabaseConnection, pids: &[i32]) -> Result<i64, sea_orm::DbErr> {
    let row = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY($1)",
            [pids.to_vec().into()],
        ))
        .await?
        .ok_or_else(|| sea_orm::DbErr::Custom("count(*) returned no row".to_owned()))?;
    row.try_get("", "n")
}

#[tokio::test]
async fn connections_the_server_closed_while_idle_are_replaced_before_they_are_lent_out()
-> TestResult {
    let url = testing::fresh_database("orders_svc", "orders", "it").await?;
    let mut settings = testing::database_settings(url);
    settings.min_connections = POOL_SIZE;
    settings.max_connections = POOL_SIZE;
    settings.ping_if_idle_for = Duration::from_millis(50);
    let pool = db::connect(&settings).await?;

    // Three transactions at once make the pool open all three connections.
    let mut open = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..POOL_SIZE {
        let tx = pool.begin().await?;
        pids.push(backend_pid(&tx).await?);
        open.push(tx);
    }
    for tx in open {
        tx.commit().await?;
    }

    // The server closes every one of them, as a restart would.
    let admin = testing::as_test_role(testing::pg_port_of("orders")).await?;
    admin
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid",
            [pids.clone().into()],
        ))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while still_connected(&admin, &pids).await? > 0 {
        if tokio::time::Instant::now() >= deadline {
            return Err("the terminated backends were still connected after 5 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(settings.ping_if_idle_for * 2).await;

    // Every use that follows succeeds the first time, each on a live connection: the idle
    // ones the server closed failed their ping and were replaced.
    pool.ping().await?;
    for attempt in 0..POOL_SIZE {
        let tx = pool
            .begin()
            .await
            .map_err(|e| format!("transaction {attempt} after the restart failed: {e}"))?;
        let pid = backend_pid(&tx).await?;
        assert!(
            !pids.contains(&pid),
            "transaction {attempt} ran on backend {pid}, which the server had closed"
        );
        tx.commit().await?;
        tokio::time::sleep(settings.ping_if_idle_for * 2).await;
    }
    admin.close().await?;
    pool.close().await?;
    Ok(())
}
