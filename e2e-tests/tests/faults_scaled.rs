//! Failure injection with two instances of every service, each pair sharing its service's
//! database and consumer group, as `deploy/stack scale` runs them. The invariants are those
//! of `tests/faults.rs` (every saga finishes, money and stock are conserved, one terminal
//! event per saga, each saga's events in causal order, every outbox drains), and what an
//! instance must not keep to itself is checked across instances: a parked saga stays blocked
//! on the instance that takes its partitions over, and any instance can retry it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use e2e_tests::runner;
use e2e_tests::{
    Catalog, FaultWorld, Instance, Ledger, ServiceName, TestResult, ensure, ensure_eq,
    fault_scenario,
};
use serde_json::{Value, json};
use uuid::Uuid;

use ServiceName::{Inventory, Orders, Payments};

/// Two instances of each service.
type World = FaultWorld<2>;

fn main() -> ExitCode {
    runner::run(vec![
        fault_scenario!(sigkill_one_instance_of_each_service_under_load_loses_nothing),
        fault_scenario!(a_rolling_restart_of_every_instance_under_load_loses_nothing),
        fault_scenario!(a_saga_parked_on_one_instance_is_retried_through_the_other),
        fault_scenario!(a_rebalance_while_a_saga_is_parked_keeps_its_later_events_behind_it),
    ])
}

async fn sigkill_one_instance_of_each_service_under_load_loses_nothing(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    let load = catalog.orders(40, 23);
    let (first, second) = load.split_at(20);
    ledger.place_all(&world.api, first.to_vec()).await;
    // The API is served by orders-svc's instance 1; its instance 2 consumes and relays only.
    let killed = [
        Payments.instance(2),
        Inventory.instance(1),
        Orders.instance(2),
    ];
    world.stack.kill(killed[0]).await?;
    ledger.place_all(&world.api, second.to_vec()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.stack.kill(killed[1]).await?;
    world.stack.kill(killed[2]).await?;
    for instance in killed {
        world.stack.restart(instance, &[]).await?;
    }
    world.check(name, &ledger).await?;
    Ok(())
}

async fn a_rolling_restart_of_every_instance_under_load_loses_nothing(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    let instances = world.stack.all_instances();
    let load = catalog.orders(8 * instances.len(), 29);
    for (instance, orders) in instances.iter().zip(load.chunks(8)) {
        ledger.place_all(&world.api, orders.to_vec()).await;
        // A graceful stop, as a rolling deployment does it, with sagas in flight.
        world
            .stack
            .terminate(*instance, Duration::from_secs(30))
            .await?;
        world.stack.restart(*instance, &[]).await?;
    }
    world.check(name, &ledger).await?;
    Ok(())
}

/// Restarts both instances of payments-svc with `faults`.
async fn restart_payments(world: &mut World, faults: &[(&str, &str)]) -> TestResult {
    for index in 1..=world.stack.instances {
        world
            .stack
            .restart(Payments.instance(index), faults)
            .await?;
    }
    Ok(())
}

/// An order whose stock reservation fails, with payments-svc unable to refund it: the refund
/// is parked. Returns the customer, the order's saga and the instance that parked it.
async fn park_a_refund(
    world: &mut World,
    ledger: &mut Ledger,
) -> TestResult<(Uuid, Uuid, Instance)> {
    let customer = ledger.customer(&world.api, 10_000).await?;
    let product = ledger.product(&world.api, 1_000, 1).await?;
    restart_payments(
        world,
        &[
            ("FAULT_FAIL_EVENT_TYPE", "InventoryReservationFailed"),
            ("CONSUMER_MAX_ATTEMPTS", "3"),
            ("CONSUMER_RETRY_BACKOFF_INITIAL_MS", "20"),
        ],
    )
    .await?;
    ledger
        .place_all(&world.api, vec![(customer, vec![(product, 2)])])
        .await;
    let saga = ledger.orders.first().ok_or("order refused")?.placed.saga_id;
    let parked = wait_parked(world, Payments.instance(1), saga, 1).await?;
    ensure_eq!(parked, ["InventoryReservationFailed"], "parked events");
    // The table is shared: the other instance lists the same.
    let elsewhere = parked_events(world, Payments.instance(2), saga).await?;
    ensure_eq!(elsewhere, parked, "instance 2 sees the parked saga");
    ensure_eq!(
        world.api.balance(customer).await?,
        8_000,
        "charged, refund parked"
    );
    let mut parker = None;
    for index in 1..=world.stack.instances {
        let instance = Payments.instance(index);
        if world
            .api
            .metric(&world.stack.url(instance), "saga_parked_events_total")
            .await?
            > 0
        {
            parker = Some(instance);
        }
    }
    let parker = parker.ok_or("no instance counts a parked event")?;
    Ok((customer, saga, parker))
}

/// The other instance of a service run as two.
fn other(instance: Instance) -> Instance {
    instance.service.instance(3 - instance.index)
}

async fn a_saga_parked_on_one_instance_is_retried_through_the_other(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let (customer, saga, parker) = park_a_refund(world, &mut ledger).await?;
    // The operator deploys a fix to both instances and retries through the one that did not
    // park the event.
    restart_payments(world, &[]).await?;
    let outcome = retry(world, other(parker), saga).await?;
    ensure_eq!(outcome["retried"], json!(1), "retry outcome {outcome}");
    world.check(name, &ledger).await?;
    ensure_eq!(
        world.api.balance(customer).await?,
        10_000,
        "refunded after the retry"
    );
    Ok(())
}

async fn a_rebalance_while_a_saga_is_parked_keeps_its_later_events_behind_it(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let (customer, saga, parker) = park_a_refund(world, &mut ledger).await?;
    // The parking instance dies; the group hands its partitions to the other. The saga's
    // deadline then cancels the order, and the cancellation reaches the other instance,
    // which must park it behind the refund instead of applying it ahead of it.
    world.stack.kill(parker).await?;
    let survivor = other(parker);
    let parked = wait_parked(world, survivor, saga, 2).await?;
    ensure_eq!(
        parked,
        ["InventoryReservationFailed", "OrderCancelled"],
        "the cancellation waits behind the refund"
    );
    // Read through the surviving instance: the API's default is instance 1.
    let account = world
        .api
        .get(format!("{}/accounts/{customer}", world.stack.url(survivor)))
        .await?;
    ensure_eq!(
        account["balance_cents"],
        json!(8_000),
        "nothing refunded out of order"
    );
    restart_payments(world, &[]).await?;
    let outcome = retry(world, parker, saga).await?;
    ensure_eq!(outcome["retried"], json!(2), "retry outcome {outcome}");
    world.check(name, &ledger).await?;
    ensure_eq!(
        world.api.balance(customer).await?,
        10_000,
        "refunded once after the retry"
    );
    Ok(())
}

/// The saga's parked event types, oldest first, as `instance` lists them.
async fn parked_events(world: &World, instance: Instance, saga: Uuid) -> TestResult<Vec<String>> {
    let stuck = world
        .api
        .get(format!("{}/sagas/stuck", world.stack.url(instance)))
        .await?;
    Ok(stuck["parked"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["saga_id"] == json!(saga))
        .filter_map(|p| p["event_type"].as_str().map(str::to_owned))
        .collect())
}

/// Waits until `instance` lists at least `count` parked events of the saga, and returns them.
async fn wait_parked(
    world: &World,
    instance: Instance,
    saga: Uuid,
    count: usize,
) -> TestResult<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let parked = parked_events(world, instance, saga).await?;
        if parked.len() >= count {
            return Ok(parked);
        }
        ensure!(
            Instant::now() < deadline,
            "saga {saga} has parked events {parked:?} on {instance}, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /sagas/{saga}/retry` on `instance`; it must leave nothing parked.
async fn retry(world: &World, instance: Instance, saga: Uuid) -> TestResult<Value> {
    let response = world
        .api
        .client()
        .post(format!("{}/sagas/{saga}/retry", world.stack.url(instance)))
        .send()
        .await?;
    let status = response.status().as_u16();
    let outcome: Value = response.json().await?;
    ensure!(
        status == 200 && outcome["remaining"] == 0,
        "retry through {instance} answered {status} {outcome}"
    );
    Ok(outcome)
}
