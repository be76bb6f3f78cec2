//! The saga end to end: the three service binaries, real PostgreSQL, real Kafka.
//!
//! Each scenario asserts the order's final status, the customer's balance, the product's stock
//! and the exact list of event types Kafka holds under the saga's key.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use e2e_tests::runner::{self, World, scenario};
use e2e_tests::stack::ServiceName;
use e2e_tests::{Api, EventLog, RawProducer, Stack, TestResult, ensure, ensure_eq};
use serde_json::{Value, json};
use shared_events::topics;
use uuid::Uuid;

const SETTLE: Duration = Duration::from_secs(30);

const CONFIRMED_EVENTS: [&str; 4] = [
    "OrderCreated",
    "PaymentSucceeded",
    "InventoryReserved",
    "OrderConfirmed",
];
const FAILED_PAYMENT_EVENTS: [&str; 3] = ["OrderCreated", "PaymentFailed", "OrderFailed"];
const FAILED_INVENTORY_EVENTS: [&str; 5] = [
    "OrderCreated",
    "PaymentSucceeded",
    "InventoryReservationFailed",
    "PaymentRefunded",
    "OrderFailed",
];

fn main() -> ExitCode {
    runner::run(vec![
        scenario(
            "happy_path_confirms_the_order_charges_once_and_reserves_stock",
            |w: &mut SagaWorld| Box::pin(happy_path(&w.api, &w.log, &mut w.finished)),
        ),
        scenario(
            "insufficient_funds_fails_the_order_and_leaves_stock_alone",
            |w: &mut SagaWorld| Box::pin(insufficient_funds(&w.api, &w.log, &mut w.finished)),
        ),
        scenario(
            "out_of_stock_refunds_the_payment_before_the_order_fails",
            |w: &mut SagaWorld| Box::pin(out_of_stock(&w.api, &w.log, &mut w.finished)),
        ),
        scenario(
            "republishing_every_event_of_finished_sagas_changes_nothing",
            |w: &mut SagaWorld| Box::pin(republishing_changes_nothing(w)),
        ),
        scenario(
            "undecodable_records_do_not_stop_any_consumer",
            |w: &mut SagaWorld| Box::pin(undecodable_records(&w.stack, &w.api, &w.log)),
        ),
        scenario(
            "the_http_api_rejects_bad_requests_with_clear_errors",
            |w: &mut SagaWorld| Box::pin(http_contract(&w.api)),
        ),
        scenario(
            "records_carry_the_cloudevents_headers",
            |w: &mut SagaWorld| Box::pin(record_headers(&w.api, &w.log)),
        ),
        scenario(
            "an_orders_details_are_composed_and_only_partial_while_a_service_is_slow_or_down",
            |w: &mut SagaWorld| Box::pin(order_details(w)),
        ),
    ])
}

/// The running stack and what the scenarios leave for later ones.
struct SagaWorld {
    stack: Stack,
    api: Api,
    log: EventLog,
    /// Sagas the first scenarios finished, for the replay scenario to check again.
    finished: Vec<Finished>,
}

impl World for SagaWorld {
    async fn start() -> TestResult<Self> {
        let stack = Stack::start().await?;
        println!(
            "e2e: services up (topics {}*, logs {})",
            stack.prefix,
            stack.log_dir.display()
        );
        let api = Api::new(&stack);
        let log = EventLog::start(&stack)?;
        Ok(SagaWorld {
            stack,
            api,
            log,
            finished: Vec::new(),
        })
    }

    async fn finish(self) -> TestResult {
        self.stack.stop().await
    }
}

/// What a finished scenario leaves behind, for the replay scenario to check again.
struct Finished {
    order: Uuid,
    saga: Uuid,
    customer: Uuid,
    product: Uuid,
    status: &'static str,
    balance: i64,
    stock: (i64, i64),
}

async fn happy_path(api: &Api, log: &EventLog, finished: &mut Vec<Finished>) -> TestResult {
    let product = api.product(1_250, 10).await?;
    let customer = api.customer(10_000).await?;
    let order = api.place_order(customer, &[(product, 2)]).await?;
    ensure_eq!(
        order.total_cents,
        2_500,
        "the order is priced from the catalog"
    );

    let settled = api.wait_terminal(order.id, SETTLE).await?;
    ensure_eq!(settled["status"], json!("CONFIRMED"), "final status");
    ensure_eq!(
        settled["items"][0]["unit_price_cents"],
        json!(1_250),
        "line price"
    );
    ensure_eq!(
        api.balance(customer).await?,
        7_500,
        "balance after one charge"
    );
    ensure_eq!(api.stock(product).await?, (8, 2), "(available, reserved)");
    ensure_eq!(
        log.wait_for(order.saga_id, 4, SETTLE).await?,
        CONFIRMED_EVENTS,
        "events on Kafka"
    );
    finished.push(Finished {
        order: order.id,
        saga: order.saga_id,
        customer,
        product,
        status: "CONFIRMED",
        balance: 7_500,
        stock: (8, 2),
    });
    Ok(())
}

async fn insufficient_funds(api: &Api, log: &EventLog, finished: &mut Vec<Finished>) -> TestResult {
    let product = api.product(5_000, 10).await?;
    let customer = api.customer(4_999).await?;
    let order = api.place_order(customer, &[(product, 1)]).await?;

    let settled = api.wait_terminal(order.id, SETTLE).await?;
    ensure_eq!(settled["status"], json!("FAILED_PAYMENT"), "final status");
    ensure!(
        settled["failure_reason"]
            .as_str()
            .is_some_and(|r| r.contains("insufficient funds")),
        "failure_reason should explain: {}",
        settled["failure_reason"]
    );
    ensure_eq!(api.balance(customer).await?, 4_999, "balance untouched");
    ensure_eq!(api.stock(product).await?, (10, 0), "stock untouched");
    ensure_eq!(
        log.wait_for(order.saga_id, 3, SETTLE).await?,
        FAILED_PAYMENT_EVENTS,
        "events on Kafka"
    );
    finished.push(Finished {
        order: order.id,
        saga: order.saga_id,
        customer,
        product,
        status: "FAILED_PAYMENT",
        balance: 4_999,
        stock: (10, 0),
    });
    Ok(())
}

async fn out_of_stock(api: &Api, log: &EventLog, finished: &mut Vec<Finished>) -> TestResult {
    let plenty = api.product(1_000, 10).await?;
    let scarce = api.product(300, 1).await?;
    let customer = api.customer(10_000).await?;
    let order = api
        .place_order(customer, &[(plenty, 1), (scarce, 2)])
        .await?;
    ensure_eq!(order.total_cents, 1_600, "total");

    let settled = api.wait_terminal(order.id, SETTLE).await?;
    ensure_eq!(settled["status"], json!("FAILED_INVENTORY"), "final status");
    // The order says FAILED_INVENTORY only after the refund committed: the money is back now.
    ensure_eq!(
        api.balance(customer).await?,
        10_000,
        "balance after charge and refund"
    );
    ensure_eq!(
        api.stock(plenty).await?,
        (10, 0),
        "all or nothing: the covered line is not held"
    );
    ensure_eq!(
        api.stock(scarce).await?,
        (1, 0),
        "the short line is not held"
    );
    ensure_eq!(
        log.wait_for(order.saga_id, 5, SETTLE).await?,
        FAILED_INVENTORY_EVENTS,
        "events on Kafka"
    );
    finished.push(Finished {
        order: order.id,
        saga: order.saga_id,
        customer,
        product: scarce,
        status: "FAILED_INVENTORY",
        balance: 10_000,
        stock: (1, 0),
    });
    Ok(())
}

async fn republishing_changes_nothing(world: &mut SagaWorld) -> TestResult {
    // Run alone (a name filter, nextest), this scenario first finishes one saga of each kind.
    if world.finished.is_empty() {
        happy_path(&world.api, &world.log, &mut world.finished).await?;
        insufficient_funds(&world.api, &world.log, &mut world.finished).await?;
        out_of_stock(&world.api, &world.log, &mut world.finished).await?;
    }
    let SagaWorld {
        stack,
        api,
        log,
        finished,
    } = world;
    let producer = RawProducer::new()?;
    let mut distinct_before = Vec::new();
    for saga in finished.iter() {
        let records = log.records(&saga.saga.to_string());
        distinct_before.push(distinct_event_ids(&records));
        for record in &records {
            producer.republish(record).await?;
        }
    }
    // Only once every outbox has drained and the log has read everything published can a
    // second effect of the replay (a new event) be seen, so only then is "none" a finding.
    stack.wait_until_quiet(SETTLE).await?;
    log.wait_caught_up(SETTLE).await?;
    for (saga, before) in finished.iter().zip(distinct_before) {
        let order = api.order(saga.order).await?;
        ensure_eq!(
            order["status"],
            json!(saga.status),
            "status of {}",
            saga.order
        );
        ensure_eq!(
            api.balance(saga.customer).await?,
            saga.balance,
            "balance of {}",
            saga.customer
        );
        ensure_eq!(
            api.stock(saga.product).await?,
            saga.stock,
            "stock of {}",
            saga.product
        );
        let after = distinct_event_ids(&log.records(&saga.saga.to_string()));
        ensure_eq!(after, before, "no new event for saga {}", saga.saga);
    }
    Ok(())
}

fn distinct_event_ids(records: &[e2e_tests::Record]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = records
        .iter()
        .filter_map(|r| r.envelope.as_ref().map(|e| e.id))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

async fn undecodable_records(stack: &Stack, api: &Api, log: &EventLog) -> TestResult {
    let producer = RawProducer::new()?;
    let poison: [&[u8]; 4] = [
        b"{not json",
        br#"{"specversion":"1.0","id":"0195a000-0000-7000-8000-000000000000","type":"OrderTeleported","source":"x","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","dataversion":1,"data":{}}"#,
        br#"{"specversion":"1.0","id":"0195a000-0000-7000-8000-000000000001","type":"OrderCreated","source":"x","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","dataversion":1}"#,
        b"",
    ];
    // Every partition of every saga topic gets every kind of poison, ahead of the next saga.
    for topic in [
        topics::ORDERS_EVENTS,
        topics::PAYMENTS_EVENTS,
        topics::INVENTORY_EVENTS,
    ] {
        for partition in 0..6 {
            for value in poison {
                producer
                    .send(&stack.topic(topic), Some(partition), "poison", value)
                    .await?;
            }
        }
    }
    let product = api.product(100, 5).await?;
    let customer = api.customer(1_000).await?;
    let order = api.place_order(customer, &[(product, 1)]).await?;
    let finished = api.wait_terminal(order.id, SETTLE).await?;
    ensure_eq!(
        finished["status"],
        json!("CONFIRMED"),
        "a saga after the poison still completes"
    );
    ensure_eq!(
        log.wait_for(order.saga_id, 4, SETTLE).await?,
        CONFIRMED_EVENTS,
        "events on Kafka"
    );
    stack.wait_until_consumed(SETTLE).await?;
    Ok(())
}

async fn http_contract(api: &Api) -> TestResult {
    let client = api.client();
    let orders = format!("{}/orders", api.orders_url());
    let product = api.product(100, 5).await?;
    let customer = Uuid::new_v4();
    let cases = [
        (
            json!({"customer_id": customer, "items": []}),
            422,
            "no_items",
        ),
        (
            json!({"customer_id": customer, "items": [{"product_id": product, "quantity": 0}]}),
            422,
            "invalid_quantity",
        ),
        (
            json!({"customer_id": customer, "items": [{"product_id": product, "quantity": -3}]}),
            422,
            "invalid_quantity",
        ),
        (
            json!({"customer_id": customer, "items": [{"product_id": Uuid::new_v4(), "quantity": 1}]}),
            422,
            "unknown_product",
        ),
        (
            json!({"customer_id": customer, "items": [{"product_id": product, "quantity": 1, "unit_price_cents": 1}]}),
            422,
            "invalid_body",
        ),
        (
            json!({"customer_id": "not-a-uuid", "items": []}),
            422,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let response = client.post(&orders).json(&body).send().await?;
        let got = response.status().as_u16();
        let error: serde_json::Value = response.json().await?;
        ensure!(
            got == status && error["error"]["code"] == code,
            "{body} → {got} {error}, expected {status} {code}"
        );
    }
    let malformed = client
        .post(&orders)
        .header("content-type", "application/json")
        .body("{\"customer_id\":")
        .send()
        .await?;
    ensure_eq!(malformed.status().as_u16(), 400, "malformed JSON");
    let error: serde_json::Value = malformed.json().await?;
    ensure_eq!(
        error["error"]["code"],
        json!("malformed_json"),
        "malformed JSON code"
    );

    // Over the body limit (HTTP_MAX_BODY_BYTES, 64 KiB): refused before it is read.
    let oversized = client
        .post(&orders)
        .header("content-type", "application/json")
        .body(format!(
            "{{\"customer_id\":\"{}\"}}",
            "x".repeat(100 * 1024)
        ))
        .send()
        .await?;
    ensure_eq!(oversized.status().as_u16(), 413, "oversized body");
    let error: serde_json::Value = oversized.json().await?;
    ensure_eq!(
        error["error"]["code"],
        json!("body_too_large"),
        "oversized body code"
    );
    let wrong_method = client.delete(&orders).send().await?;
    ensure_eq!(wrong_method.status().as_u16(), 405, "wrong method");
    let error: serde_json::Value = wrong_method.json().await?;
    ensure_eq!(
        error["error"]["code"],
        json!("method_not_allowed"),
        "wrong method code"
    );

    let missing = client
        .get(format!("{}/orders/{}", api.orders_url(), Uuid::new_v4()))
        .send()
        .await?;
    ensure_eq!(missing.status().as_u16(), 404, "unknown order");
    let bad_id = client
        .get(format!("{}/orders/not-a-uuid", api.orders_url()))
        .send()
        .await?;
    ensure_eq!(bad_id.status().as_u16(), 400, "malformed order ID");

    let accepted = client
        .post(&orders)
        .json(&json!({"customer_id": customer, "items": [{"product_id": product, "quantity": 1}]}))
        .send()
        .await?;
    ensure_eq!(accepted.status().as_u16(), 202, "a valid order");
    let location = accepted
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = accepted.json().await?;
    ensure_eq!(
        location,
        Some(format!(
            "/orders/{}",
            body["id"].as_str().unwrap_or_default()
        )),
        "Location header"
    );
    Ok(())
}

async fn record_headers(api: &Api, log: &EventLog) -> TestResult {
    let product = api.product(100, 5).await?;
    let customer = api.customer(1_000).await?;
    let order = api.place_order(customer, &[(product, 1)]).await?;
    api.wait_terminal(order.id, SETTLE).await?;
    log.wait_for(order.saga_id, 4, SETTLE).await?;
    for record in log.records(&order.saga_id.to_string()) {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let envelope = record
            .envelope
            .as_ref()
            .ok_or("an undecodable record under a saga key")?;
        ensure_eq!(
            header("content-type"),
            Some("application/cloudevents+json".to_owned()),
            "content-type"
        );
        ensure_eq!(
            header("event_type"),
            Some(envelope.event_type().to_owned()),
            "event_type"
        );
        ensure_eq!(
            header("saga_id"),
            Some(order.saga_id.to_string()),
            "saga_id"
        );
        ensure!(
            header("traceparent").is_some_and(|t| t.starts_with("00-")),
            "traceparent on {}",
            envelope.event_type()
        );
        // As Kafka carries it: the context attributes first, so a console consumer shows the
        // type before the payload (the outbox keeps the text as written, not as jsonb).
        let opening = format!(
            r#"{{"specversion":"1.0","type":"{}","source":""#,
            envelope.event_type()
        );
        ensure!(
            record.payload.starts_with(opening.as_bytes()),
            "the record opens with {opening}: {}",
            String::from_utf8_lossy(&record.payload)
        );
        let value: serde_json::Value = serde_json::from_slice(&record.payload)?;
        ensure_eq!(value["specversion"], json!("1.0"), "specversion");
        ensure_eq!(value["sagaid"], json!(order.saga_id.to_string()), "sagaid");
    }
    Ok(())
}

/// `GET /orders/{id}/details` composes the order with payments-svc's payment and
/// inventory-svc's reservation. With payments-svc frozen (SIGSTOP: it takes the connection and
/// never answers) and then inventory-svc killed, the answer still comes within the peer
/// timeout, with the part that could not be had marked missing.
async fn order_details(w: &mut SagaWorld) -> TestResult {
    let order = w.api.confirmed_order(700).await?;
    let url = format!("{}/orders/{}/details", w.api.orders_url(), order.id);

    let whole = w.api.get(url.clone()).await?;
    ensure_eq!(whole["order"]["id"], json!(order.id), "the order");
    ensure_eq!(
        whole["payment"]["status"],
        "CHARGED",
        "the payment: {whole}"
    );
    ensure_eq!(
        whole["payment"]["amount_cents"],
        1400,
        "the payment's amount"
    );
    ensure_eq!(
        whole["reservation"]["status"],
        "RESERVED",
        "the reservation: {whole}"
    );
    ensure_eq!(whole["missing"], json!([]), "nothing missing");

    // The peer timeout is PEER_TIMEOUT_MS, 1 s by default; the answer may take a little more.
    let bound = Duration::from_millis(2500);
    w.stack.signal(ServiceName::Payments, "STOP").await?;
    let started = Instant::now();
    let partial = w.api.get(url.clone()).await;
    let took = started.elapsed();
    w.stack.signal(ServiceName::Payments, "CONT").await?;
    let partial = partial?;
    ensure!(
        took < bound,
        "the answer took {took:?} with payments-svc frozen"
    );
    ensure_eq!(partial["payment"], Value::Null, "no payment: {partial}");
    ensure_eq!(
        partial["reservation"]["status"],
        "RESERVED",
        "the reservation still"
    );
    ensure_eq!(
        partial["missing"][0]["service"],
        "payments-svc",
        "what is missing"
    );
    ensure_eq!(
        partial["missing"][0]["reason"],
        "did not answer in time",
        "why"
    );

    w.stack.kill(ServiceName::Inventory).await?;
    let started = Instant::now();
    let partial = w.api.get(url.clone()).await;
    let took = started.elapsed();
    w.stack.restart(ServiceName::Inventory, &[]).await?;
    let partial = partial?;
    ensure!(
        took < bound,
        "the answer took {took:?} with inventory-svc down"
    );
    ensure_eq!(partial["payment"]["status"], "CHARGED", "the payment again");
    ensure_eq!(
        partial["reservation"],
        Value::Null,
        "no reservation: {partial}"
    );
    ensure_eq!(
        partial["missing"][0]["service"],
        "inventory-svc",
        "what is missing"
    );
    ensure_eq!(partial["missing"][0]["reason"], "unreachable", "why");

    let whole_again = w.api.get(url).await?;
    ensure_eq!(
        whole_again["missing"],
        json!([]),
        "whole once both are back"
    );
    Ok(())
}
