//! Failure injection with a PostgreSQL server per service, as production runs them
//! (`STACK_PG_PER_SERVICE=1 deploy/stack`): one service's database goes away under load while
//! the other two keep theirs. The invariants are those of `tests/faults.rs` (every saga
//! finishes, money and stock are conserved, one terminal event per saga, each saga's events in
//! causal order, every outbox drains), and an outage stays where it is:
//!
//! - the service whose database is gone stays alive and says it is not ready;
//! - the other two stay ready, keep taking requests and keep moving sagas up to the stopped
//!   service's step, which holds them;
//! - once its database is back, the stopped service catches up.
//!
//! The suite starts three servers of its own with `deploy/stack` (ports from
//! `TEST_PG_PER_SERVICE_PORT`, default 5532; files in `deploy/.state/e2e-pg-per-service`),
//! beside whatever servers the other suites use, and stops them at the end.

use std::process::ExitCode;
use std::time::Duration;

use e2e_tests::runner;
use e2e_tests::{
    Catalog, FaultWorld, Ledger, ServiceName, TestResult, ensure, ensure_eq, fault_scenario,
};
use serde_json::json;
use uuid::Uuid;

use ServiceName::{Inventory, Orders, Payments};

/// One instance of each service, each on a PostgreSQL server of its own.
type World = FaultWorld<1, true>;

/// How long a database stays down at least, besides the checks made meanwhile: long enough
/// for the other services to move every saga they can, well inside the services' 15 s saga
/// deadline, so the outage delays sagas without cancelling them.
const OUTAGE: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    runner::run(vec![
        fault_scenario!(payments_database_stopped_under_load_holds_only_the_payment_step),
        fault_scenario!(inventory_database_stopped_under_load_holds_only_the_stock_step),
        fault_scenario!(orders_database_stopped_under_load_refuses_orders_and_others_carry_on),
    ])
}

async fn payments_database_stopped_under_load_holds_only_the_payment_step(
    world: &mut World,
    name: &str,
) -> TestResult {
    database_stopped_under_load(world, name, Payments).await
}

async fn inventory_database_stopped_under_load_holds_only_the_stock_step(
    world: &mut World,
    name: &str,
) -> TestResult {
    database_stopped_under_load(world, name, Inventory).await
}

async fn orders_database_stopped_under_load_refuses_orders_and_others_carry_on(
    world: &mut World,
    name: &str,
) -> TestResult {
    database_stopped_under_load(world, name, Orders).await
}

/// Places orders, stops `stopped`'s database server, places more, checks that only `stopped`
/// is held up, brings the server back and checks that everything settles with the invariants.
async fn database_stopped_under_load(
    world: &mut World,
    name: &str,
    stopped: ServiceName,
) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    let load = catalog.orders(30, 37);
    let (before, during) = load.split_at(15);
    // These sagas are in flight, at some step or other, when the database goes.
    ledger.place_all(&world.api, before.to_vec()).await;
    let in_flight = ledger.orders.len();
    let component = world.stack.pg.component_of(stopped);
    world.stack.stack_command(&["stop", &component]).await?;

    let refused = ledger.place_all(&world.api, during.to_vec()).await;
    if stopped == Orders {
        ensure_eq!(
            refused,
            during.len(),
            "orders refused while orders-svc's database was down"
        );
        ledger.excuse_refusals(refused);
    } else {
        ensure_eq!(
            refused,
            0,
            "orders refused while only {}'s database was down",
            stopped.binary()
        );
    }
    check_readiness(world, stopped).await?;
    the_healthy_services_take_writes(world, &mut ledger, stopped).await?;

    // The sagas placed during the outage move up to the stopped service's step and stop there:
    // none of their events comes from it.
    let placed_during: Vec<Uuid> = ledger.orders[in_flight..]
        .iter()
        .map(|order| order.placed.saga_id)
        .collect();
    let reached = match stopped {
        // orders-svc publishes `OrderCreated`, and payments-svc answers it.
        Inventory => 2,
        // orders-svc publishes `OrderCreated`.
        _ => 1,
    };
    tokio::time::sleep(OUTAGE).await;
    world
        .log
        .wait_until_each_has(&placed_during, reached, Duration::from_secs(10))
        .await
        .map_err(|e| {
            format!(
                "the healthy services did not move the sagas placed during the outage to {}'s step: {e}",
                stopped.binary()
            )
        })?;
    for saga_id in &placed_during {
        let sources: Vec<String> = world
            .log
            .events(*saga_id)
            .into_iter()
            .map(|event| event.source)
            .collect();
        ensure!(
            !sources.iter().any(|source| source == stopped.binary()),
            "saga {saga_id} moved past {} while its database was down: {:?}",
            stopped.binary(),
            world.log.event_types(*saga_id)
        );
    }

    world.stack.stack_command(&["start", &component]).await?;
    let verdict = world.check(name, &ledger).await?;
    ensure!(
        verdict
            .statuses
            .iter()
            .all(|(status, _)| status != "CANCELLED"),
        "an outage shorter than the saga deadline should cost no saga its deadline: {:?}",
        verdict.statuses
    );
    // Caught up: ready again.
    let ready = world
        .api
        .get_text(&format!("{}/health/ready", world.stack.url(stopped)))
        .await?;
    ensure_eq!(
        ready.0,
        200,
        "{} ready once its database is back: {}",
        stopped.binary(),
        ready.1
    );
    Ok(())
}

/// The service without its database is alive but not ready; the other two are ready.
async fn check_readiness(world: &World, stopped: ServiceName) -> TestResult {
    for service in ServiceName::ALL {
        let url = world.stack.url(service);
        let live = world.api.get_text(&format!("{url}/health/live")).await?;
        ensure_eq!(
            live.0,
            200,
            "{} alive while {}'s database is down: {}",
            service.binary(),
            stopped.binary(),
            live.1
        );
        let ready = world.api.get_text(&format!("{url}/health/ready")).await?;
        let expected = if service == stopped { 503 } else { 200 };
        ensure_eq!(
            ready.0,
            expected,
            "{} readiness while {}'s database is down: {}",
            service.binary(),
            stopped.binary(),
            ready.1
        );
    }
    Ok(())
}

/// Each service that still has its database serves a write on its own API: a customer
/// account on payments-svc, a product on inventory-svc (orders are placed by the scenario).
async fn the_healthy_services_take_writes(
    world: &World,
    ledger: &mut Ledger,
    stopped: ServiceName,
) -> TestResult {
    if stopped != Payments {
        ledger.customer(&world.api, 10_000).await?;
    }
    if stopped != Inventory {
        // Not through `Ledger::product`, which waits for orders-svc's catalog replica: with
        // orders-svc's database down that replica waits too.
        let body = json!({
            "sku": format!("E2E-{}", Uuid::new_v4().simple()),
            "name": "E2E widget made during an outage",
            "price_cents": 100,
            "stock": 1,
        });
        let response = world
            .api
            .client()
            .post(format!("{}/products", world.stack.url(Inventory)))
            .json(&body)
            .send()
            .await?;
        ensure_eq!(
            response.status().as_u16(),
            201,
            "inventory-svc creates products while {}'s database is down",
            stopped.binary()
        );
    }
    Ok(())
}
