//! The HTTP calls a user of the system makes, against the running stack.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::TestResult;
use crate::stack::{ServiceName, Stack};

/// The HTTP calls a user of the system makes.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    orders: String,
    payments: String,
    inventory: String,
}

/// An accepted order.
#[derive(Debug, Clone)]
pub struct PlacedOrder {
    pub id: Uuid,
    pub saga_id: Uuid,
    pub total_cents: i64,
}

/// Default headers with `Authorization: authorization` (none if it is not a valid value).
fn authorized(authorization: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = reqwest::header::HeaderValue::from_str(authorization) {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    headers
}

impl Api {
    /// A client of the test stack, sending a token of every scope (the stack's services check
    /// the tests' tokens).
    pub fn new(stack: &Stack) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .default_headers(authorized(&saga_runtime::testing::bearer_of_all_scopes()))
                .build()
                .unwrap_or_default(),
            orders: stack.url(ServiceName::Orders),
            payments: stack.url(ServiceName::Payments),
            inventory: stack.url(ServiceName::Inventory),
        }
    }

    /// A client of services at the given base URLs, e.g. the stack that `deploy/stack up`
    /// runs, keeping up to `connections` idle keep-alive connections per service and sending
    /// `authorization` (e.g. `Bearer …` from `deploy/stack token`) with every request.
    pub fn at(
        orders: &str,
        payments: &str,
        inventory: &str,
        connections: usize,
        authorization: &str,
    ) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .default_headers(authorized(authorization))
                .pool_max_idle_per_host(connections)
                .tcp_nodelay(true)
                .build()
                .unwrap_or_default(),
            orders: orders.to_owned(),
            payments: payments.to_owned(),
            inventory: inventory.to_owned(),
        }
    }

    /// The same client, placing orders through another orders-svc instance at `orders`.
    pub fn with_orders(&self, orders: &str) -> Self {
        Self {
            orders: orders.to_owned(),
            ..self.clone()
        }
    }

    pub fn orders_url(&self) -> &str {
        &self.orders
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    async fn post(&self, url: String, body: Value, expected: u16) -> TestResult<Value> {
        self.post_with_headers(url, body, &[], expected).await
    }

    async fn post_with_headers(
        &self,
        url: String,
        body: Value,
        headers: &[(&str, &str)],
        expected: u16,
    ) -> TestResult<Value> {
        let mut request = self.client.post(&url).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        ensure!(
            status == expected,
            "POST {url} answered {status}, expected {expected}: {text}"
        );
        Ok(serde_json::from_str(&text)?)
    }

    pub async fn get(&self, url: String) -> TestResult<Value> {
        let (status, text) = self.get_text(&url).await?;
        ensure!(status == 200, "GET {url} answered {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// `GET url`, whatever the status: the status and the body as text (`/metrics`, health).
    pub async fn get_text(&self, url: &str) -> TestResult<(u16, String)> {
        let response = self.client.get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// The value of a counter or a whole-number gauge on a service's `/metrics` (the first
    /// series of that name), e.g. `saga_parked_events_total`.
    pub async fn metric(&self, service_url: &str, name: &str) -> TestResult<u64> {
        let (_, metrics) = self.get_text(&format!("{service_url}/metrics")).await?;
        let line = metrics
            .lines()
            .find(|line| line.starts_with(&format!("{name}{{")))
            .ok_or_else(|| format!("no {name} on {service_url}/metrics"))?;
        let value = line.rsplit(' ').next().unwrap_or_default();
        Ok(value.parse()?)
    }

    /// Creates a product and waits until orders-svc's catalog replica has it.
    pub async fn product(&self, price_cents: i64, stock: i64) -> TestResult<Uuid> {
        let sku = format!("E2E-{}", Uuid::new_v4().simple());
        let body =
            json!({"sku": sku, "name": "E2E widget", "price_cents": price_cents, "stock": stock});
        let created = self
            .post(format!("{}/products", self.inventory), body, 201)
            .await?;
        let id: Uuid = serde_json::from_value(created["id"].clone())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let response = self
                .client
                .get(format!("{}/catalog/{id}", self.orders))
                .send()
                .await?;
            if response.status().is_success() {
                return Ok(id);
            }
            ensure!(
                Instant::now() < deadline,
                "product {id} never reached the catalog replica"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn customer(&self, balance_cents: i64) -> TestResult<Uuid> {
        let customer = Uuid::new_v4();
        let body = json!({"customer_id": customer, "balance_cents": balance_cents});
        self.post(format!("{}/accounts", self.payments), body, 201)
            .await?;
        Ok(customer)
    }

    pub async fn place_order(
        &self,
        customer: Uuid,
        items: &[(Uuid, u32)],
    ) -> TestResult<PlacedOrder> {
        self.place_order_with_headers(customer, items, &[]).await
    }

    /// [`Api::place_order`] with extra request headers, e.g. a caller's `traceparent`.
    pub async fn place_order_with_headers(
        &self,
        customer: Uuid,
        items: &[(Uuid, u32)],
        headers: &[(&str, &str)],
    ) -> TestResult<PlacedOrder> {
        let items: Vec<Value> = items
            .iter()
            .map(|(p, q)| json!({"product_id": p, "quantity": q}))
            .collect();
        let body = self
            .post_with_headers(
                format!("{}/orders", self.orders),
                json!({"customer_id": customer, "items": items}),
                headers,
                202,
            )
            .await?;
        ensure_eq!(
            body["status"],
            json!("PENDING_PAYMENT"),
            "a new order's status"
        );
        Ok(PlacedOrder {
            id: serde_json::from_value(body["id"].clone())?,
            saga_id: serde_json::from_value(body["saga_id"].clone())?,
            total_cents: body["total_cents"].as_i64().unwrap_or(-1),
        })
    }

    /// Seeds a product at `price_cents` (10 in stock) and a customer with 10,000 cents,
    /// places an order of 2, and checks that its saga confirms it within 30 s.
    pub async fn confirmed_order(&self, price_cents: i64) -> TestResult<PlacedOrder> {
        let product = self.product(price_cents, 10).await?;
        let customer = self.customer(10_000).await?;
        let order = self.place_order(customer, &[(product, 2)]).await?;
        let done = self
            .wait_terminal(order.id, Duration::from_secs(30))
            .await?;
        ensure_eq!(done["status"], "CONFIRMED", "order {}: {done}", order.id);
        Ok(order)
    }

    pub async fn order(&self, id: Uuid) -> TestResult<Value> {
        self.get(format!("{}/orders/{id}", self.orders)).await
    }

    /// Polls the order until its status is terminal, and returns it.
    pub async fn wait_terminal(&self, id: Uuid, within: Duration) -> TestResult<Value> {
        let deadline = Instant::now() + within;
        loop {
            let order = self.order(id).await?;
            if order["status"] != "PENDING_PAYMENT" {
                return Ok(order);
            }
            ensure!(
                Instant::now() < deadline,
                "order {id} still PENDING_PAYMENT after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn balance(&self, customer: Uuid) -> TestResult<i64> {
        let account = self
            .get(format!("{}/accounts/{customer}", self.payments))
            .await?;
        account["balance_cents"]
            .as_i64()
            .ok_or_else(|| "balance_cents missing".into())
    }

    /// (available, reserved) of a product.
    pub async fn stock(&self, product: Uuid) -> TestResult<(i64, i64)> {
        let product = self
            .get(format!("{}/products/{product}", self.inventory))
            .await?;
        Ok((
            product["available"].as_i64().unwrap_or(-1),
            product["reserved"].as_i64().unwrap_or(-1),
        ))
    }
}
