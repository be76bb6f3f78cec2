//! Failure injection: the saga survives crashes, outages, duplicates and poison records, and
//! nothing is lost. Every scenario runs real processes against the real broker and database,
//! injects its fault, lets the system settle and checks the invariants:
//!
//! - every saga finishes (a terminal status within the stated bound);
//! - money is conserved: opening balance − confirmed charges = balance now;
//! - stock is conserved and never negative: initial = available + reserved for confirmed;
//! - each saga has exactly one terminal order event on Kafka;
//! - each saga's events appear on Kafka in causal order;
//! - every outbox drains to zero once the faults stop.
//!
//! The services run with a saga deadline of 15 s, so a scenario that keeps a saga from moving
//! for longer sees it `CANCELLED` and compensated, which the invariants cover too.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use e2e_tests::runner;
use e2e_tests::{
    Catalog, FaultWorld, Ledger, RawProducer, Rng, ServiceName, TestResult, ensure, ensure_eq,
    fault_scenario, read_topic,
};
use serde_json::json;
use shared_events::{Envelope, InventoryReservationFailed, SagaEvent, topics};
use uuid::Uuid;

use ServiceName::{Inventory, Orders, Payments};

/// One instance of each service.
type World = FaultWorld<1>;

fn main() -> ExitCode {
    runner::run(vec![
        fault_scenario!(a_crash_after_commit_before_publish_loses_nothing),
        fault_scenario!(a_crash_after_publish_before_delete_publishes_again_harmlessly),
        fault_scenario!(a_crash_after_the_consumer_commit_before_the_offset_redelivers_harmlessly),
        fault_scenario!(a_crash_in_the_middle_of_a_relay_batch_loses_nothing),
        fault_scenario!(sigkill_under_load_loses_nothing),
        fault_scenario!(sigstop_under_load_only_delays),
        fault_scenario!(sigterm_under_load_stops_gracefully_and_loses_nothing),
        fault_scenario!(kafka_stopped_during_load_delays_but_loses_nothing),
        fault_scenario!(postgres_stopped_under_the_services_delays_but_loses_nothing),
        fault_scenario!(a_service_down_past_the_deadline_gets_its_sagas_cancelled_and_compensated),
        fault_scenario!(republishing_events_of_running_sagas_changes_nothing),
        fault_scenario!(a_refund_that_arrives_before_the_charge_creates_no_money),
        fault_scenario!(poison_records_are_dead_lettered_with_their_origin),
        fault_scenario!(transient_database_errors_are_retried_not_dead_lettered),
        fault_scenario!(a_fatally_failed_producer_is_replaced_and_loses_nothing),
        fault_scenario!(a_compensation_that_keeps_failing_is_parked_and_retried_by_an_operator),
        fault_scenario!(many_orders_competing_for_scarce_stock_confirm_exactly_the_stock),
        fault_scenario!(many_orders_competing_for_one_balance_never_overdraw_it),
        fault_scenario!(random_faults_over_random_orders_keep_every_invariant),
    ])
}

/// Arms `point` in `service`, runs a load that reaches it, checks the process really crashed
/// there, restarts it clean and checks the invariants.
async fn crash_at(
    world: &mut World,
    name: &str,
    service: ServiceName,
    point: &str,
    extra: &[(&str, &str)],
) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    let mut faults = vec![("FAULT_CRASH_AT", point)];
    faults.extend_from_slice(extra);
    world.stack.restart(service, &faults).await?;
    ledger.place_all(&world.api, catalog.orders(30, 7)).await;
    let crashed = world
        .stack
        .wait_exit(service, Duration::from_secs(20))
        .await?;
    ensure!(crashed, "{} never reached {point}", service.binary());
    world.stack.restart(service, &[]).await?;
    world.check(name, &ledger).await?;
    Ok(())
}

async fn a_crash_after_commit_before_publish_loses_nothing(
    world: &mut World,
    name: &str,
) -> TestResult {
    crash_at(world, name, Payments, "after_commit_before_publish", &[]).await
}

async fn a_crash_after_publish_before_delete_publishes_again_harmlessly(
    world: &mut World,
    name: &str,
) -> TestResult {
    crash_at(world, name, Inventory, "after_publish_before_mark", &[]).await
}

async fn a_crash_after_the_consumer_commit_before_the_offset_redelivers_harmlessly(
    world: &mut World,
    name: &str,
) -> TestResult {
    crash_at(
        world,
        name,
        Payments,
        "after_consume_commit_before_offset",
        &[],
    )
    .await
}

async fn a_crash_in_the_middle_of_a_relay_batch_loses_nothing(
    world: &mut World,
    name: &str,
) -> TestResult {
    // Lingering lets the 30 concurrent charges pile up, so the relay's batch has several rows.
    crash_at(
        world,
        name,
        Payments,
        "mid_batch",
        &[("OUTBOX_LINGER_MS", "300")],
    )
    .await
}

async fn sigkill_under_load_loses_nothing(world: &mut World, name: &str) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    let load = catalog.orders(40, 11);
    let (first, second) = load.split_at(20);
    ledger.place_all(&world.api, first.to_vec()).await;
    world.stack.kill(Payments).await?;
    ledger.place_all(&world.api, second.to_vec()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.stack.kill(Inventory).await?;
    world.stack.restart(Payments, &[]).await?;
    world.stack.restart(Inventory, &[]).await?;
    world.check(name, &ledger).await?;
    Ok(())
}

async fn sigstop_under_load_only_delays(world: &mut World, name: &str) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    world.stack.signal(Inventory, "STOP").await?;
    ledger.place_all(&world.api, catalog.orders(30, 13)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    world.stack.signal(Inventory, "CONT").await?;
    let verdict = world.check(name, &ledger).await?;
    ensure!(
        verdict
            .statuses
            .iter()
            .all(|(status, _)| status != "CANCELLED"),
        "a 3 s pause should not cost any saga its deadline: {:?}",
        verdict.statuses
    );
    Ok(())
}

async fn sigterm_under_load_stops_gracefully_and_loses_nothing(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    let load = catalog.orders(30, 17);
    let api = world.api.clone();
    let placing = tokio::spawn(async move {
        let mut ledger_part = Ledger::default();
        ledger_part.place_all(&api, load).await;
        ledger_part
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let took = world
        .stack
        .terminate(Payments, Duration::from_secs(25))
        .await?;
    ledger.absorb(placing.await?);
    world.stack.restart(Payments, &[]).await?;
    world.check(name, &ledger).await?;
    println!(
        "    payments-svc stopped {:.2}s after SIGTERM",
        took.as_secs_f64()
    );
    Ok(())
}

async fn kafka_stopped_during_load_delays_but_loses_nothing(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    let load = catalog.orders(30, 19);
    let (before, during) = load.split_at(15);
    ledger.place_all(&world.api, before.to_vec()).await;
    world.stack.stack_command(&["stop", "kafka"]).await?;
    // Orders are still accepted: they wait in orders-svc's outbox.
    let refused = ledger.place_all(&world.api, during.to_vec()).await;
    ensure_eq!(refused, 0, "orders refused while Kafka was down");
    // The orders' outbox cannot be published: orders-svc is alive but not ready.
    let orders = world.stack.url(Orders);
    let (live, ready) = (
        world.api.get_text(&format!("{orders}/health/live")).await?,
        world
            .api
            .get_text(&format!("{orders}/health/ready"))
            .await?,
    );
    ensure_eq!(live.0, 200, "alive while Kafka is down: {}", live.1);
    ensure_eq!(ready.0, 503, "not ready while Kafka is down: {}", ready.1);
    world.stack.stack_command(&["start", "kafka"]).await?;
    world.check(name, &ledger).await?;
    // Every saga settled, so the relay has published since: ready again.
    let ready = world
        .api
        .get_text(&format!("{orders}/health/ready"))
        .await?;
    ensure_eq!(
        ready.0,
        200,
        "ready again after Kafka came back: {}",
        ready.1
    );
    Ok(())
}

async fn postgres_stopped_under_the_services_delays_but_loses_nothing(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    let load = catalog.orders(30, 23);
    let (before, after) = load.split_at(20);
    ledger.place_all(&world.api, before.to_vec()).await;
    world.stack.stack_command(&["stop", "postgres"]).await?;
    // The API answers, with an error, while its database is gone.
    let refused = ledger
        .place_all(
            &world.api,
            vec![(catalog.customers[0], vec![(catalog.products[0], 1)])],
        )
        .await;
    ensure_eq!(refused, 1, "orders refused while PostgreSQL was down");
    ledger.excuse_refusals(refused);
    tokio::time::sleep(Duration::from_secs(2)).await;
    world.stack.stack_command(&["start", "postgres"]).await?;
    for service in [Orders, Payments, Inventory] {
        world
            .stack
            .wait_healthy(service, Duration::from_secs(30))
            .await?;
    }
    ledger.place_all(&world.api, after.to_vec()).await;
    world.check(name, &ledger).await?;
    Ok(())
}

async fn a_service_down_past_the_deadline_gets_its_sagas_cancelled_and_compensated(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    world.stack.kill(Payments).await?;
    ledger.place_all(&world.api, catalog.orders(10, 29)).await;
    // The deadline (15 s) passes while payments-svc is down.
    let started = Instant::now();
    for order in &ledger.orders {
        let body = world
            .api
            .wait_terminal(order.placed.id, Duration::from_secs(30))
            .await?;
        ensure_eq!(
            body["status"],
            json!("CANCELLED"),
            "order {} with payments down",
            order.placed.id
        );
    }
    println!(
        "    cancelled {:.1}s after payments-svc went down",
        started.elapsed().as_secs_f64()
    );
    // Back up, payments-svc reads OrderCreated then OrderCancelled: it charges, then refunds.
    world.stack.restart(Payments, &[]).await?;
    let verdict = world.check(name, &ledger).await?;
    ensure_eq!(
        verdict.statuses,
        vec![("CANCELLED".to_owned(), 10)],
        "statuses"
    );
    Ok(())
}

async fn republishing_events_of_running_sagas_changes_nothing(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    ledger.place_all(&world.api, catalog.orders(20, 31)).await;
    // Replay starts once every saga's first event is in the log: on a slow machine the
    // rounds below could otherwise all run before the relays published anything.
    let saga_ids: Vec<Uuid> = ledger.orders.iter().map(|o| o.placed.saga_id).collect();
    world
        .log
        .wait_until_each_has(&saga_ids, 1, Duration::from_secs(20))
        .await?;
    let producer = RawProducer::new()?;
    let mut republished = 0;
    for _ in 0..5 {
        for order in &ledger.orders {
            for record in world.log.records(&order.placed.saga_id.to_string()) {
                producer.republish(&record).await?;
                republished += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(republished > 0, "nothing was republished");
    world.check(name, &ledger).await?;
    Ok(())
}

async fn a_refund_that_arrives_before_the_charge_creates_no_money(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let customer = ledger.customer(&world.api, 10_000).await?;
    let product = ledger.product(&world.api, 1_000, 10).await?;
    // orders-svc commits the order and dies before publishing OrderCreated.
    world
        .stack
        .restart(Orders, &[("FAULT_CRASH_AT", "after_commit_before_publish")])
        .await?;
    let _ = world.api.place_order(customer, &[(product, 1)]).await;
    ensure!(
        world
            .stack
            .wait_exit(Orders, Duration::from_secs(10))
            .await?,
        "orders-svc did not crash"
    );
    ledger.adopt_orders_from_database(&world.stack).await?;
    let order = ledger
        .orders
        .first()
        .ok_or("the order was not committed")?
        .clone();

    // The compensation for that order reaches payments-svc first.
    let forged = Envelope::new(
        "inventory-svc",
        Some(order.placed.saga_id),
        SagaEvent::InventoryReservationFailed(InventoryReservationFailed {
            order_id: order.placed.id,
            product_id: Some(product),
            reason: "forged out of order".into(),
        }),
    );
    ledger.forged(forged.id);
    let producer = RawProducer::new()?;
    producer
        .send(
            &world.stack.topic(topics::INVENTORY_EVENTS),
            None,
            &order.placed.saga_id.to_string(),
            &forged.encode()?,
        )
        .await?;
    world
        .stack
        .wait_until_consumed_by(&[Payments], Duration::from_secs(20))
        .await?;
    ensure_eq!(
        world.api.balance(customer).await?,
        10_000,
        "balance after an early refund"
    );

    // Now OrderCreated goes out: payments-svc must refuse the charge.
    world.stack.restart(Orders, &[]).await?;
    let verdict = world.check(name, &ledger).await?;
    ensure!(
        verdict.statuses == [("FAILED_PAYMENT".to_owned(), 1)]
            || verdict.statuses == [("CANCELLED".to_owned(), 1)],
        "statuses: {:?}",
        verdict.statuses
    );
    ensure_eq!(world.api.balance(customer).await?, 10_000, "balance");
    let types = world.log.event_types(order.placed.saga_id);
    ensure!(
        !types.contains(&"PaymentSucceeded"),
        "the late OrderCreated was charged: {types:?}"
    );
    ensure!(
        types.contains(&"PaymentFailed"),
        "the late OrderCreated was not refused: {types:?}"
    );
    Ok(())
}

async fn poison_records_are_dead_lettered_with_their_origin(
    world: &mut World,
    name: &str,
) -> TestResult {
    let producer = RawProducer::new()?;
    let topic = world.stack.topic(topics::PAYMENTS_EVENTS);
    let huge = format!("{{\"padding\":\"{}\"}}", "x".repeat(300 * 1024));
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("malformed json", b"{not json".to_vec()),
        (
            "unknown type",
            br#"{"specversion":"1.0","id":"0195a000-0000-7000-8000-00000000000a","type":"PaymentTeleported","source":"x","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","dataversion":1,"data":{}}"#.to_vec(),
        ),
        (
            "missing data",
            br#"{"specversion":"1.0","id":"0195a000-0000-7000-8000-00000000000b","type":"PaymentFailed","source":"x","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","dataversion":1}"#.to_vec(),
        ),
        (
            "wrong schema version",
            br#"{"specversion":"1.0","id":"0195a000-0000-7000-8000-00000000000c","type":"PaymentFailed","source":"x","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","dataversion":2,"data":{"order_id":"0195a000-0000-7000-8000-00000000000d","customer_id":"0195a000-0000-7000-8000-00000000000e","reason":"x"}}"#.to_vec(),
        ),
        ("huge record", huge.into_bytes()),
        (
            "saga event without a saga ID",
            br#"{"specversion":"1.0","id":"0195a000-0000-7000-8000-00000000000f","type":"PaymentFailed","source":"x","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","dataversion":1,"data":{"order_id":"0195a000-0000-7000-8000-00000000000d","customer_id":"0195a000-0000-7000-8000-00000000000e","reason":"x"}}"#.to_vec(),
        ),
    ];
    let key = format!("poison-{}", Uuid::new_v4());
    for (_, value) in &poison {
        producer.send(&topic, Some(0), &key, value).await?;
    }
    // A saga behind the poison still completes.
    let mut ledger = Ledger::default();
    let customer = ledger.customer(&world.api, 10_000).await?;
    let product = ledger.product(&world.api, 100, 10).await?;
    ledger
        .place_all(&world.api, vec![(customer, vec![(product, 1)])])
        .await;
    world.check(name, &ledger).await?;

    let dead = read_topic(
        &shared_events::topics::dead_letter(&topic),
        Duration::from_secs(20),
    )
    .await?;
    let ours: Vec<_> = dead.iter().filter(|r| r.key == key).collect();
    // payments.events is read by orders-svc and inventory-svc: each dead-letters what it cannot
    // read (a rebalance may make one of them dead-letter a record again: at least once).
    ensure!(
        ours.len() >= poison.len() * 2,
        "{} dead-lettered records, expected {}",
        ours.len(),
        poison.len() * 2
    );
    for (kind, value) in &poison {
        ensure!(
            ours.iter().filter(|r| r.payload == *value).count() >= 2,
            "{kind} was not dead-lettered by both consumers"
        );
    }
    // No consumer invents a saga ID: the event is refused, and the reason says why.
    let (_, sagaless) = poison.last().ok_or("no poison")?;
    let reasons: Vec<String> = ours
        .iter()
        .filter(|r| r.payload == *sagaless)
        .filter_map(|r| r.headers.iter().find(|(k, _)| k == "dlq_reason"))
        .map(|(_, reason)| reason.clone())
        .collect();
    ensure!(
        !reasons.is_empty() && reasons.iter().all(|r| r.contains("no sagaid")),
        "the saga event without a saga ID was dead-lettered with reasons {reasons:?}"
    );
    for record in ours {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        ensure_eq!(
            header("dlq_original_topic"),
            Some(topic.clone()),
            "original topic header"
        );
        ensure_eq!(
            header("dlq_original_partition"),
            Some("0".to_owned()),
            "original partition header"
        );
        ensure!(
            header("dlq_original_offset").is_some_and(|o| o.parse::<i64>().is_ok()),
            "original offset header"
        );
        ensure!(
            header("dlq_reason").is_some_and(|r| !r.is_empty()),
            "reason header"
        );
        ensure!(
            poison.iter().any(|(_, v)| *v == record.payload),
            "the dead letter keeps the original value"
        );
    }
    Ok(())
}

async fn transient_database_errors_are_retried_not_dead_lettered(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let customer = ledger.customer(&world.api, 1_000_000).await?;
    let product = ledger.product(&world.api, 100, 1_000).await?;
    for kind in ["serialization", "deadlock", "timeout"] {
        world
            .stack
            .restart(
                Payments,
                &[("FAULT_DB_FAILURES", "3"), ("FAULT_DB_FAILURE", kind)],
            )
            .await?;
        ledger
            .place_and_expect(
                &world.api,
                vec![(customer, vec![(product, 1)]); 3],
                "CONFIRMED",
                &format!("after 3 injected {kind} failures"),
            )
            .await?;
    }
    world.stack.restart(Payments, &[]).await?;
    let stuck = world
        .api
        .get(format!("{}/sagas/stuck", world.stack.url(Payments)))
        .await?;
    ensure_eq!(stuck["count"], json!(0), "parked events");
    world.check(name, &ledger).await?;
    Ok(())
}

async fn a_fatally_failed_producer_is_replaced_and_loses_nothing(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let customer = ledger.customer(&world.api, 1_000_000).await?;
    let product = ledger.product(&world.api, 100, 1_000).await?;
    // payments-svc's producer reports a fatal error, as librdkafka's does when it gives up.
    world
        .stack
        .restart(Payments, &[("FAULT_PRODUCER_FATAL", "1")])
        .await?;
    ledger
        .place_and_expect(
            &world.api,
            vec![(customer, vec![(product, 1)]); 3],
            "CONFIRMED",
            "after a fatal producer error",
        )
        .await?;
    let replaced = world
        .api
        .metric(
            &world.stack.url(Payments),
            "saga_kafka_producers_replaced_total",
        )
        .await?;
    ensure_eq!(replaced, 1, "producers replaced");
    world.check(name, &ledger).await?;
    Ok(())
}

async fn a_compensation_that_keeps_failing_is_parked_and_retried_by_an_operator(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let customer = ledger.customer(&world.api, 10_000).await?;
    let product = ledger.product(&world.api, 1_000, 1).await?;
    world
        .stack
        .restart(
            Payments,
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
    let order = ledger.orders.first().ok_or("order refused")?.clone();

    let payments = world.stack.url(Payments);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stuck = world.api.get(format!("{payments}/sagas/stuck")).await?;
        let parked = stuck["parked"].as_array().cloned().unwrap_or_default();
        if parked.iter().any(|p| {
            p["saga_id"] == json!(order.placed.saga_id)
                && p["event_type"] == "InventoryReservationFailed"
        }) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the failing refund was never parked: {stuck}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure_eq!(
        world.api.balance(customer).await?,
        8_000,
        "charged, refund parked"
    );
    // The explorer page, served by orders-svc, shows the refund parked in payments-svc (asked
    // over HTTP) and highlights the saga with its error.
    let (status, page) = world
        .api
        .get_text(&format!("{}/ui/", world.stack.url(Orders)))
        .await?;
    ensure_eq!(status, 200, "GET /ui/");
    ensure!(
        page.contains(&format!(
            "<tr class=\"parked\" data-service=\"payments-svc\" data-saga-id=\"{}\">",
            order.placed.saga_id
        )) && page.contains(&format!(
            "<tr class=\"saga parked\" data-saga-id=\"{}\"",
            order.placed.saga_id
        )) && page.contains("parked in payments-svc: InventoryReservationFailed"),
        "the explorer does not show the saga parked in payments-svc: {page}"
    );

    // The operator deploys a fix and retries the saga.
    world.stack.restart(Payments, &[]).await?;
    let response = world
        .api
        .client()
        .post(format!("{payments}/sagas/{}/retry", order.placed.saga_id))
        .send()
        .await?;
    let status = response.status().as_u16();
    let outcome: serde_json::Value = response.json().await?;
    ensure!(
        status == 200 && outcome["remaining"] == 0,
        "retry answered {status} {outcome}"
    );
    world.check(name, &ledger).await?;
    ensure_eq!(
        world.api.balance(customer).await?,
        10_000,
        "refunded after the retry"
    );
    Ok(())
}

async fn many_orders_competing_for_scarce_stock_confirm_exactly_the_stock(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let product = ledger.product(&world.api, 100, 5).await?;
    let mut load = Vec::new();
    for _ in 0..30 {
        load.push((
            ledger.customer(&world.api, 10_000).await?,
            vec![(product, 1)],
        ));
    }
    ledger.place_all(&world.api, load).await;
    let verdict = world.check(name, &ledger).await?;
    ensure_eq!(
        verdict.statuses,
        vec![
            ("CONFIRMED".to_owned(), 5),
            ("FAILED_INVENTORY".to_owned(), 25)
        ],
        "statuses"
    );
    ensure_eq!(world.api.stock(product).await?, (0, 5), "stock");
    Ok(())
}

async fn many_orders_competing_for_one_balance_never_overdraw_it(
    world: &mut World,
    name: &str,
) -> TestResult {
    let mut ledger = Ledger::default();
    let customer = ledger.customer(&world.api, 500).await?;
    let product = ledger.product(&world.api, 100, 1_000).await?;
    ledger
        .place_all(&world.api, vec![(customer, vec![(product, 1)]); 30])
        .await;
    let verdict = world.check(name, &ledger).await?;
    ensure_eq!(
        verdict.statuses,
        vec![
            ("CONFIRMED".to_owned(), 5),
            ("FAILED_PAYMENT".to_owned(), 25)
        ],
        "statuses"
    );
    ensure_eq!(world.api.balance(customer).await?, 0, "balance");
    Ok(())
}

async fn random_faults_over_random_orders_keep_every_invariant(
    world: &mut World,
    name: &str,
) -> TestResult {
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(Uuid::new_v4().as_u128() as u32));
    println!("    seed {seed} (FAULTS_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);
    let mut ledger = Ledger::default();
    let catalog = Catalog::seed(&world.api, &mut ledger).await?;
    for round in 0..3 {
        let service = [Orders, Payments, Inventory][rng.below(3) as usize];
        let fault = rng.below(3);
        let load = catalog.orders(10 + rng.below(20) as usize, seed.wrapping_add(round));
        match fault {
            0 => {
                ledger.place_all(&world.api, load).await;
                world.stack.kill(service).await?;
                tokio::time::sleep(Duration::from_millis(rng.below(1_500))).await;
                world.stack.restart(service, &[]).await?;
            }
            1 if service != Orders => {
                world.stack.signal(service, "STOP").await?;
                ledger.place_all(&world.api, load).await;
                tokio::time::sleep(Duration::from_millis(rng.below(2_000))).await;
                world.stack.signal(service, "CONT").await?;
            }
            _ => {
                ledger.place_all(&world.api, load).await;
                world
                    .stack
                    .terminate(service, Duration::from_secs(25))
                    .await?;
                world.stack.restart(service, &[]).await?;
            }
        }
    }
    // Killing orders-svc may lose a 202 whose order committed: follow what the database holds.
    ledger.adopt_orders_from_database(&world.stack).await?;
    world.check(name, &ledger).await?;
    Ok(())
}
