//! Process and stack control: the three service binaries on this run's databases and topics,
//! started, signalled, restarted and stopped like an operator would, plus `deploy/stack` for
//! PostgreSQL and Kafka themselves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shared_events::topics;
use tokio::process::{Child, Command};

use crate::TestResult;

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

/// One instance of a service: instance 1 is the service itself when it runs alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub service: ServiceName,
    /// Counts from 1.
    pub index: u16,
}

impl From<ServiceName> for Instance {
    fn from(service: ServiceName) -> Self {
        service.instance(1)
    }
}

impl ServiceName {
    /// Instance `index` (from 1) of this service.
    pub fn instance(self, index: u16) -> Instance {
        Instance {
            service: self,
            index,
        }
    }
}

impl std::fmt::Display for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.service.binary(), self.index)
    }
}

/// Where the services' databases live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgLayout {
    /// One server for all three, the one `deploy/stack test` starts for the whole suite.
    Shared,
    /// A server per service, as `STACK_PG_PER_SERVICE=1 deploy/stack` runs them: orders on
    /// `base_port`, payments on `base_port + 1`, inventory on `base_port + 2`. The stack starts
    /// them itself, on ports and in a state folder of their own (`e2e-pg-per-service` in
    /// `deploy/stack`'s), so they run beside whatever clusters `deploy/stack` runs for the
    /// rest of the suite, in either layout, and stops them when it stops.
    PerService { base_port: u16 },
}

impl PgLayout {
    /// The layout of `deploy/stack`'s clusters per service, on the ports that
    /// `TEST_PG_PER_SERVICE_PORT` starts at (default 5532).
    pub fn per_service() -> PgLayout {
        PgLayout::PerService {
            base_port: std::env::var("TEST_PG_PER_SERVICE_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(5532),
        }
    }

    /// The port of the server that holds `name`'s database.
    fn port_of(self, name: ServiceName) -> u16 {
        match self {
            PgLayout::Shared => saga_runtime::testing::pg_port_of(name.database().1),
            PgLayout::PerService { base_port } => {
                base_port
                    + match name {
                        ServiceName::Orders => 0,
                        ServiceName::Payments => 1,
                        ServiceName::Inventory => 2,
                    }
            }
        }
    }

    /// What `deploy/stack` needs to act on these servers.
    fn stack_env(self) -> Vec<(&'static str, String)> {
        match self {
            PgLayout::Shared => Vec::new(),
            PgLayout::PerService { base_port } => {
                let state = std::env::var("STACK_STATE_DIR").map_or_else(
                    |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/.state"),
                    PathBuf::from,
                );
                vec![
                    ("STACK_PG_PER_SERVICE", "1".to_owned()),
                    ("PG_PORT", base_port.to_string()),
                    (
                        "STACK_STATE_DIR",
                        state.join("e2e-pg-per-service").display().to_string(),
                    ),
                ]
            }
        }
    }

    /// The `deploy/stack` component of `name`'s database server.
    pub fn component_of(self, name: ServiceName) -> String {
        match self {
            PgLayout::Shared => "postgres".to_owned(),
            PgLayout::PerService { .. } => format!("postgres/{}", name.database().1),
        }
    }
}

struct RunningService {
    name: ServiceName,
    index: u16,
    port: u16,
    database_url: String,
    /// `None` while the harness has it stopped.
    child: Option<Child>,
}

/// The three services, running on this run's databases and topics.
pub struct Stack {
    pub prefix: String,
    /// Every instance of every service, instance 1 of each first.
    services: Vec<RunningService>,
    /// How many instances of each service run.
    pub instances: u16,
    pub log_dir: PathBuf,
    /// Environment every start of a service gets, e.g. a short saga deadline.
    base_env: Vec<(ServiceName, String, String)>,
    pub pg: PgLayout,
}

impl Stack {
    /// Creates this run's topics and databases and starts the services, waiting for `/health`.
    pub async fn start() -> TestResult<Stack> {
        Self::start_with(Vec::new()).await
    }

    /// Like [`Stack::start`], with extra environment for some services on every start.
    pub async fn start_with(base_env: Vec<(ServiceName, &str, &str)>) -> TestResult<Stack> {
        Self::start_scaled(base_env, 1).await
    }

    /// Like [`Stack::start_with`], with `instances` instances of each service on one database
    /// per service, as `deploy/stack scale` runs them.
    pub async fn start_scaled(
        base_env: Vec<(ServiceName, &str, &str)>,
        instances: u16,
    ) -> TestResult<Stack> {
        Self::start_on(base_env, instances, PgLayout::Shared).await
    }

    /// Like [`Stack::start_scaled`], with the databases laid out on `pg`'s servers, which it
    /// starts first when they are its own.
    pub async fn start_on(
        base_env: Vec<(ServiceName, &str, &str)>,
        instances: u16,
        pg: PgLayout,
    ) -> TestResult<Stack> {
        let prefix = every_topic_behind_a_fresh_prefix().await?;
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/e2e-logs")
            .join(run_of(&prefix));
        std::fs::create_dir_all(&log_dir)?;
        let base_env = base_env
            .into_iter()
            .map(|(n, k, v)| (n, k.to_owned(), v.to_owned()))
            .collect();
        let instances = instances.max(1);
        let mut stack = Stack {
            prefix,
            services: Vec::new(),
            instances,
            log_dir,
            base_env,
            pg,
        };
        if pg != PgLayout::Shared {
            stack.stack_command(&["start", "postgres"]).await?;
        }
        let mut urls = Vec::new();
        for name in ServiceName::ALL {
            let (role, home) = name.database();
            let port = pg.port_of(name);
            if pg != PgLayout::Shared {
                // These servers are this stack's alone: what earlier runs left is garbage.
                saga_runtime::testing::drop_stale_databases_on(port, home, "e2e").await?;
            }
            urls.push((
                name,
                saga_runtime::testing::fresh_database_on(port, role, home, "e2e").await?,
            ));
        }
        // All instances start together: the migrations' lock must let every one come up.
        for index in 1..=instances {
            for (name, database_url) in &urls {
                let instance = name.instance(index);
                let port = free_port()?;
                let child = Some(stack.spawn(instance, port, database_url, &[])?);
                stack.services.push(RunningService {
                    name: *name,
                    index,
                    port,
                    database_url: database_url.clone(),
                    child,
                });
            }
        }
        for instance in stack.all_instances() {
            stack
                .wait_healthy(instance, Duration::from_secs(60))
                .await?;
        }
        Ok(stack)
    }

    /// Every instance of every service.
    pub fn all_instances(&self) -> Vec<Instance> {
        self.services
            .iter()
            .map(|s| s.name.instance(s.index))
            .collect()
    }

    fn spawn(
        &self,
        instance: Instance,
        port: u16,
        database_url: &str,
        extra_env: &[(&str, &str)],
    ) -> TestResult<Child> {
        let name = instance.service;
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
            .open(self.log_dir.join(match instance.index {
                1 => format!("{}.log", name.binary()),
                index => format!("{}-{index}.log", name.binary()),
            }))?;
        let mut command = Command::new(binary);
        // A default a scenario may override through its environment (the trace suite runs
        // the services at `warn`).
        command.env(
            "RUST_LOG",
            std::env::var("E2E_SERVICE_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
        );
        // orders-svc's explorer page asks the other services for their parked events.
        if name == ServiceName::Orders {
            for (peer, variable) in [
                (ServiceName::Payments, "PAYMENTS_URL"),
                (ServiceName::Inventory, "INVENTORY_URL"),
            ] {
                if let Some(running) = self.services.iter().find(|s| s.name == peer) {
                    command.env(variable, format!("http://127.0.0.1:{}", running.port));
                }
            }
        }
        // The services check the tests' tokens (`saga_runtime::testing::token`).
        command.env("AUTH_JWT_SECRET", saga_runtime::testing::AUTH_SECRET);
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
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(child)
    }

    pub fn group_id(&self, name: ServiceName) -> String {
        format!("{}{}", self.prefix, name.binary())
    }

    /// The base URL of a service (its instance 1) or of one instance.
    pub fn url(&self, instance: impl Into<Instance>) -> String {
        let instance = instance.into();
        let port = self
            .services
            .iter()
            .find(|s| s.name == instance.service && s.index == instance.index)
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

    fn service_mut(&mut self, instance: impl Into<Instance>) -> TestResult<&mut RunningService> {
        let instance = instance.into();
        self.services
            .iter_mut()
            .find(|s| s.name == instance.service && s.index == instance.index)
            .ok_or_else(|| format!("{instance} is not part of the stack").into())
    }

    /// SIGKILLs the service (its instance 1) or one instance and waits for it to be gone.
    pub async fn kill(&mut self, name: impl Into<Instance>) -> TestResult {
        if let Some(mut child) = self.service_mut(name)?.child.take() {
            let _ = child.kill().await;
        }
        Ok(())
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`...) to the service.
    pub async fn signal(&mut self, name: impl Into<Instance>, signal: &str) -> TestResult {
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
    pub async fn terminate(
        &mut self,
        name: impl Into<Instance>,
        within: Duration,
    ) -> TestResult<Duration> {
        let name = name.into();
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
                    "{name} exited with {status} after SIGTERM"
                );
                Ok(started.elapsed())
            }
            Err(_) => {
                let _ = child.kill().await;
                Err(format!("{name} did not exit within {within:?} of SIGTERM").into())
            }
        }
    }

    /// Starts the service (killing it first if it runs) with `faults` in its environment,
    /// without waiting for it to be healthy.
    pub async fn launch(
        &mut self,
        name: impl Into<Instance>,
        faults: &[(&str, &str)],
    ) -> TestResult {
        let name = name.into();
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
    pub async fn restart(
        &mut self,
        name: impl Into<Instance>,
        faults: &[(&str, &str)],
    ) -> TestResult {
        let name = name.into();
        self.launch(name, faults).await?;
        self.wait_healthy(name, Duration::from_secs(60)).await
    }

    /// Waits for the service to exit by itself (an injected crash); returns whether it did.
    pub async fn wait_exit(
        &mut self,
        name: impl Into<Instance>,
        within: Duration,
    ) -> TestResult<bool> {
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

    /// Runs `deploy/stack` with `args`, the project's own tool for PostgreSQL and Kafka. A
    /// command on `postgres` acts on this stack's database servers.
    pub async fn stack_command(&self, args: &[&str]) -> TestResult {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/stack");
        let on_postgres = args.iter().any(|arg| arg.starts_with("postgres"));
        let output = Command::new(script)
            .args(args)
            .envs(if on_postgres {
                self.pg.stack_env()
            } else {
                Vec::new()
            })
            .output()
            .await?;
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
        for instance in self.all_instances() {
            let _ = self.signal(instance, "CONT").await;
            self.restart(instance, &[]).await?;
        }
        Ok(())
    }

    /// Rows waiting in each service's outbox.
    pub async fn outbox_backlogs(&self) -> TestResult<Vec<(ServiceName, i64)>> {
        let mut backlogs = Vec::new();
        // One database per service, shared by its instances.
        for service in self.services.iter().filter(|s| s.index == 1) {
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

    pub async fn wait_healthy(&self, name: impl Into<Instance>, within: Duration) -> TestResult {
        let name = name.into();
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
                "{name} not healthy within {within:?}; see {}",
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
            for partition in 0..topics::PARTITIONS {
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

    /// Waits until every outbox is empty and every consumer group has caught up, twice in a
    /// row: a consumer that just caught up may have written new outbox rows.
    pub async fn wait_until_quiet(&self, within: Duration) -> TestResult {
        let deadline = Instant::now() + within;
        loop {
            let drained = self.outbox_backlogs().await?.iter().all(|(_, n)| *n == 0);
            let consumed = self
                .wait_until_consumed(Duration::from_millis(1))
                .await
                .is_ok();
            if drained && consumed && self.outbox_backlogs().await?.iter().all(|(_, n)| *n == 0) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "every outbox drains and every consumer catches up within {within:?}: {:?}",
                self.outbox_backlogs().await?
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every service with SIGTERM and waits for each to exit, then the database servers
    /// when they are this stack's own.
    pub async fn stop(mut self) -> TestResult {
        self.stop_services().await?;
        if self.pg != PgLayout::Shared {
            self.stack_command(&["stop", "postgres"]).await?;
        }
        Ok(())
    }

    async fn stop_services(&mut self) -> TestResult {
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
                    service.name.instance(service.index)
                )
                .into());
            }
        }
        Ok(())
    }
}

/// Every saga topic and dead-letter topic behind a prefix of their own, `e2e-<run>.`: what a
/// stack of the services needs. Returns the prefix.
pub async fn every_topic_behind_a_fresh_prefix() -> TestResult<String> {
    let all: Vec<&str> = topics::ALL
        .iter()
        .chain(&topics::DEAD_LETTER)
        .copied()
        .collect();
    Ok(saga_runtime::testing::fresh_topics("e2e", &all).await?)
}

/// The run ID in a prefix of [`every_topic_behind_a_fresh_prefix`], which names the run's
/// log folder.
pub fn run_of(prefix: &str) -> &str {
    prefix.trim_start_matches("e2e-").trim_end_matches('.')
}

/// A TCP port nothing listens on now, for a process the tests start.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
