//! The end-to-end harness. It starts the three real service binaries on fresh databases and
//! on Kafka topics of their own (`e2e-<run>.` prefix), talks to them over HTTP like a user,
//! and reads every saga event back from Kafka.
//!
//! - [`Stack`]: the running services, started from `SAGA_BIN_DIR` (default `target/debug`).
//! - [`Api`]: the HTTP calls a user makes.
//! - [`EventLog`]: every record on the saga topics, by key, read as they arrive.
//! - [`Suite`]: runs named scenarios and prints one line each and a summary.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use shared_events::{Envelope, topics};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use uuid::Uuid;

pub type TestError = Box<dyn std::error::Error + Send + Sync>;
pub type TestResult<T = ()> = Result<T, TestError>;

/// Fails the scenario with a message unless `condition` holds.
#[macro_export]
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+).into());
        }
    };
}

/// Fails the scenario unless the two values are equal, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($message:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(format!("{}: expected {:?}, got {:?}", format!($($message)+), right, left).into());
        }
    }};
}

/// One service of the system, as the harness runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceName {
    Orders,
    Payments,
    Inventory,
}

impl ServiceName {
    pub const ALL: [ServiceName; 3] = [
        ServiceName::Inventory,
        ServiceName::Payments,
        ServiceName::Orders,
    ];

    pub fn binary(self) -> &'static str {
        match self {
            ServiceName::Orders => "orders-svc",
            ServiceName::Payments => "payments-svc",
            ServiceName::Inventory => "inventory-svc",
        }
    }

    fn database(self) -> (&'static str, &'static str) {
        match self {
            ServiceName::Orders => ("orders_svc", "orders"),
            ServiceName::Payments => ("payments_svc", "payments"),
            ServiceName::Inventory => ("inventory_svc", "inventory"),
        }
    }

    /// The logical topics this service's consumer group reads.
    pub fn consumed_topics(self) -> &'static [&'static str] {
        match self {
            ServiceName::Orders => &[
                topics::PAYMENTS_EVENTS,
                topics::INVENTORY_EVENTS,
                topics::INVENTORY_CATALOG,
            ],
            ServiceName::Payments => &[topics::ORDERS_EVENTS, topics::INVENTORY_EVENTS],
            ServiceName::Inventory => &[topics::PAYMENTS_EVENTS, topics::ORDERS_EVENTS],
        }
    }
}

struct RunningService {
    name: ServiceName,
    port: u16,
    database_url: String,
    /// `None` while the harness has it stopped.
    child: Option<Child>,
}

/// The three services, running on this run's databases and topics.
pub struct Stack {
    pub prefix: String,
    services: Vec<RunningService>,
    pub log_dir: PathBuf,
    /// Environment every start of a service gets, e.g. a short saga deadline.
    base_env: Vec<(ServiceName, String, String)>,
}

impl Stack {
    /// Creates this run's topics and databases and starts the services, waiting for `/health`.
    pub async fn start() -> TestResult<Stack> {
        Self::start_with(Vec::new()).await
    }

    /// Like [`Stack::start`], with extra environment for some services on every start.
    pub async fn start_with(base_env: Vec<(ServiceName, &str, &str)>) -> TestResult<Stack> {
        let run = Uuid::new_v4().simple().to_string();
        let prefix = format!("e2e-{}.", &run[..8]);
        saga_runtime::testing::create_topics(&prefix, &topics::ALL).await?;
        saga_runtime::testing::create_topics(&prefix, &topics::DEAD_LETTER).await?;
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/e2e-logs")
            .join(&run[..8]);
        std::fs::create_dir_all(&log_dir)?;
        let base_env = base_env
            .into_iter()
            .map(|(n, k, v)| (n, k.to_owned(), v.to_owned()))
            .collect();
        let mut stack = Stack {
            prefix,
            services: Vec::new(),
            log_dir,
            base_env,
        };
        for name in ServiceName::ALL {
            let (role, home) = name.database();
            let database_url = saga_runtime::testing::fresh_database(role, home, "e2e").await?;
            let port = free_port()?;
            let child = Some(stack.spawn(name, port, &database_url, &[])?);
            stack.services.push(RunningService {
                name,
                port,
                database_url,
                child,
            });
        }
        for name in ServiceName::ALL {
            stack.wait_healthy(name, Duration::from_secs(60)).await?;
        }
        Ok(stack)
    }

    fn spawn(
        &self,
        name: ServiceName,
        port: u16,
        database_url: &str,
        extra_env: &[(&str, &str)],
    ) -> TestResult<Child> {
        let bin_dir = std::env::var("SAGA_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
        let binary = bin_dir.join(name.binary());
        ensure!(
            binary.exists(),
            "{} is missing: build the services first (`cargo build --workspace --bins`; deploy/stack test does)",
            binary.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{}.log", name.binary())))?;
        let mut command = Command::new(binary);
        for (service, key, value) in &self.base_env {
            if *service == name {
                command.env(key, value);
            }
        }
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let child = command
            .env("DATABASE_URL", database_url)
            .env("HTTP_PORT", port.to_string())
            .env("KAFKA_BROKERS", saga_runtime::testing::kafka_brokers())
            .env("KAFKA_TOPIC_PREFIX", &self.prefix)
            .env("KAFKA_GROUP_ID", self.group_id(name))
            // Dynamic membership with a short session: a killed member's partitions move on
            // within 6 s (the broker's minimum). Static membership was tried and rejected: a
            // broker restart fences the static member fatally.
            .env("KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env(
                "RUST_LOG",
                std::env::var("E2E_SERVICE_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(child)
    }

    pub fn group_id(&self, name: ServiceName) -> String {
        format!("{}{}", self.prefix, name.binary())
    }

    pub fn url(&self, name: ServiceName) -> String {
        let port = self
            .services
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.port);
        format!("http://127.0.0.1:{port}")
    }

    pub fn database_url(&self, name: ServiceName) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.database_url.as_str())
    }

    pub fn topic(&self, logical: &str) -> String {
        format!("{}{}", self.prefix, logical)
    }

    fn service_mut(&mut self, name: ServiceName) -> TestResult<&mut RunningService> {
        self.services
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("{} is not part of the stack", name.binary()).into())
    }

    /// SIGKILLs the service and waits for it to be gone.
    pub async fn kill(&mut self, name: ServiceName) -> TestResult {
        if let Some(mut child) = self.service_mut(name)?.child.take() {
            let _ = child.kill().await;
        }
        Ok(())
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`...) to the service.
    pub async fn signal(&mut self, name: ServiceName, signal: &str) -> TestResult {
        let pid = self
            .service_mut(name)?
            .child
            .as_ref()
            .and_then(Child::id)
            .ok_or("service is not running")?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await?;
        ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// SIGTERMs the service and returns how long it took to exit cleanly.
    pub async fn terminate(&mut self, name: ServiceName, within: Duration) -> TestResult<Duration> {
        let started = Instant::now();
        self.signal(name, "TERM").await?;
        let mut child = self
            .service_mut(name)?
            .child
            .take()
            .ok_or("service is not running")?;
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => {
                let status = status?;
                ensure!(
                    status.success(),
                    "{} exited with {status} after SIGTERM",
                    name.binary()
                );
                Ok(started.elapsed())
            }
            Err(_) => {
                let _ = child.kill().await;
                Err(format!(
                    "{} did not exit within {within:?} of SIGTERM",
                    name.binary()
                )
                .into())
            }
        }
    }

    /// Starts the service (killing it first if it runs) with `faults` in its environment,
    /// without waiting for it to be healthy.
    pub async fn launch(&mut self, name: ServiceName, faults: &[(&str, &str)]) -> TestResult {
        self.kill(name).await?;
        let (port, url) = {
            let service = self.service_mut(name)?;
            (service.port, service.database_url.clone())
        };
        let child = self.spawn(name, port, &url, faults)?;
        self.service_mut(name)?.child = Some(child);
        Ok(())
    }

    /// Restarts the service with `faults` in its environment and waits for `/health`.
    pub async fn restart(&mut self, name: ServiceName, faults: &[(&str, &str)]) -> TestResult {
        self.launch(name, faults).await?;
        self.wait_healthy(name, Duration::from_secs(60)).await
    }

    /// Waits for the service to exit by itself (an injected crash); returns whether it did.
    pub async fn wait_exit(&mut self, name: ServiceName, within: Duration) -> TestResult<bool> {
        let service = self.service_mut(name)?;
        let Some(child) = service.child.as_mut() else {
            return Ok(true);
        };
        match tokio::time::timeout(within, child.wait()).await {
            Ok(_) => {
                service.child = None;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Runs `deploy/stack` with `args`, the project's own tool for PostgreSQL and Kafka.
    pub async fn stack_command(&self, args: &[&str]) -> TestResult {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/stack");
        let output = Command::new(script).args(args).output().await?;
        ensure!(
            output.status.success(),
            "deploy/stack {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Puts everything back after a failed scenario: PostgreSQL and Kafka started, every
    /// service running without faults and not paused.
    pub async fn heal(&mut self) -> TestResult {
        self.stack_command(&["start", "postgres"]).await?;
        self.stack_command(&["start", "kafka"]).await?;
        for name in ServiceName::ALL {
            let _ = self.signal(name, "CONT").await;
            self.restart(name, &[]).await?;
        }
        Ok(())
    }

    /// Rows waiting in each service's outbox.
    pub async fn outbox_backlogs(&self) -> TestResult<Vec<(ServiceName, i64)>> {
        let mut backlogs = Vec::new();
        for service in &self.services {
            let db = sea_orm::Database::connect(service.database_url.as_str()).await?;
            let (backlog, _) = saga_runtime::outbox::backlog_and_age(&db).await?;
            db.close().await?;
            backlogs.push((service.name, backlog));
        }
        Ok(backlogs)
    }

    /// A connection to one service's database, for checks users cannot make over HTTP.
    pub async fn database(&self, name: ServiceName) -> TestResult<sea_orm::DatabaseConnection> {
        let url = self.database_url(name).ok_or("unknown service")?;
        Ok(sea_orm::Database::connect(url).await?)
    }

    pub async fn wait_healthy(&self, name: ServiceName, within: Duration) -> TestResult {
        let client = reqwest::Client::new();
        let url = format!("{}/health", self.url(name));
        let deadline = Instant::now() + within;
        loop {
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{} not healthy within {within:?}; see {}",
                name.binary(),
                self.log_dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every consumer group has committed offsets up to the end of each partition
    /// it reads: everything published so far has been applied.
    pub async fn wait_until_consumed(&self, within: Duration) -> TestResult {
        self.wait_until_consumed_by(&ServiceName::ALL, within).await
    }

    /// Like [`Stack::wait_until_consumed`], for some services' consumer groups only.
    pub async fn wait_until_consumed_by(
        &self,
        services: &[ServiceName],
        within: Duration,
    ) -> TestResult {
        let deadline = Instant::now() + within;
        for &name in services {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", saga_runtime::testing::kafka_brokers())
                .set("group.id", self.group_id(name))
                .set("enable.auto.commit", "false")
                .create()?;
            loop {
                let behind = self.partitions_behind(&consumer, name)?;
                if behind.is_empty() {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "{} has not consumed everything within {within:?}: {behind:?}",
                    name.binary()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    fn partitions_behind(
        &self,
        consumer: &BaseConsumer,
        name: ServiceName,
    ) -> TestResult<Vec<String>> {
        let timeout = Duration::from_secs(5);
        let mut wanted = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for logical in name.consumed_topics() {
            let topic = self.topic(logical);
            for partition in 0..6 {
                let (_, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
                if high > 0 {
                    wanted.add_partition(&topic, partition);
                    ends.insert((topic.clone(), partition), high);
                }
            }
        }
        if ends.is_empty() {
            return Ok(Vec::new());
        }
        let committed = consumer.committed_offsets(wanted, timeout)?;
        let mut behind = Vec::new();
        for element in committed.elements() {
            let end = ends
                .get(&(element.topic().to_owned(), element.partition()))
                .copied()
                .unwrap_or(0);
            let at = match element.offset() {
                Offset::Offset(offset) => offset,
                _ => 0,
            };
            if at < end {
                behind.push(format!(
                    "{}[{}] at {at} of {end}",
                    element.topic(),
                    element.partition()
                ));
            }
        }
        Ok(behind)
    }

    /// Stops every service with SIGTERM and waits for each to exit.
    pub async fn stop(mut self) -> TestResult {
        for service in &mut self.services {
            if let Some(pid) = service.child.as_ref().and_then(Child::id) {
                // A paused service would never act on SIGTERM.
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(pid.to_string())
                    .status()
                    .await;
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
            }
        }
        for service in &mut self.services {
            let Some(child) = service.child.as_mut() else {
                continue;
            };
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
                return Err(format!(
                    "{} did not stop within 30s of SIGTERM",
                    service.name.binary()
                )
                .into());
            }
        }
        Ok(())
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

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

impl Api {
    pub fn new(stack: &Stack) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            orders: stack.url(ServiceName::Orders),
            payments: stack.url(ServiceName::Payments),
            inventory: stack.url(ServiceName::Inventory),
        }
    }

    pub fn orders_url(&self) -> &str {
        &self.orders
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    async fn post(&self, url: String, body: Value, expected: u16) -> TestResult<Value> {
        let response = self.client.post(&url).json(&body).send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        ensure!(
            status == expected,
            "POST {url} answered {status}, expected {expected}: {text}"
        );
        Ok(serde_json::from_str(&text)?)
    }

    pub async fn get(&self, url: String) -> TestResult<Value> {
        let response = self.client.get(&url).send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        ensure!(status == 200, "GET {url} answered {status}: {text}");
        Ok(serde_json::from_str(&text)?)
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
        let items: Vec<Value> = items
            .iter()
            .map(|(p, q)| json!({"product_id": p, "quantity": q}))
            .collect();
        let body = self
            .post(
                format!("{}/orders", self.orders),
                json!({"customer_id": customer, "items": items}),
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

/// A record read back from a saga topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// `None` for a value that is not a valid event.
    pub envelope: Option<Envelope>,
}

/// Every record on this run's saga topics, by key, collected by a background consumer.
#[derive(Clone)]
pub struct EventLog {
    records: Arc<Mutex<HashMap<String, Vec<Record>>>>,
    arrived: Arc<Notify>,
}

impl EventLog {
    /// Starts reading the saga topics from the beginning.
    pub fn start(stack: &Stack) -> TestResult<EventLog> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", saga_runtime::testing::kafka_brokers())
            .set("group.id", format!("{}event-log", stack.prefix))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        let topics: Vec<String> = [
            topics::ORDERS_EVENTS,
            topics::PAYMENTS_EVENTS,
            topics::INVENTORY_EVENTS,
        ]
        .iter()
        .map(|t| stack.topic(t))
        .collect();
        consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
        let log = EventLog {
            records: Arc::default(),
            arrived: Arc::default(),
        };
        let sink = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok(message) = consumer.recv().await else {
                    continue;
                };
                let key = message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                let payload = message.payload().unwrap_or_default().to_vec();
                let headers = message
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let record = Record {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    key: key.clone(),
                    envelope: Envelope::decode(&payload).ok(),
                    payload,
                    headers,
                };
                if let Ok(mut records) = sink.records.lock() {
                    records.entry(key).or_default().push(record);
                }
                sink.arrived.notify_waiters();
            }
        });
        Ok(log)
    }

    pub fn records(&self, key: &str) -> Vec<Record> {
        self.records
            .lock()
            .map(|r| r.get(key).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The saga's events in the order they happened (event time, then ID).
    pub fn events(&self, saga_id: Uuid) -> Vec<Envelope> {
        let mut events: Vec<Envelope> = self
            .records(&saga_id.to_string())
            .into_iter()
            .filter_map(|r| r.envelope)
            .collect();
        events.sort_by_key(|e| (e.time, e.id));
        events
    }

    pub fn event_types(&self, saga_id: Uuid) -> Vec<&'static str> {
        self.events(saga_id)
            .iter()
            .map(Envelope::event_type)
            .collect()
    }

    /// Waits until the saga has at least `count` events, then a little longer so that an
    /// unexpected extra event would show up too, and returns the event types.
    pub async fn wait_for(
        &self,
        saga_id: Uuid,
        count: usize,
        within: Duration,
    ) -> TestResult<Vec<&'static str>> {
        let deadline = Instant::now() + within;
        while self.events(saga_id).len() < count {
            let remaining = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !remaining.is_zero(),
                "saga {saga_id} has events {:?} after {within:?}, expected {count}",
                self.event_types(saga_id)
            );
            let _ = tokio::time::timeout(
                remaining.min(Duration::from_millis(100)),
                self.arrived.notified(),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(self.event_types(saga_id))
    }
}

/// Produces raw records to this run's topics, as a misbehaving or replaying producer would.
pub struct RawProducer {
    producer: FutureProducer,
}

impl RawProducer {
    pub fn new() -> TestResult<RawProducer> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", saga_runtime::testing::kafka_brokers())
            .set("message.timeout.ms", "10000")
            .create()?;
        Ok(RawProducer { producer })
    }

    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &str,
        payload: &[u8],
    ) -> TestResult {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
        Ok(())
    }

    /// Publishes `record` again, byte for byte, to its topic and key.
    pub async fn republish(&self, record: &Record) -> TestResult {
        self.send(&record.topic, None, &record.key, &record.payload)
            .await
    }
}

/// The whole `main` of a suite binary: a runtime, the suite, and an exit code that fails
/// the build when a scenario failed or the stack could not be set up.
pub fn main<F, Fut>(name: &str, run: F) -> std::process::ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = TestResult<bool>>,
{
    use std::process::ExitCode;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start a tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("{name}: the stack could not be set up: {error}");
            println!("{name}: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

type ScenarioFuture<'a> = Pin<Box<dyn Future<Output = TestResult> + Send + 'a>>;

/// Runs scenarios one after another and reports like a test runner.
pub struct Suite {
    name: &'static str,
    filter: Option<String>,
    passed: usize,
    failed: Vec<String>,
}

impl Suite {
    /// Takes an optional name filter from the command line (flags are ignored).
    pub fn from_args(name: &'static str) -> Suite {
        let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
        Suite {
            name,
            filter,
            passed: 0,
            failed: Vec::new(),
        }
    }

    /// Runs the scenario unless filtered out; returns false if it ran and failed.
    pub async fn run<'a>(
        &mut self,
        name: &str,
        scenario: impl FnOnce() -> ScenarioFuture<'a>,
    ) -> bool {
        if self.filter.as_deref().is_some_and(|f| !name.contains(f)) {
            return true;
        }
        let started = Instant::now();
        match scenario().await {
            Ok(()) => {
                self.passed += 1;
                println!(
                    "test {name} ... ok ({:.2}s)",
                    started.elapsed().as_secs_f64()
                );
                true
            }
            Err(error) => {
                println!(
                    "test {name} ... FAILED ({:.2}s)\n    {error}",
                    started.elapsed().as_secs_f64()
                );
                self.failed.push(name.to_owned());
                false
            }
        }
    }

    /// Prints the summary line and returns whether everything passed.
    pub fn finish(&self) -> bool {
        for name in &self.failed {
            println!("failed: {name}");
        }
        println!(
            "{}: {} passed, {} failed",
            self.name,
            self.passed,
            self.failed.len()
        );
        self.failed.is_empty()
    }
}

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

    /// Follows an order placed outside [`Ledger::place`].
    pub fn track(&mut self, placed: PlacedOrder, customer: Uuid, items: Vec<(Uuid, u32)>) {
        self.orders.push(TrackedOrder {
            placed,
            customer,
            items,
        });
    }

    /// Places the orders concurrently and follows every one that was accepted; returns how
    /// many were refused (e.g. 503 while the database is down).
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
        refused
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
        loop {
            let drained = stack.outbox_backlogs().await?.iter().all(|(_, n)| *n == 0);
            let consumed = stack
                .wait_until_consumed(Duration::from_millis(1))
                .await
                .is_ok();
            if drained && consumed {
                // One more look: a consumer that just caught up may have written new outbox rows.
                if stack.outbox_backlogs().await?.iter().all(|(_, n)| *n == 0) {
                    break;
                }
            }
            if Instant::now() >= deadline {
                violations.push(format!(
                    "every outbox drains and every consumer catches up: {:?}",
                    stack.outbox_backlogs().await?
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
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
            let quantity = u32::try_from(row.try_get::<i32>("", "quantity")?).unwrap_or(0);
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

/// Reads `topic` from the beginning until it has been quiet for a second.
pub async fn read_topic(topic: &str, within: Duration) -> TestResult<Vec<Record>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", saga_runtime::testing::kafka_brokers())
        .set("group.id", format!("reader-{}", Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + within;
    let mut records = Vec::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(message)) => records.push(Record {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers: message
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                envelope: None,
            }),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) if !records.is_empty() => break,
            Err(_) => {}
        }
    }
    Ok(records)
}

/// A small deterministic generator, so a randomised run can be replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}
