//! The world of the failure-injection suites: a stack whose services run with a short saga
//! deadline and short backoffs, the event log, and the table of verdicts. `tests/faults.rs`
//! runs it with one instance of each service, `tests/faults_scaled.rs` with two, and
//! `tests/faults_pg_per_service.rs` with one on a PostgreSQL server per service.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::TestResult;
use crate::api::Api;
use crate::events::EventLog;
use crate::ledger::{Ledger, Table, Verdict, print_table};
use crate::runner;
use crate::stack::{PgLayout, ServiceName, Stack};

use ServiceName::{Inventory, Orders, Payments};

/// Bound on how long a scenario's sagas may take to settle once its faults stop.
pub const SETTLE: Duration = Duration::from_secs(60);
/// The services' saga deadline: a saga held up for longer is cancelled and compensated, which
/// the invariants cover too.
pub const DEADLINE_MS: &str = "15000";

/// What every scenario gets, with `INSTANCES` instances of each service, their databases on
/// the suite's shared server or, with `PG_PER_SERVICE`, on a server per service.
pub struct FaultWorld<const INSTANCES: u16, const PG_PER_SERVICE: bool = false> {
    pub stack: Stack,
    pub api: Api,
    pub log: EventLog,
    pub table: Table,
}

impl<const INSTANCES: u16, const PG_PER_SERVICE: bool> FaultWorld<INSTANCES, PG_PER_SERVICE> {
    pub fn record(&self, verdict: Verdict) {
        if let Ok(mut rows) = self.table.lock() {
            rows.push(verdict);
        }
    }

    /// Settles the scenario's sagas, checks every invariant and records the verdict.
    pub async fn check(&self, name: &str, ledger: &Ledger) -> TestResult<Verdict> {
        let verdict = ledger
            .settle_and_check(name, &self.stack, &self.api, &self.log, SETTLE)
            .await?;
        self.record(verdict.clone());
        Ok(verdict)
    }
}

impl<const INSTANCES: u16, const PG_PER_SERVICE: bool> runner::World
    for FaultWorld<INSTANCES, PG_PER_SERVICE>
{
    async fn start() -> TestResult<Self> {
        let pg = if PG_PER_SERVICE {
            PgLayout::per_service()
        } else {
            PgLayout::Shared
        };
        let stack = Stack::start_on(
            vec![
                (Orders, "SAGA_DEADLINE_MS", DEADLINE_MS),
                (Orders, "SAGA_DEADLINE_SCAN_INTERVAL_MS", "500"),
                // Short backoffs keep recovery inside the test's bounds.
                (Orders, "CONSUMER_RETRY_BACKOFF_MAX_MS", "1000"),
                (Payments, "CONSUMER_RETRY_BACKOFF_MAX_MS", "1000"),
                (Inventory, "CONSUMER_RETRY_BACKOFF_MAX_MS", "1000"),
                (Orders, "OUTBOX_RETRY_BACKOFF_MS", "200"),
                (Payments, "OUTBOX_RETRY_BACKOFF_MS", "200"),
                (Inventory, "OUTBOX_RETRY_BACKOFF_MS", "200"),
            ],
            INSTANCES,
            pg,
        )
        .await?;
        println!(
            "faults: {INSTANCES} instance(s) of each service up on {pg:?} (topics {}*, logs {})",
            stack.prefix,
            stack.log_dir.display()
        );
        let api = Api::new(&stack);
        let log = EventLog::start(&stack)?;
        Ok(FaultWorld {
            stack,
            api,
            log,
            table: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Puts every component back (PostgreSQL, Kafka, each instance running without faults)
    /// so the next scenario starts clean.
    async fn recover(&mut self) -> TestResult {
        self.stack.heal().await
    }

    async fn finish(self) -> TestResult {
        if let Ok(rows) = self.table.lock() {
            print_table(&rows);
        }
        self.stack.stop().await
    }
}

/// A scenario of a failure suite whose world type is `World`: `name(world, its own name)`.
#[macro_export]
macro_rules! fault_scenario {
    ($name:ident) => {
        $crate::runner::scenario(stringify!($name), |world: &mut World| {
            Box::pin($name(world, stringify!($name)))
        })
    };
}
