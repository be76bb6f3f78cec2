//! Process-wide counters, exposed in Prometheus' text format at `GET /metrics` together with
//! gauges read from the database when scraped (the outbox backlog and its age).

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug)]
pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    pub fn increment(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
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

pub static ALL: [&Counter; 11] = [
    &EVENTS_APPLIED,
    &INBOX_EXPIRED,
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

/// Renders the counters plus `gauges` (name, help, value) in Prometheus' text format.
pub fn render(service: &str, gauges: &[(&str, &str, f64)]) -> String {
    let mut out = String::new();
    for counter in ALL {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{service=\"{service}\"}} {value}\n",
            name = counter.name,
            help = counter.help,
            value = counter.get()
        ));
    }
    for (name, help, value) in gauges {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{service=\"{service}\"}} {value}\n"
        ));
    }
    out
}
