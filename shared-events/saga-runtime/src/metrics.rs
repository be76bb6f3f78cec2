//! The service's metrics, recorded through the `metrics` facade and exposed in Prometheus'
//! text format at `GET /metrics` by `metrics-exporter-prometheus`, together with gauges read
//! when scraped (the outbox backlog and its age, parked events, the connection pool).
//!
//! Every series carries a `service` label. The names are constants here, in one place, so
//! that the alert rules (`deploy/prometheus/alerts.yml`), the README and the code agree.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// A monotonically increasing count, by name, with its help text.
#[derive(Debug)]
pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Self { name, help }
    }

    pub fn increment(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        metrics::counter!(self.name).increment(n);
    }

    /// Adds `n` to the series of this counter with `labels`.
    pub fn add_with(&self, n: u64, labels: &[(&'static str, String)]) {
        metrics::counter!(self.name, to_labels(labels)).increment(n);
    }
}

fn to_labels(labels: &[(&'static str, String)]) -> Vec<metrics::Label> {
    labels
        .iter()
        .map(|(key, value)| metrics::Label::new(*key, value.clone()))
        .collect()
}

pub static EVENTS_APPLIED: Counter = Counter::new(
    "saga_events_applied_total",
    "Consumed events whose transaction committed.",
);
pub static EVENTS_SKIPPED: Counter = Counter::new(
    "saga_events_skipped_total",
    "Consumed events the service does not react to, passed over without a transaction.",
);
pub static CONSUMER_TRANSACTIONS: Counter = Counter::new(
    "saga_consumer_transactions_total",
    "Transactions that applied consumed events (one applies a batch of them).",
);
pub static INBOX_EXPIRED: Counter = Counter::new(
    "saga_inbox_expired_total",
    "Inbox rows deleted by the retention job.",
);
pub static SAGA_VIEW_EXPIRED: Counter = Counter::new(
    "saga_view_expired_total",
    "Saga view rows deleted by the retention job (orders-svc).",
);
pub static ATTRIBUTES_ACCEPTED_INVALID: Counter = Counter::new(
    "saga_attributes_accepted_invalid_total",
    "Product attributes that broke their category's schema and were accepted (validation_action=warn).",
);
pub static IDEMPOTENCY_KEYS_EXPIRED: Counter = Counter::new(
    "saga_idempotency_keys_expired_total",
    "Idempotency keys deleted by the retention job.",
);
pub static EVENTS_RETRIED: Counter = Counter::new(
    "saga_event_retries_total",
    "Handler failures that were retried.",
);
pub static PRODUCERS_REPLACED: Counter = Counter::new(
    "saga_kafka_producers_replaced_total",
    "Kafka producers replaced after librdkafka declared them fatally failed.",
);
pub static PARKED_EVENTS: Counter = Counter::new(
    "saga_parked_events_total",
    "Events parked for an operator after failing permanently.",
);
pub static DEAD_LETTERS: Counter = Counter::new(
    "saga_dead_letters_total",
    "Undecodable records sent to a dead-letter topic.",
);
pub static OUTBOX_PUBLISHED: Counter = Counter::new(
    "saga_outbox_published_total",
    "Outbox rows published to Kafka.",
);
pub static REQUESTS_REFUSED: Counter = Counter::new(
    "saga_requests_refused_total",
    "Requests refused with 503 because too many sagas were in flight (admission control).",
);
pub static SCRAPE_ERRORS: Counter = Counter::new(
    "saga_metrics_scrape_errors_total",
    "Scrapes that left out the database gauges because the query failed.",
);
/// Labelled by `type`, the compensating event (e.g. `PaymentRefunded`).
pub static COMPENSATIONS: Counter = Counter::new(
    "saga_compensations_total",
    "Compensating events published: each undoes a step of a saga that could not finish.",
);
/// Labelled by `method`, `route` (the route's pattern, never the raw path) and `status`.
pub static HTTP_REQUESTS: Counter = Counter::new(
    "http_server_requests_total",
    "HTTP requests answered, by method, route pattern and status.",
);

static COUNTERS: [&Counter; 16] = [
    &COMPENSATIONS,
    &HTTP_REQUESTS,
    &EVENTS_APPLIED,
    &INBOX_EXPIRED,
    &SAGA_VIEW_EXPIRED,
    &IDEMPOTENCY_KEYS_EXPIRED,
    &ATTRIBUTES_ACCEPTED_INVALID,
    &EVENTS_SKIPPED,
    &CONSUMER_TRANSACTIONS,
    &EVENTS_RETRIED,
    &PARKED_EVENTS,
    &PRODUCERS_REPLACED,
    &DEAD_LETTERS,
    &OUTBOX_PUBLISHED,
    &REQUESTS_REFUSED,
    &SCRAPE_ERRORS,
];

/// The counters that have no labels: all but the first two of [`COUNTERS`].
static UNLABELLED_COUNTERS: &[&Counter] = COUNTERS.split_at(2).1;

/// A histogram of durations in seconds, by name, with its help text.
#[derive(Debug)]
pub struct Histogram {
    pub name: &'static str,
    pub help: &'static str,
}

/// Labelled by `outcome`, the order's terminal status. orders-svc only.
pub static SAGA_DURATION: Histogram = Histogram {
    name: "saga_duration_seconds",
    help: "From an order's placement to its terminal status, by outcome (orders-svc).",
};
/// Labelled by `event_type`.
pub static HANDLER_DURATION: Histogram = Histogram {
    name: "saga_handler_duration_seconds",
    help: "Time a consumed event's handler took inside its transaction, by event type.",
};
pub static RELAY_PUBLISH_DURATION: Histogram = Histogram {
    name: "saga_relay_publish_duration_seconds",
    help: "From the relay handing a batch to the producer to Kafka acknowledging all of it.",
};
/// Labelled like [`HTTP_REQUESTS`].
pub static HTTP_REQUEST_DURATION: Histogram = Histogram {
    name: "http_server_request_duration_seconds",
    help: "Time to answer an HTTP request, by method, route pattern and status.",
};

static HISTOGRAMS: [&Histogram; 4] = [
    &SAGA_DURATION,
    &HANDLER_DURATION,
    &RELAY_PUBLISH_DURATION,
    &HTTP_REQUEST_DURATION,
];

/// A gauge the process sets as it goes.
#[derive(Debug)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
}

impl Gauge {
    /// Sets the series of this gauge with `labels` to `value`.
    pub fn set_with(&self, value: f64, labels: &[(&'static str, String)]) {
        metrics::gauge!(self.name, to_labels(labels)).set(value);
    }
}

/// Labelled by `topic` and `partition`, for the partitions this instance consumes, from
/// librdkafka's statistics.
pub static CONSUMER_LAG: Gauge = Gauge {
    name: "saga_consumer_lag",
    help: "Records on a consumed partition not yet processed by this instance (high watermark minus committed offset).",
};
/// Labelled by `status`. orders-svc only.
pub static SAGAS: Gauge = Gauge {
    name: "saga_sagas",
    help: "Sagas by status that are still in flight, from the database (orders-svc); finished ones are counted by saga_duration_seconds_count.",
};

/// orders-svc only: its admission bound in force, between a floor and `ORDERS_MAX_IN_FLIGHT`.
pub static ADMISSION_LIMIT: Gauge = Gauge {
    name: "saga_admission_limit",
    help: "Sagas in flight past which orders-svc refuses new orders now: ORDERS_MAX_IN_FLIGHT, or less while sagas take longer than ORDERS_ADMISSION_TARGET_WAIT_MS.",
};

static GAUGES: [&Gauge; 3] = [&CONSUMER_LAG, &SAGAS, &ADMISSION_LIMIT];

/// Buckets for the duration histograms, in seconds: from a millisecond (a handler) to the
/// saga deadline's order of magnitude (30 s).
pub const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder, once; later calls return the same handle. Without it (a
/// test that builds no service) every recording is a no-op. `None` when another recorder was
/// installed first, in which case `/metrics` serves only the scrape-time gauges.
pub fn install(service: &'static str) -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .add_global_label("service", service)
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &BUCKETS);
            let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed; /metrics is partial");
                    return None;
                }
            };
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    for counter in COUNTERS {
        metrics::describe_counter!(counter.name, counter.help);
    }
    // The counters without labels are shown from the start, at 0, so that a dashboard or a
    // test reads "none yet" instead of a missing series.
    for counter in UNLABELLED_COUNTERS {
        metrics::counter!(counter.name).absolute(0);
    }
    for histogram in HISTOGRAMS {
        metrics::describe_histogram!(histogram.name, metrics::Unit::Seconds, histogram.help);
    }
    for gauge in GAUGES {
        metrics::describe_gauge!(gauge.name, gauge.help);
    }
}

/// Records `elapsed` in `histogram` with `labels`.
pub fn observe(histogram: &Histogram, elapsed: Duration, labels: &[(&'static str, String)]) {
    metrics::histogram!(histogram.name, to_labels(labels)).record(elapsed.as_secs_f64());
}

/// Keeps the exporter's histogram buffers drained between scrapes, so that a service nobody
/// scrapes does not grow them without bound.
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) {
    let Some(Some(handle)) = HANDLE.get() else {
        return;
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
            () = stop.cancelled() => return,
        }
    }
}

/// Tasks waiting to begin a transaction in the unit of work: for a pooled connection, mostly.
/// sqlx does not count the waiters of its pool, so the unit of work, where every business
/// transaction begins, counts them itself.
static POOL_WAITERS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Counts one waiter from `enter` until dropped, so a cancelled wait is uncounted too.
#[derive(Debug)]
pub struct PoolWaiter(());

impl PoolWaiter {
    pub fn enter() -> Self {
        POOL_WAITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(())
    }
}

impl Drop for PoolWaiter {
    fn drop(&mut self) {
        POOL_WAITERS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The pool's gauges: its size, idle and in-use connections, its bound and its waiters.
pub fn pool_gauges(pool: &sea_orm::sqlx::PgPool) -> Vec<ScrapedGauge> {
    const CONNECTIONS: &str = "saga_db_pool_connections";
    const CONNECTIONS_HELP: &str = "Connections of the service's pool, by state (idle or in use).";
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(size);
    vec![
        ScrapedGauge::new(CONNECTIONS, CONNECTIONS_HELP, f64::from(idle))
            .with_label("state", "idle"),
        ScrapedGauge::new(
            CONNECTIONS,
            CONNECTIONS_HELP,
            f64::from(size.saturating_sub(idle)),
        )
        .with_label("state", "in_use"),
        ScrapedGauge::new(
            "saga_db_pool_max_connections",
            "The pool's bound (DB_MAX_CONNECTIONS).",
            f64::from(pool.options().get_max_connections()),
        ),
        #[allow(clippy::cast_precision_loss)]
        ScrapedGauge::new(
            "saga_db_pool_waiters",
            "Tasks waiting to begin a transaction, for a pooled connection mostly.",
            POOL_WAITERS
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(0) as f64,
        ),
    ]
}

/// The HTTP listener's open connections and its bound (`crate::listener`).
#[allow(clippy::cast_precision_loss)]
pub fn connection_gauges() -> Vec<ScrapedGauge> {
    let (open, bound) = crate::listener::connections();
    vec![
        ScrapedGauge::new(
            "saga_http_connections",
            "HTTP connections open now; past saga_http_max_connections new ones wait to be accepted.",
            open as f64,
        ),
        ScrapedGauge::new(
            "saga_http_max_connections",
            "The HTTP listener's bound on open connections (HTTP_MAX_CONNECTIONS).",
            bound as f64,
        ),
    ]
}

/// A gauge read when scraped: name, help, labels and value.
#[derive(Debug, Clone)]
pub struct ScrapedGauge {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl ScrapedGauge {
    pub fn new(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            labels: Vec::new(),
            value,
        }
    }

    pub fn with_label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((key, value.into()));
        self
    }
}

/// The recorder's series plus `gauges`, in Prometheus' text format. Gauges read at scrape time
/// are written here rather than set on the recorder: when their query fails they are left out
/// instead of repeating a stale value.
pub fn render(service: &str, gauges: &[ScrapedGauge]) -> String {
    let mut out = HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    let mut described = std::collections::HashSet::new();
    for gauge in gauges {
        if described.insert(gauge.name) {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n",
                name = gauge.name,
                help = gauge.help
            ));
        }
        let mut labels = format!("service=\"{}\"", escape(service));
        for (key, value) in &gauge.labels {
            labels.push_str(&format!(",{key}=\"{}\"", escape(value)));
        }
        out.push_str(&format!("{}{{{labels}}} {}\n", gauge.name, gauge.value));
    }
    out
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scraped_gauges_are_written_once_described_with_escaped_labels() {
        let text = render(
            "orders-svc",
            &[
                ScrapedGauge::new("saga_db_pool_connections", "Connections.", 3.0)
                    .with_label("state", "idle"),
                ScrapedGauge::new("saga_db_pool_connections", "Connections.", 2.0)
                    .with_label("state", "in \"use\""),
            ],
        );
        assert_eq!(
            text.matches("# TYPE saga_db_pool_connections gauge")
                .count(),
            1
        );
        assert!(
            text.contains("saga_db_pool_connections{service=\"orders-svc\",state=\"idle\"} 3\n")
        );
        assert!(text.contains("state=\"in \\\"use\\\"\"} 2\n"), "{text}");
    }
}
