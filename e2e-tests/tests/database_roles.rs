//! Database per service, enforced by PostgreSQL: each service's role reaches its own database
//! and is refused on the other two, and cannot create databases. The tests' throwaway
//! databases are made by a role of their own (`saga_test`, `deploy/postgres/test-role.sql`).
//! Runs against the databases `deploy/stack test` starts, in either layout.

use saga_runtime::testing::{database_url, pg_port_of};
use sea_orm::{ConnectionTrait, Database};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DATABASES: [&str; 3] = ["orders", "payments", "inventory"];

#[tokio::test]
async fn each_service_role_reaches_its_own_database_and_is_refused_on_the_others() -> TestResult {
    for role_of in DATABASES {
        let role = format!("{role_of}_svc");
        for database in DATABASES {
            // The server that holds `database`, as the service would be pointed at it.
            let url = database_url(pg_port_of(database), &role, database);
            let connected = Database::connect(url).await;
            if role_of == database {
                let db = connected.map_err(|e| format!("{role} on its own {database}: {e}"))?;
                db.execute_unprepared("SELECT 1").await?;
                db.close().await?;
            } else {
                assert!(
                    connected.is_err(),
                    "{role} could connect to {database}, another service's database"
                );
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_service_role_cannot_create_databases() -> TestResult {
    for database in DATABASES {
        let role = format!("{database}_svc");
        let db = Database::connect(database_url(pg_port_of(database), &role, database)).await?;
        let created = db
            .execute_unprepared(&format!("CREATE DATABASE {database}_by_the_service"))
            .await;
        let error = created.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("permission denied"),
            "{role} may create databases: {error:?}"
        );
        db.close().await?;
    }
    Ok(())
}
