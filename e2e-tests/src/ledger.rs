//! The ledger of a scenario: what it created, with the starting values, and the invariants
//! every scenario ends with (every saga finishes, money and stock are conserved, one terminal
//! event per saga, each saga's events in causal order, every outbox drains), plus the summary
//! table.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::api::{Api, PlacedOrder};
use crate::events::EventLog;
use crate::stack::{ServiceName, Stack};
use crate::{Rng, TestResult};

/// An order the ledger follows until it settles.
#[derive(Debug, Clone)]
pub struct TrackedOrder {
    pub placed: PlacedOrder,
    pub customer: Uuid,
    pub items: Vec<(Uuid, u32)>,
}

/// Everything a scenario created, with the starting values the invariants are checked against.
#[derive(Debug, Default)]
pub struct Ledger {
    customers: Vec<(Uuid, i64)>,
    products: Vec<(Uuid, i64)>,
    pub orders: Vec<TrackedOrder>,
    /// Orders the scenario tried to place and the API refused.
    refused: usize,
    /// Refusals the scenario expected (and checked) itself: refusing is what it tests.
    excused: usize,
    /// Events the scenario published itself, out of causal order on purpose.
    forged: HashSet<Uuid>,
}

/// One scenario's outcome for the summary table.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub scenario: String,
    pub orders: usize,
    pub terminal: usize,
    pub money_conserved: bool,
    pub stock_conserved: bool,
    pub settle: Duration,
    pub statuses: Vec<(String, usize)>,
}

/// The rows printed after the suite.
pub type Table = Arc<Mutex<Vec<Verdict>>>;

const TERMINAL_EVENTS: [&str; 3] = ["OrderConfirmed", "OrderFailed", "OrderCancelled"];

impl Ledger {
    pub async fn customer(&mut self, api: &Api, balance_cents: i64) -> TestResult<Uuid> {
        let id = api.customer(balance_cents).await?;
        self.customers.push((id, balance_cents));
        Ok(id)
    }

    pub async fn product(&mut self, api: &Api, price_cents: i64, stock: i64) -> TestResult<Uuid> {
        let id = api.product(price_cents, stock).await?;
        self.products.push((id, stock));
        Ok(id)
    }

    fn track(&mut self, placed: PlacedOrder, customer: Uuid, items: Vec<(Uuid, u32)>) {
        self.orders.push(TrackedOrder {
            placed,
            customer,
            items,
        });
    }

    /// Places the orders concurrently and follows every one that was accepted; returns how
    /// many were refused (e.g. 503 while the database is down). A refusal fails the
    /// scenario's check unless the scenario excuses it with [`Ledger::excuse_refusals`].
    pub async fn place_all(&mut self, api: &Api, orders: Vec<(Uuid, Vec<(Uuid, u32)>)>) -> usize {
        let attempts =
            futures::future::join_all(orders.into_iter().map(|(customer, items)| async move {
                let placed = api.place_order(customer, &items).await;
                (customer, items, placed)
            }))
            .await;
        let mut refused = 0;
        for (customer, items, placed) in attempts {
            match placed {
                Ok(placed) => self.track(placed, customer, items),
                Err(_) => refused += 1,
            }
        }
        self.refused += refused;
        refused
    }

    /// Records that `count` refusals were expected: the scenario tests refusing.
    /// Places the orders like [`Ledger::place_all`], then waits until each one accepted ends
    /// in `status`; `why` names the circumstances in the failure message.
    pub async fn place_and_expect(
        &mut self,
        api: &Api,
        orders: Vec<(Uuid, Vec<(Uuid, u32)>)>,
        status: &str,
        why: &str,
    ) -> TestResult {
        let before = self.orders.len();
        self.place_all(api, orders).await;
        for order in &self.orders[before..] {
            let body = api
                .wait_terminal(order.placed.id, Duration::from_secs(20))
                .await?;
            ensure_eq!(body["status"], serde_json::json!(status), "{why}");
        }
        Ok(())
    }

    /// Leaves an event the scenario forged out of the causal-order check.
    pub fn forged(&mut self, event_id: Uuid) {
        self.forged.insert(event_id);
    }

    pub fn excuse_refusals(&mut self, count: usize) {
        self.excused += count;
    }

    /// Takes over the orders (and refusals) of a ledger that placed them on another task.
    pub fn absorb(&mut self, other: Ledger) {
        self.orders.extend(other.orders);
        self.refused += other.refused;
        self.excused += other.excused;
        self.forged.extend(other.forged);
    }

    /// Waits until every order is terminal, every outbox is empty and every consumer group
    /// has caught up, then checks the invariants. Errors name every violation found.
    pub async fn settle_and_check(
        &self,
        name: &str,
        stack: &Stack,
        api: &Api,
        log: &EventLog,
        within: Duration,
    ) -> TestResult<Verdict> {
        let started = Instant::now();
        let deadline = started + within;
        let mut violations = Vec::new();
        if self.orders.is_empty() {
            violations.push("no order was accepted, so nothing was checked".to_owned());
        }
        if self.refused > self.excused {
            violations.push(format!(
                "{} orders were refused that the scenario did not expect to be",
                self.refused - self.excused
            ));
        }

        let mut statuses = HashMap::new();
        for order in &self.orders {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match api
                .wait_terminal(order.placed.id, remaining.max(Duration::from_millis(1)))
                .await
            {
                Ok(body) => {
                    statuses.insert(
                        order.placed.id,
                        body["status"].as_str().unwrap_or_default().to_owned(),
                    );
                }
                Err(error) => violations.push(format!("every saga finishes: {error}")),
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Err(error) = stack
            .wait_until_quiet(remaining.max(Duration::from_millis(1)))
            .await
        {
            violations.push(error.to_string());
        }
        // The checks below read the event log: it must have read everything published,
        // however long its own consumer took to reconnect after an outage.
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Err(error) = log
            .wait_caught_up(remaining.max(Duration::from_secs(5)))
            .await
        {
            violations.push(error.to_string());
        }
        let settle = started.elapsed();

        let confirmed: Vec<&TrackedOrder> = self
            .orders
            .iter()
            .filter(|o| statuses.get(&o.placed.id).is_some_and(|s| s == "CONFIRMED"))
            .collect();
        let mut money_conserved = true;
        for &(customer, opening) in &self.customers {
            let charged: i64 = confirmed
                .iter()
                .filter(|o| o.customer == customer)
                .map(|o| o.placed.total_cents)
                .sum();
            let balance = api.balance(customer).await?;
            if balance != opening - charged {
                money_conserved = false;
                let orders: Vec<String> = self
                    .orders
                    .iter()
                    .filter(|o| o.customer == customer)
                    .map(|o| {
                        format!(
                            "{} {} {}",
                            o.placed.saga_id,
                            o.placed.total_cents,
                            statuses.get(&o.placed.id).map_or("?", String::as_str)
                        )
                    })
                    .collect();
                violations.push(format!("money: customer {customer} opened with {opening}, confirmed {charged}, holds {balance}; orders (saga, total, status): {orders:?}"));
            }
        }
        let mut stock_conserved = true;
        for &(product, initial) in &self.products {
            let held: i64 = confirmed
                .iter()
                .flat_map(|o| &o.items)
                .filter(|(p, _)| *p == product)
                .map(|(_, q)| i64::from(*q))
                .sum();
            let (available, reserved) = api.stock(product).await?;
            if available < 0 || available + reserved != initial || reserved != held {
                stock_conserved = false;
                violations.push(format!("stock: product {product} started at {initial}, confirmed {held}, now available {available} reserved {reserved}"));
            }
        }
        for order in &self.orders {
            let mut terminal: Vec<(Uuid, &'static str)> = log
                .events(order.placed.saga_id)
                .iter()
                .filter(|e| TERMINAL_EVENTS.contains(&e.event_type()))
                .map(|e| (e.id, e.event_type()))
                .collect();
            terminal.sort();
            terminal.dedup();
            if terminal.len() != 1 {
                violations.push(format!(
                    "saga {} has terminal events {:?}",
                    order.placed.saga_id, terminal
                ));
            }
        }

        for order in &self.orders {
            violations.extend(log.causal_order_violations(order.placed.saga_id, &self.forged));
        }

        let mut counts: HashMap<String, usize> = HashMap::new();
        for status in statuses.values() {
            *counts.entry(status.clone()).or_default() += 1;
        }
        let mut statuses: Vec<(String, usize)> = counts.into_iter().collect();
        statuses.sort();
        let verdict = Verdict {
            scenario: name.to_owned(),
            orders: self.orders.len(),
            terminal: statuses.iter().map(|(_, n)| n).sum(),
            money_conserved,
            stock_conserved,
            settle,
            statuses,
        };
        if violations.is_empty() {
            Ok(verdict)
        } else {
            Err(format!(
                "{} invariant violations: {}",
                violations.len(),
                violations.join("; ")
            )
            .into())
        }
    }
}

/// Customers and products for a mixed load: most orders succeed, some are declined (a poor
/// customer), some run out of stock (a scarce product).
pub struct Catalog {
    pub customers: Vec<Uuid>,
    pub products: Vec<Uuid>,
}

impl Catalog {
    /// Creates the customers and products through the API, in `ledger`.
    pub async fn seed(api: &Api, ledger: &mut Ledger) -> TestResult<Catalog> {
        let mut customers = Vec::new();
        for balance in [1_000_000, 1_000_000, 1_000_000, 1_500] {
            customers.push(ledger.customer(api, balance).await?);
        }
        let mut products = Vec::new();
        for (price, stock) in [(250, 1_000), (400, 1_000), (1_000, 3)] {
            products.push(ledger.product(api, price, stock).await?);
        }
        Ok(Catalog {
            customers,
            products,
        })
    }

    /// `n` orders over the catalog, the same for the same seed.
    pub fn orders(&self, n: usize, seed: u64) -> Vec<(Uuid, Vec<(Uuid, u32)>)> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| {
                let customer = self.customers[rng.below(self.customers.len() as u64) as usize];
                let first = rng.below(self.products.len() as u64) as usize;
                let mut items = vec![(self.products[first], 1 + rng.below(3) as u32)];
                if rng.below(3) == 0 {
                    let second = (first + 1) % self.products.len();
                    items.push((self.products[second], 1 + rng.below(2) as u32));
                }
                (customer, items)
            })
            .collect()
    }
}

/// Prints the verdicts as a table.
pub fn print_table(rows: &[Verdict]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "| scenario | orders | terminal | money conserved | stock conserved | settle | statuses |"
    );
    println!("|---|---:|---:|:---:|:---:|---:|---|");
    for row in rows {
        let statuses: Vec<String> = row
            .statuses
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {:.1}s | {} |",
            row.scenario,
            row.orders,
            row.terminal,
            if row.money_conserved { "yes" } else { "NO" },
            if row.stock_conserved { "yes" } else { "NO" },
            row.settle.as_secs_f64(),
            statuses.join(", ")
        );
    }
}

impl Ledger {
    /// Follows every order orders-svc's database holds for this ledger's customers. Used after
    /// a crash in orders-svc, when an order may have committed although its 202 never arrived.
    pub async fn adopt_orders_from_database(&mut self, stack: &Stack) -> TestResult {
        use sea_orm::{ConnectionTrait, DbBackend, Statement};
        let db = stack.database(ServiceName::Orders).await?;
        let customers: Vec<Uuid> = self.customers.iter().map(|(id, _)| *id).collect();
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT o.id, o.saga_id, o.customer_id, o.total_cents, i.product_id, i.quantity \
                 FROM orders o JOIN order_items i ON i.order_id = o.id \
                 WHERE o.customer_id = ANY($1) ORDER BY o.id, i.line_no",
                [customers.into()],
            ))
            .await?;
        db.close().await?;
        let mut adopted: Vec<TrackedOrder> = Vec::new();
        for row in rows {
            let id: Uuid = row.try_get("", "id")?;
            let product: Uuid = row.try_get("", "product_id")?;
            let quantity = u32::try_from(row.try_get::<i32>("", "quantity")?)?;
            match adopted.last_mut() {
                Some(order) if order.placed.id == id => order.items.push((product, quantity)),
                _ => adopted.push(TrackedOrder {
                    placed: PlacedOrder {
                        id,
                        saga_id: row.try_get("", "saga_id")?,
                        total_cents: row.try_get("", "total_cents")?,
                    },
                    customer: row.try_get("", "customer_id")?,
                    items: vec![(product, quantity)],
                }),
            }
        }
        self.orders = adopted;
        Ok(())
    }
}
