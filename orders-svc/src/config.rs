//! orders-svc's settings: the shared ones (`saga_runtime::config`) with these defaults.

use std::time::Duration;

use saga_runtime::config::{ConfigError, ServiceDefaults, millis};

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    service_name: "orders-svc",
    http_port: 8081,
    database_url: "postgres://orders_svc:orders_svc@127.0.0.1:5432/orders",
    // orders-svc takes the HTTP traffic, so it gets the largest share of the 20 connections.
    max_connections: 8,
};

/// The saga deadline: orders-svc cancels an order that is not terminal this long after it was
/// placed, measured by the database's clock.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineSettings {
    /// `SAGA_DEADLINE_MS`, default 30 s.
    pub deadline: Duration,
    /// `SAGA_DEADLINE_SCAN_INTERVAL_MS`, default 1 s: how often expired orders are looked for.
    pub scan_interval: Duration,
}

impl DeadlineSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            deadline: millis("SAGA_DEADLINE_MS", Duration::from_secs(30))?,
            scan_interval: millis("SAGA_DEADLINE_SCAN_INTERVAL_MS", Duration::from_secs(1))?,
        })
    }
}

/// Admission control (`service::admission`).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionSettings {
    /// `ORDERS_MAX_IN_FLIGHT`, default 150: orders past this many unfinished sagas are refused
    /// with 503. The default comes from saga-bench on a 2-core machine (see the README): at
    /// twice the capacity, 150 kept the p99 of accepted orders at 0.81 s and 200 let it reach
    /// 1.18 s. By Little's law the bound is about capacity × the wait one accepts. It is the
    /// ceiling: the bound in force may be lower (`target_wait`).
    pub max_in_flight: u64,
    /// `ORDERS_ADMISSION_TARGET_WAIT_MS`, default 400 ms; 0 turns it off: while the median
    /// saga takes longer than this, the bound in force shrinks below `max_in_flight`, so that
    /// on a slower machine a full house still means about this long a wait. Under overload
    /// saga-bench's p99 came out at about twice the median, so 400 ms keeps it under 1 s.
    pub target_wait: Option<Duration>,
    /// `ORDERS_RETRY_AFTER_MS`, default 1 s: the `Retry-After` a refused client is given.
    pub retry_after: Duration,
    /// `ORDERS_IN_FLIGHT_RECOUNT_MS`, default 100 ms: how often the count is taken from the
    /// database. Between recounts an instance sees only the sagas it placed and those that
    /// finished on its own partitions; with several instances, the others' finishes show up
    /// only at the next recount, so a long interval refuses orders it need not.
    pub recount_interval: Duration,
}

impl AdmissionSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            max_in_flight: saga_runtime::config::var("ORDERS_MAX_IN_FLIGHT", 150)?,
            // Zero turns it off: `InFlight::with_target_wait` reads it as no target.
            target_wait: Some(millis(
                "ORDERS_ADMISSION_TARGET_WAIT_MS",
                Duration::from_millis(400),
            )?),
            retry_after: millis("ORDERS_RETRY_AFTER_MS", Duration::from_secs(1))?,
            recount_interval: millis("ORDERS_IN_FLIGHT_RECOUNT_MS", Duration::from_millis(100))?,
        })
    }
}

/// Group commit of `POST /orders` (`saga_runtime::group_commit`): orders placed at the same
/// time share one transaction and one commit.
#[derive(Debug, Clone, Copy)]
pub struct PlacementSettings {
    /// `ORDERS_PLACE_MAX_BATCH`, default 32: the most orders one transaction takes. 1 turns
    /// group commit off.
    pub max_batch: usize,
    /// `ORDERS_PLACE_CONCURRENCY`, default 2: how many such transactions run at once, and so
    /// how many pooled connections placing orders uses.
    pub concurrency: usize,
}

impl PlacementSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            max_batch: saga_runtime::config::var("ORDERS_PLACE_MAX_BATCH", 32)?,
            concurrency: saga_runtime::config::var("ORDERS_PLACE_CONCURRENCY", 2)?,
        })
    }
}

/// The saga view (`saga_events`), read by `GET /sagas/{saga_id}` and the explorer page.
#[derive(Debug, Clone, Copy)]
pub struct SagaViewSettings {
    /// `SAGA_VIEW_RETENTION_MS`, default 7 days: how long a saga's events stay in the view.
    /// Unlike the inbox's, this bound has no rule to obey: an expired saga only drops out of
    /// the timelines (Kafka and `saga show` may still have it).
    pub retention: Duration,
}

impl SagaViewSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            retention: millis("SAGA_VIEW_RETENTION_MS", Duration::from_secs(7 * 24 * 3600))?,
        })
    }
}

/// The other services' operator endpoints, which the explorer page composes with orders-svc's
/// own: their parked events (`GET /sagas/stuck`).
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// `PAYMENTS_URL`, default `http://127.0.0.1:8082`.
    pub payments_url: String,
    /// `INVENTORY_URL`, default `http://127.0.0.1:8083`.
    pub inventory_url: String,
    /// `PEER_TIMEOUT_MS`, default 1000: how long the page waits for each; past it the page
    /// says the service did not answer instead of waiting.
    pub timeout: Duration,
}

impl PeerSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            payments_url: saga_runtime::config::var(
                "PAYMENTS_URL",
                "http://127.0.0.1:8082".to_owned(),
            )?,
            inventory_url: saga_runtime::config::var(
                "INVENTORY_URL",
                "http://127.0.0.1:8083".to_owned(),
            )?,
            timeout: millis("PEER_TIMEOUT_MS", Duration::from_secs(1))?,
        })
    }
}
