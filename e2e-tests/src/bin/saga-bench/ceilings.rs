//! `--ceilings`: what this machine's PostgreSQL and Kafka do on their own, measured in the same
//! run as the sagas (before them, on an idle stack), so that the saga figures can be read
//! against them.
//!
//! - PostgreSQL: pgbench, 32 clients, each transaction the shape of one saga step: a business
//!   row and an outbox row (the real outbox table) in one durable commit. The best of three
//!   rounds counts.
//! - Kafka: Kafka's own `ProducerPerformance`, 600-byte records (about one event), `acks=all`
//!   and idempotent, as the relays produce.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e_tests::TestResult;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sea_orm::{ConnectionTrait, Database};
use sea_orm_migration::SchemaManager;
use serde::Serialize;

/// Business transactions per saga: orders places it, payments charges, inventory reserves,
/// orders finishes. The ratio compares the sagas' commits of this kind to pgbench's.
pub const BUSINESS_TRANSACTIONS_PER_SAGA: f64 = 4.0;

const SCRATCH_DATABASE: &str = "saga_bench_ceiling";
const SCRATCH_TOPIC: &str = "saga-bench-ceiling";
const PGBENCH_CLIENTS: u32 = 32;
/// pgbench runs this many times, each for a share of the ceiling's duration, and the best
/// counts. On this machine one run moved by a quarter from one minute to the next (5.5k to
/// 8.3k TPS), which moved the ratio as much; the best of three is the machine's ceiling at
/// that moment, and the ratio against it can only come out lower, never luckier.
const PGBENCH_ROUNDS: u32 = 3;

#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    /// The best of `pgbench_rounds_tps`.
    pub pgbench_tps: f64,
    pub pgbench_rounds_tps: Vec<f64>,
    pub kafka_records_per_second: f64,
    pub seconds_each: f64,
}

pub struct Where<'a> {
    /// A database URL whose role may create databases (the services' roles may).
    pub database_url: &'a str,
    pub bootstrap: &'a str,
    /// pgbench, or where to look for it.
    pub pgbench: Option<&'a Path>,
    /// The folder of `kafka-run-class` (deploy/bin).
    pub kafka_bin: &'a Path,
    pub duration: Duration,
}

pub async fn measure(at: &Where<'_>) -> TestResult<Ceilings> {
    eprintln!("ceilings: pgbench for {:?} …", at.duration);
    let pgbench_rounds_tps = pgbench(at).await?;
    let pgbench_tps = pgbench_rounds_tps.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "ceilings: pgbench {pgbench_tps:.0} TPS (best of {pgbench_rounds_tps:.0?}); Kafka ProducerPerformance …"
    );
    let kafka_records_per_second = producer_performance(at).await?;
    eprintln!("ceilings: Kafka {kafka_records_per_second:.0} records/s");
    Ok(Ceilings {
        pgbench_tps,
        pgbench_rounds_tps,
        kafka_records_per_second,
        seconds_each: at.duration.as_secs_f64(),
    })
}

/// The TPS of each of pgbench's rounds.
async fn pgbench(at: &Where<'_>) -> TestResult<Vec<f64>> {
    let url = reqwest::Url::parse(at.database_url)?;
    let admin = Database::connect(at.database_url).await?;
    let drop = format!("DROP DATABASE IF EXISTS {SCRATCH_DATABASE} WITH (FORCE)");
    admin.execute_unprepared(&drop).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {SCRATCH_DATABASE}"))
        .await?;
    let mut scratch_url = url.clone();
    scratch_url.set_path(SCRATCH_DATABASE);
    let scratch = Database::connect(scratch_url.as_str()).await?;
    saga_schema::create_outbox(&SchemaManager::new(&scratch)).await?;
    saga_schema::StoreOutboxPayloadAsWritten::apply(&SchemaManager::new(&scratch)).await?;
    scratch
        .execute_unprepared(
            "CREATE TABLE business (id UUID PRIMARY KEY, customer_id UUID NOT NULL, \
             total_cents BIGINT NOT NULL, status TEXT NOT NULL, \
             created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
    scratch.close().await?;

    let script = std::env::temp_dir().join(format!("saga-bench-{}.sql", std::process::id()));
    // A payload the size of a saga event's envelope.
    let payload = format!(r#"{{"data": "{}"}}"#, "x".repeat(560));
    std::fs::write(
        &script,
        format!(
            "\\set total random(1, 1000000)\n\
             BEGIN;\n\
             INSERT INTO business (id, customer_id, total_cents, status) \
             VALUES (gen_random_uuid(), gen_random_uuid(), :total, 'PENDING_PAYMENT');\n\
             INSERT INTO outbox (event_id, saga_id, topic, message_key, event_type, payload) \
             VALUES (gen_random_uuid(), gen_random_uuid(), 'orders.events', md5(:total::text), \
             'OrderCreated', '{payload}');\n\
             COMMIT;\n"
        ),
    )?;
    let program = match at.pgbench {
        Some(path) => path.to_path_buf(),
        None => find_pgbench(),
    };
    let seconds_each = (at.duration.as_secs() / u64::from(PGBENCH_ROUNDS)).max(1);
    // The rounds stop at the first failure; the scratch database goes either way.
    let rounds: Result<Vec<f64>, String> = (0..PGBENCH_ROUNDS)
        .map(|_| {
            Command::new(&program)
                .args(["-n", "-c", &PGBENCH_CLIENTS.to_string(), "-j", "2"])
                .args(["-T", &seconds_each.to_string()])
                .arg("-f")
                .arg(&script)
                .args(["-h", url.host_str().unwrap_or("127.0.0.1")])
                .args(["-p", &url.port().unwrap_or(5432).to_string()])
                .args(["-U", url.username(), SCRATCH_DATABASE])
                .env("PGPASSWORD", url.password().unwrap_or_default())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", program.display()))
                .and_then(|output| tps_of(&output))
        })
        .collect();
    let _ = std::fs::remove_file(&script);
    admin.execute_unprepared(&drop).await?;
    Ok(rounds?)
}

/// pgbench's TPS from its output: "tps = 6952.123456 (without initial connection time)".
fn tps_of(output: &std::process::Output) -> Result<f64, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("pgbench failed ({}): {stderr}", output.status));
    }
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench's output: {stdout}"))
}

/// The newest pgbench of Debian's PostgreSQL packages, else whatever `PATH` has.
fn find_pgbench() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin/pgbench"))
        .filter(|path| path.is_file())
        .collect();
    found.sort_by_key(|path| {
        path.components()
            .nth(4)
            .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
    });
    found.pop().unwrap_or_else(|| PathBuf::from("pgbench"))
}

async fn producer_performance(at: &Where<'_>) -> TestResult<f64> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", at.bootstrap)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let _ = admin.delete_topics(&[SCRATCH_TOPIC], &options).await;
    // A deleted topic takes a moment to go; creating it again too early fails, so retry.
    let topic = NewTopic::new(SCRATCH_TOPIC, 6, TopicReplication::Fixed(1));
    let mut created = false;
    for _ in 0..20 {
        let results = admin.create_topics([&topic], &options).await?;
        if results.iter().all(Result::is_ok) {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !created {
        return Err(format!("cannot create the topic {SCRATCH_TOPIC}").into());
    }
    // Enough records to keep it busy for about the duration at tens of thousands a second;
    // it reports its own rate, so the exact count does not matter.
    let records = (at.duration.as_secs().max(1) * 30_000).to_string();
    let output = Command::new(at.kafka_bin.join("kafka-run-class"))
        .arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--topic", SCRATCH_TOPIC, "--num-records", &records])
        .args(["--record-size", "600", "--throughput", "-1"])
        .arg("--producer-props")
        .arg(format!("bootstrap.servers={}", at.bootstrap))
        .args(["acks=all", "enable.idempotence=true", "linger.ms=2"])
        .args(["compression.type=lz4"])
        .output()
        .map_err(|e| format!("cannot run Kafka's ProducerPerformance: {e}"))?;
    let _ = admin.delete_topics(&[SCRATCH_TOPIC], &options).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("ProducerPerformance failed ({}): {stderr}", output.status).into());
    }
    // The last line: "900000 records sent, 32512.4 records/sec (18.60 MB/sec), …"
    stdout
        .lines()
        .rev()
        .find_map(|line| {
            let (_, rest) = line.split_once("records sent, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| format!("no rate in ProducerPerformance's output: {stdout}").into())
}
