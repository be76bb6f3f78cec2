//! saga-bench: open-loop load against a running stack (`deploy/stack up`), timed from Kafka.
//!
//! Orders are sent at a constant arrival rate, whatever the system does, and each saga is timed
//! from its *intended* send time to the time of its terminal event on Kafka, so queueing in
//! the client or the services cannot hide (no coordinated omission). The bench seeds its own
//! customers and products, so the outcome mix is its own: by default 90% confirmed, 5%
//! declined (a customer with no money) and 5% stock short (a product with no stock).
//!
//! ```text
//! cargo run --release -p e2e-tests --bin saga-bench -- --rate 200 --duration 60s
//! cargo run --release -p e2e-tests --bin saga-bench -- --sweep 50,100,200,400 --duration 30s
//! ```
//!
//! It prints a table and writes the same figures as JSON to `target/bench/<time>.json`, and
//! the sweep as a plot to `target/bench/<time>.svg`. With `--ceilings` it first measures what
//! PostgreSQL (pgbench) and Kafka (`ProducerPerformance`) do alone on this machine, and gives
//! each rate's ratio to them.

mod ceilings;
mod plot;
mod probes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use e2e_tests::{Api, Rng, TestResult};
use hdrhistogram::Histogram;
use probes::CpuSample;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;
use shared_events::{Envelope, topics};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

/// Events that end a saga.
const TERMINAL: [&str; 3] = ["OrderConfirmed", "OrderFailed", "OrderCancelled"];
/// Money and stock that the bench's healthy customers and products never run out of.
const PLENTY: i64 = 1_000_000_000_000;

#[derive(Debug, Parser)]
#[command(
    name = "saga-bench",
    about = "Open-loop load against the running saga stack"
)]
struct Args {
    /// Orders per second, sent at a constant arrival rate.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Rising rates to run one after another instead of `--rate`, e.g. 50,100,200.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
    /// How long each rate is offered: 30s, 10m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// How long the first rate is offered, unmeasured, before the runs: the JVM's compiler,
    /// the caches and the pools settle first, so the first run is not the slowest for that
    /// reason alone. 0s skips it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    warmup: Duration,
    /// How long to wait after the last send for the sagas still running to finish.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain: Duration,
    /// orders-svc's base URL, or a comma-separated list of its instances' URLs: the orders are
    /// sent to them in turn.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8081")]
    orders: Vec<String>,
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    payments: String,
    #[arg(long, default_value = "http://127.0.0.1:8083")]
    inventory: String,
    /// A bearer token with the `admin` scope (it seeds products and accounts, and orders for
    /// every customer): `deploy/stack token` prints one.
    #[arg(long, env = "SAGA_TOKEN", hide_env_values = true)]
    token: String,
    /// Kafka bootstrap servers, to read the sagas' events.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Prepended to every topic name, as the services' `KAFKA_TOPIC_PREFIX`.
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// Connections to each orders-svc instance, and so the orders in flight to it: a send
    /// waits for a free one, as in wrk2, and the wait counts in its latency (which starts at
    /// the send's intended time). A bound keeps a client that falls behind from opening a
    /// connection per order. Raise it when the report's "waiting for a connection" grows.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Customers (with plenty of money) the load is spread over.
    #[arg(long, default_value_t = 200)]
    customers: usize,
    /// Products (with plenty of stock) the load is spread over.
    #[arg(long, default_value_t = 20)]
    products: usize,
    /// Percentage of orders from a customer with no money.
    #[arg(long, default_value_t = 5)]
    declined_percent: u64,
    /// Percentage of orders for a product with no stock.
    #[arg(long, default_value_t = 5)]
    short_percent: u64,
    /// Where the JSON report and the plot go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Measure pgbench and Kafka's ProducerPerformance first, and give the ratio to them.
    #[arg(long)]
    ceilings: bool,
    /// How long each ceiling is measured (pgbench's in three rounds, of which the best counts).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    ceilings_duration: Duration,
    /// A database URL of the stack's PostgreSQL, as a role that may create databases (the
    /// service roles may not: `deploy/stack bench` makes the test role `saga_test`), where
    /// `--ceilings` creates pgbench's scratch database. Each service's database is read as
    /// its own role on the same host.
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://saga_test:saga_test@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// The services' databases, whose commits are counted.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "orders,payments,inventory"
    )]
    databases: Vec<String>,
    /// The port of each of `--databases`, in order, when each has a PostgreSQL server of its
    /// own (`STACK_PG_PER_SERVICE=1`); by default all are on `--database-url`'s.
    #[arg(long, value_delimiter = ',')]
    database_ports: Vec<u16>,
    /// pgbench to run (default: the newest under /usr/lib/postgresql, else PATH's).
    #[arg(long)]
    pgbench: Option<PathBuf>,
    /// Before the run, add this many expired rows (nine days old) to each service's inbox, so
    /// that the retention job has work to do while the sagas run. Each database is reached as
    /// its own role (`<db>_svc`, password the same) on `--database-url`'s host, and its port
    /// or the one `--database-ports` gives it.
    #[arg(long, default_value_t = 0)]
    expired_inbox_rows: u64,
    /// The folder holding Kafka's `kafka-run-class` wrapper.
    #[arg(long, default_value = "deploy/bin")]
    kafka_bin: PathBuf,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 10m or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: the unit must be ms, s or m")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("saga-bench: cannot start a runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("saga-bench: {error}");
            ExitCode::from(2)
        }
    }
}

async fn bench(args: Args) -> TestResult {
    let first_orders = args.orders.first().ok_or("--orders needs a URL")?;
    let api = Api::at(
        first_orders,
        &args.payments,
        &args.inventory,
        args.connections,
        &format!("Bearer {}", args.token),
    );
    // One client per orders-svc instance, all on the same connection pool.
    let apis: Vec<Api> = args.orders.iter().map(|url| api.with_orders(url)).collect();
    eprintln!(
        "seeding {} customers and {} products …",
        args.customers, args.products
    );
    let ceilings = if args.ceilings {
        let at = ceilings::Where {
            database_url: &args.database_url,
            bootstrap: &args.bootstrap,
            pgbench: args.pgbench.as_deref(),
            kafka_bin: &args.kafka_bin,
            duration: args.ceilings_duration,
        };
        Some(ceilings::measure(&at).await?)
    } else {
        None
    };
    let databases =
        probes::ServiceDatabases::new(&args.database_url, &args.databases, &args.database_ports)?;
    let stats = databases.connect().await?;
    if args.expired_inbox_rows > 0 {
        probes::seed_expired_inbox(&databases, args.expired_inbox_rows).await?;
    }
    let world = Seeded::create(&api, &args).await?;
    let events = EventWatch::start(&args.bootstrap, &args.topic_prefix).await?;
    let rates = if args.sweep.is_empty() {
        vec![args.rate]
    } else {
        args.sweep.clone()
    };
    if let Some(&first) = rates.first()
        && !args.warmup.is_zero()
    {
        eprintln!("warming up, not measured:");
        run_rate(&apis, &world, &events, &stats, &args, first, args.warmup).await?;
    }
    let mut reports = Vec::new();
    for rate in rates {
        let mut report =
            run_rate(&apis, &world, &events, &stats, &args, rate, args.duration).await?;
        if let Some(ceilings) = &ceilings {
            report.pgbench_ratio = Some(
                report.completed_per_second * ceilings::BUSINESS_TRANSACTIONS_PER_SAGA
                    / ceilings.pgbench_tps,
            );
        }
        print_report(&report);
        let saturated = report.completed_per_second < 0.9 * report.offered_rate;
        reports.push(report);
        if saturated && !args.sweep.is_empty() {
            eprintln!("saturated at {rate}/s offered: the sweep stops here");
            break;
        }
    }
    print_summary(&reports, ceilings.as_ref());
    write_outputs(&args.out, &reports, ceilings.as_ref())
}

/// The customers and products the bench created, by role.
struct Seeded {
    customers: Vec<Uuid>,
    products: Vec<Uuid>,
    broke_customer: Uuid,
    empty_product: Uuid,
}

impl Seeded {
    async fn create(api: &Api, args: &Args) -> TestResult<Seeded> {
        let mut customers = Vec::with_capacity(args.customers);
        for _ in 0..args.customers.max(1) {
            customers.push(api.customer(PLENTY).await?);
        }
        let mut products = Vec::with_capacity(args.products);
        for _ in 0..args.products.max(1) {
            products.push(api.product(100, PLENTY).await?);
        }
        Ok(Seeded {
            customers,
            products,
            broke_customer: api.customer(0).await?,
            empty_product: api.product(100, 0).await?,
        })
    }

    /// The `i`th order of a run: a customer, one line, and the outcome the mix intends.
    fn order(&self, rng: &mut Rng, args: &Args) -> (Uuid, Uuid) {
        let customer = self.customers[rng.below(self.customers.len() as u64) as usize];
        let product = self.products[rng.below(self.products.len() as u64) as usize];
        let roll = rng.below(100);
        if roll < args.declined_percent {
            (self.broke_customer, product)
        } else if roll < args.declined_percent + args.short_percent {
            (customer, self.empty_product)
        } else {
            (customer, product)
        }
    }
}

/// One event of a saga: when it happened and its type.
/// One event of a saga: its time (set when it was written to the outbox, inside the
/// transaction), its type, and when the relay handed it to the producer (the record's
/// CreateTime, in milliseconds).
type Step = (DateTime<Utc>, &'static str, Option<DateTime<Utc>>);

/// How long the broker may hold the bench's fetch of saga events to fill it.
const WATCH_FETCH_WAIT: Duration = Duration::from_millis(100);

/// Every saga event on the three saga topics from the bench's start, by saga.
#[derive(Clone)]
struct EventWatch {
    sagas: Arc<Mutex<HashMap<Uuid, Vec<Step>>>>,
}

impl EventWatch {
    /// Starts reading each partition of the saga topics at its current end, so nothing the
    /// bench causes is missed and nothing older is read.
    async fn start(bootstrap: &str, prefix: &str) -> TestResult<EventWatch> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("saga-bench-{}", Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            // The bench shares the machine it measures, so it reads in batches: the broker
            // answers its fetch once WATCH_FETCH_WAIT has passed (or a lot has come), not
            // for every record. Its figures come from the events' own times, so reading
            // later changes none of them; it only learns a little later that a saga ended.
            .set(
                "fetch.wait.max.ms",
                WATCH_FETCH_WAIT.as_millis().to_string(),
            )
            .set("fetch.min.bytes", "1048576")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        for logical in [
            topics::ORDERS_EVENTS,
            topics::PAYMENTS_EVENTS,
            topics::INVENTORY_EVENTS,
        ] {
            let topic = format!("{prefix}{logical}");
            let topic = topic.as_str();
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
            let partitions = metadata
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or_default();
            if partitions == 0 {
                return Err(format!("topic {topic} has no partitions: is the stack up?").into());
            }
            for partition in 0..partitions {
                let partition = i32::try_from(partition)?;
                let (_, high) =
                    consumer.fetch_watermarks(topic, partition, Duration::from_secs(5))?;
                assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
            }
        }
        consumer.assign(&assignment)?;
        let watch = EventWatch {
            sagas: Arc::default(),
        };
        let sink = watch.clone();
        tokio::spawn(async move {
            loop {
                let Ok(message) = consumer.recv().await else {
                    continue;
                };
                let Some(envelope) = message.payload().and_then(|p| Envelope::decode(p).ok())
                else {
                    continue;
                };
                let Some(saga_id) = envelope.sagaid else {
                    continue;
                };
                sink.sagas
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(saga_id)
                    .or_default()
                    .push((
                        envelope.time,
                        envelope.event_type(),
                        message
                            .timestamp()
                            .to_millis()
                            .and_then(DateTime::from_timestamp_millis),
                    ));
            }
        });
        Ok(watch)
    }

    /// The saga's events in time order, once it has a terminal one.
    fn finished(&self, saga_id: Uuid) -> Option<Vec<Step>> {
        let sagas = self.sagas.lock().unwrap_or_else(PoisonError::into_inner);
        let events = sagas.get(&saga_id)?;
        if !events.iter().any(|(_, t, _)| TERMINAL.contains(t)) {
            return None;
        }
        let mut events = events.clone();
        events.sort();
        Some(events)
    }
}

/// One rate's figures.
#[derive(Debug, Serialize)]
struct Report {
    offered_rate: f64,
    duration_s: f64,
    sent: u64,
    accepted: u64,
    refused: u64,
    completed: u64,
    unfinished: u64,
    completed_per_second: f64,
    outcomes: HashMap<String, u64>,
    /// Intended send → a free connection, in milliseconds: above a few, the client's
    /// `--connections` limited the load it offered.
    waiting_for_connection_ms: Percentiles,
    /// Intended send → the HTTP answer (202 or 503), in milliseconds.
    answer_ms: Percentiles,
    /// Send → `OrderConfirmed`, in milliseconds.
    confirmed_ms: Percentiles,
    /// Send → any terminal event, in milliseconds.
    terminal_ms: Percentiles,
    /// Time between consecutive events of a saga, by pair of event types, in milliseconds.
    hops_ms: Vec<(String, Percentiles)>,
    /// Every hop split in two at the moment the relay handed its first event to the producer
    /// (the record's CreateTime, whole milliseconds): from the event's write to then (the
    /// commit, the relay's wake-up and claim), and from then to the next event's write
    /// (Kafka, the consumer, the lane's queue, the handler).
    hop_written_to_produced_ms: Percentiles,
    hop_produced_to_next_written_ms: Percentiles,
    /// CPU time each part of the stack spent per completed saga, in milliseconds, from /proc.
    cpu_ms_per_saga: Vec<(String, f64)>,
    /// Commits in the services' databases per completed saga (`pg_stat_database`).
    pg_commits_per_saga: f64,
    /// The largest resident memory of each service seen during the run, in MiB.
    max_rss_mib: Vec<(String, f64)>,
    /// Minute by minute, for runs of two minutes or more: is the end like the start?
    minutes: Vec<Minute>,
    /// (completed/s × business transactions per saga) ÷ pgbench TPS, with `--ceilings`.
    pgbench_ratio: Option<f64>,
}

/// The sagas sent in one minute of a long run.
#[derive(Debug, Serialize)]
struct Minute {
    minute: u64,
    /// Sagas that ended in this minute, per second.
    completed_per_second: f64,
    /// p99 of send → terminal event of the sagas sent in this minute, in milliseconds.
    p99_ms: f64,
}

#[derive(Debug, Default, Serialize)]
struct Percentiles {
    count: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// An order as sent: when it was meant to go, how long it waited for a connection and for
/// the answer (both from then), and what came back.
struct Sent {
    intended: DateTime<Utc>,
    waited_for_connection: Duration,
    answered: Duration,
    saga_id: Option<Uuid>,
}

async fn run_rate(
    apis: &[Api],
    world: &Seeded,
    events: &EventWatch,
    stats: &[sea_orm::DatabaseConnection],
    args: &Args,
    rate: f64,
    duration: Duration,
) -> TestResult<Report> {
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(format!("rate {rate} must be a positive number").into());
    }
    let total = (rate * duration.as_secs_f64()).round() as u64;
    eprintln!("offering {rate}/s for {duration:?}: {total} orders …");
    // Both clocks start together a moment from now: the monotonic one paces the sends, the
    // wall one is what Kafka's event times are compared with.
    let lead = Duration::from_millis(200);
    let start = tokio::time::Instant::now() + lead;
    let wall_start = Utc::now() + chrono::Duration::from_std(lead)?;
    let cpu_before = CpuSample::take()?;
    let commits_before = probes::database_commits(stats).await?;
    let memory = MemoryWatch::start();
    let mut rng = Rng::new(rate.to_bits());
    let mut in_flight = JoinSet::new();
    let connections: Vec<Arc<Semaphore>> = apis
        .iter()
        .map(|_| Arc::new(Semaphore::new(args.connections.max(1))))
        .collect();
    for i in 0..total {
        let offset = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(start + offset).await;
        let intended = wall_start + chrono::Duration::from_std(offset)?;
        let (customer, product) = world.order(&mut rng, args);
        let instance = i as usize % apis.len();
        let api = apis[instance].clone();
        let connection = Arc::clone(&connections[instance]);
        let scheduled = start + offset;
        in_flight.spawn(async move {
            // The semaphore is never closed, so the permit always comes; without one the
            // order still goes, unbounded, rather than being lost from the count.
            let _permit = connection.acquire_owned().await.ok();
            let waited_for_connection = scheduled.elapsed();
            let placed = api.place_order(customer, &[(product, 1)]).await;
            Sent {
                intended,
                waited_for_connection,
                answered: scheduled.elapsed(),
                saga_id: placed.ok().map(|p| p.saga_id),
            }
        });
    }
    let mut sent = Vec::with_capacity(in_flight.len());
    while let Some(done) = in_flight.join_next().await {
        sent.push(done?);
    }
    let window_end = wall_start + chrono::Duration::from_std(duration)?;

    let drain_until = tokio::time::Instant::now() + args.drain;
    let accepted: Vec<(DateTime<Utc>, Uuid)> = sent
        .iter()
        .filter_map(|s| s.saga_id.map(|id| (s.intended, id)))
        .collect();
    while tokio::time::Instant::now() < drain_until
        && accepted
            .iter()
            .any(|(_, id)| events.finished(*id).is_none())
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu = CpuSample::take()?.since(&cpu_before);
    let commits = probes::database_commits(stats).await? - commits_before;
    let mut report = summarise(
        events,
        &sent,
        &accepted,
        rate,
        duration,
        (wall_start, window_end),
    )?;
    let sagas = report.completed.max(1) as f64;
    report.cpu_ms_per_saga = cpu
        .into_iter()
        .map(|(part, seconds)| (part, seconds * 1000.0 / sagas))
        .collect();
    report.pg_commits_per_saga = commits as f64 / sagas;
    report.max_rss_mib = memory.stop().await;
    Ok(report)
}

/// Samples the services' resident memory every second until stopped, keeping each one's
/// largest.
struct MemoryWatch {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<HashMap<String, f64>>,
}

impl MemoryWatch {
    fn start() -> MemoryWatch {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut largest: HashMap<String, f64> = HashMap::new();
            loop {
                for (service, mib) in probes::service_rss_mib() {
                    let seen = largest.entry(service).or_insert(0.0);
                    *seen = seen.max(mib);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = &mut stopped => return largest,
                }
            }
        });
        MemoryWatch { stop, task }
    }

    async fn stop(self) -> Vec<(String, f64)> {
        let _ = self.stop.send(());
        let mut largest: Vec<(String, f64)> =
            self.task.await.unwrap_or_default().into_iter().collect();
        largest.sort_by(|a, b| a.0.cmp(&b.0));
        largest
    }
}

fn summarise(
    events: &EventWatch,
    sent: &[Sent],
    accepted: &[(DateTime<Utc>, Uuid)],
    rate: f64,
    duration: Duration,
    (window_start, window_end): (DateTime<Utc>, DateTime<Utc>),
) -> TestResult<Report> {
    let histogram = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3);
    let (mut confirmed, mut terminal) = (histogram()?, histogram()?);
    let mut hops: HashMap<String, Histogram<u64>> = HashMap::new();
    let (mut written_to_produced, mut produced_to_next) = (histogram()?, histogram()?);
    let mut outcomes: HashMap<String, u64> = HashMap::new();
    let (mut completed, mut completed_in_window) = (0u64, 0u64);
    // Per minute of a long run: sagas ended in it, and latencies of sagas sent in it.
    let minute_count = if duration >= Duration::from_secs(120) {
        duration.as_secs().div_ceil(60) as usize
    } else {
        0
    };
    let mut ended_per_minute = vec![0u64; minute_count];
    let mut latency_per_minute = (0..minute_count)
        .map(|_| histogram())
        .collect::<Result<Vec<_>, _>>()?;
    let minute_of = |time: DateTime<Utc>| {
        usize::try_from((time - window_start).num_seconds() / 60)
            .ok()
            .filter(|m| *m < minute_count)
    };
    for &(intended, saga_id) in accepted {
        let Some(saga) = events.finished(saga_id) else {
            continue;
        };
        completed += 1;
        let Some(&(ended, last, _)) = saga.iter().find(|(_, t, _)| TERMINAL.contains(t)) else {
            continue;
        };
        *outcomes.entry(last.to_owned()).or_default() += 1;
        if ended <= window_end {
            completed_in_window += 1;
        }
        let took = micros(ended - intended);
        terminal.saturating_record(took);
        if let Some(m) = minute_of(ended) {
            ended_per_minute[m] += 1;
        }
        if let Some(m) = minute_of(intended) {
            latency_per_minute[m].saturating_record(took);
        }
        if last == "OrderConfirmed" {
            confirmed.saturating_record(took);
        }
        for pair in saga.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            let hop = format!("{} → {}", from.1, to.1);
            if !hops.contains_key(&hop) {
                hops.insert(hop.clone(), histogram()?);
            }
            if let Some(h) = hops.get_mut(&hop) {
                h.saturating_record(micros(to.0 - from.0));
            }
            // Where a hop's time goes: before the record reached the producer, and after.
            if let Some(produced) = from.2 {
                written_to_produced.saturating_record(micros(produced - from.0));
                produced_to_next.saturating_record(micros(to.0 - produced));
            }
        }
    }
    let mut hops_ms: Vec<(String, Percentiles)> = hops
        .iter()
        .map(|(name, h)| (name.clone(), Percentiles::of(h)))
        .collect();
    hops_ms.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
    let (mut waiting, mut answer) = (histogram()?, histogram()?);
    for order in sent {
        waiting.saturating_record(duration_micros(order.waited_for_connection));
        answer.saturating_record(duration_micros(order.answered));
    }
    let sent_count = sent.len() as u64;
    let accepted_count = accepted.len() as u64;
    Ok(Report {
        offered_rate: rate,
        duration_s: duration.as_secs_f64(),
        sent: sent_count,
        accepted: accepted_count,
        refused: sent_count - accepted_count,
        completed,
        unfinished: accepted_count - completed,
        completed_per_second: completed_in_window as f64 / duration.as_secs_f64(),
        outcomes,
        waiting_for_connection_ms: Percentiles::of(&waiting),
        answer_ms: Percentiles::of(&answer),
        confirmed_ms: Percentiles::of(&confirmed),
        terminal_ms: Percentiles::of(&terminal),
        hops_ms,
        hop_written_to_produced_ms: Percentiles::of(&written_to_produced),
        hop_produced_to_next_written_ms: Percentiles::of(&produced_to_next),
        cpu_ms_per_saga: Vec::new(),
        pg_commits_per_saga: 0.0,
        max_rss_mib: Vec::new(),
        minutes: ended_per_minute
            .iter()
            .zip(&latency_per_minute)
            .enumerate()
            .map(|(minute, (ended, latency))| Minute {
                minute: minute as u64 + 1,
                completed_per_second: *ended as f64 / 60.0,
                p99_ms: Percentiles::of(latency).p99,
            })
            .collect(),
        pgbench_ratio: None,
    })
}

/// A non-negative duration in microseconds, for the histograms.
fn micros(delta: chrono::Duration) -> u64 {
    u64::try_from(delta.num_microseconds().unwrap_or(i64::MAX)).unwrap_or(0)
}

fn duration_micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn print_report(report: &Report) {
    println!();
    println!(
        "offered {:.0}/s for {:.0}s: sent {}, accepted {}, refused {}, completed {} ({:.1}/s in the window), unfinished {}",
        report.offered_rate,
        report.duration_s,
        report.sent,
        report.accepted,
        report.refused,
        report.completed,
        report.completed_per_second,
        report.unfinished
    );
    let mut outcomes: Vec<_> = report.outcomes.iter().collect();
    outcomes.sort();
    println!("outcomes: {outcomes:?}");
    println!("| latency (ms) | count | p50 | p90 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |name: &str, p: &Percentiles| {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            p.count, p.p50, p.p90, p.p99, p.max
        );
    };
    row(
        "send → a free client connection",
        &report.waiting_for_connection_ms,
    );
    row("send → HTTP answer", &report.answer_ms);
    row("send → OrderConfirmed", &report.confirmed_ms);
    row("send → any terminal event", &report.terminal_ms);
    for (hop, p) in &report.hops_ms {
        row(hop, p);
    }
    row(
        "any hop, event written → handed to the producer",
        &report.hop_written_to_produced_ms,
    );
    row(
        "any hop, handed to the producer → next event written",
        &report.hop_produced_to_next_written_ms,
    );
    let cpu: Vec<String> = report
        .cpu_ms_per_saga
        .iter()
        .map(|(part, ms)| format!("{part} {ms:.2}"))
        .collect();
    println!("CPU ms per saga: {}", cpu.join(", "));
    let rss: Vec<String> = report
        .max_rss_mib
        .iter()
        .map(|(service, mib)| format!("{service} {mib:.0}"))
        .collect();
    println!(
        "PostgreSQL commits per saga: {:.2}; largest RSS (MiB): {}",
        report.pg_commits_per_saga,
        rss.join(", ")
    );
    if !report.minutes.is_empty() {
        println!("| minute | completed/s | p99 ms |");
        println!("|---:|---:|---:|");
        for m in &report.minutes {
            println!(
                "| {} | {:.1} | {:.1} |",
                m.minute, m.completed_per_second, m.p99_ms
            );
        }
    }
}

fn print_summary(reports: &[Report], ceilings: Option<&ceilings::Ceilings>) {
    println!();
    if let Some(c) = ceilings {
        println!(
            "ceilings ({:.0}s each): pgbench {:.0} TPS, the best of {:.0?} (business + outbox row, durable commit, 32 clients); Kafka ProducerPerformance {:.0} records/s (600 B, acks=all, idempotent)",
            c.seconds_each, c.pgbench_tps, c.pgbench_rounds_tps, c.kafka_records_per_second
        );
        println!();
    }
    println!(
        "| offered/s | completed/s | accepted | refused | unfinished | p50 ms | p99 ms | commits/saga | max RSS MiB | ratio to pgbench |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let rss = r
            .max_rss_mib
            .iter()
            .map(|(_, mib)| *mib)
            .fold(0.0, f64::max);
        let ratio = r
            .pgbench_ratio
            .map_or_else(|| "–".to_owned(), |ratio| format!("{ratio:.3}"));
        println!(
            "| {:.0} | {:.1} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.0} | {ratio} |",
            r.offered_rate,
            r.completed_per_second,
            r.accepted,
            r.refused,
            r.unfinished,
            r.confirmed_ms.p50,
            r.confirmed_ms.p99,
            r.pg_commits_per_saga,
            rss,
        );
    }
}

/// The JSON report and the plot, named by the time of the run.
fn write_outputs(
    dir: &PathBuf,
    reports: &[Report],
    ceilings: Option<&ceilings::Ceilings>,
) -> TestResult {
    #[derive(Serialize)]
    struct Run<'a> {
        ceilings: Option<&'a ceilings::Ceilings>,
        rates: &'a [Report],
    }
    std::fs::create_dir_all(dir)?;
    let stem = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let json = dir.join(format!("{stem}.json"));
    std::fs::write(
        &json,
        serde_json::to_vec_pretty(&Run {
            ceilings,
            rates: reports,
        })?,
    )?;
    eprintln!("report written to {}", json.display());
    let points: Vec<plot::Point> = reports
        .iter()
        .map(|r| plot::Point {
            offered: r.offered_rate,
            completed: r.completed_per_second,
            p50_ms: r.confirmed_ms.p50,
            p99_ms: r.confirmed_ms.p99,
        })
        .collect();
    let svg = dir.join(format!("{stem}.svg"));
    plot::sweep(&svg, &points)?;
    eprintln!("plot written to {}", svg.display());
    Ok(())
}
