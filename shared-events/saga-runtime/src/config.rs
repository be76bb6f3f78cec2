//! Settings read from environment variables. Every variable has a default that suits the
//! single-machine stack that `deploy/stack` runs, and the README's configuration table lists
//! them. Durations are given in milliseconds (`*_MS`) and held as [`Duration`].

use std::str::FromStr;
use std::time::Duration;

/// A variable was set to something that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// Reads `name`, falling back to `default` when it is unset or empty.
pub fn var<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    parse_or(name, std::env::var(name).ok(), default)
}

/// `var` without the environment: `raw` is the variable's value, if it is set.
fn parse_or<T>(name: &str, raw: Option<String>, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match raw {
        Some(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_owned(),
                value,
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// Reads a duration in milliseconds from `name`.
pub fn millis(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    var(name, default_ms).map(Duration::from_millis)
}

/// Reads a duration in milliseconds from `name`, fractions allowed (`0.5` is 500 µs), for the
/// settings whose useful values are below a millisecond.
pub fn fractional_millis(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    fractional_millis_or(name, std::env::var(name).ok(), default)
}

/// `fractional_millis` without the environment.
fn fractional_millis_or(
    name: &str,
    raw: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let ms: f64 = parse_or(name, raw, default.as_secs_f64() * 1000.0)?;
    if !ms.is_finite() || ms < 0.0 {
        return Err(ConfigError {
            name: name.to_owned(),
            value: ms.to_string(),
            reason: "must be a number of milliseconds, 0 or more".to_owned(),
        });
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

/// Settings every service has. Each service adds its own port, database and group defaults.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// Names the service in events' `source`, logs, traces and the Kafka client ID.
    pub service_name: &'static str,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub relay: RelaySettings,
    pub consumer: ConsumerSettings,
    pub retention: RetentionSettings,
    /// Checks the bearer tokens of every route but the probes, the scrape and the contract.
    pub auth: crate::auth::Authenticator,
}

/// Per-service defaults that [`CommonSettings::from_env`] falls back to.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDefaults {
    pub service_name: &'static str,
    pub http_port: u16,
    pub database_url: &'static str,
    pub max_connections: u32,
}

impl CommonSettings {
    pub fn from_env(defaults: ServiceDefaults) -> Result<Self, ConfigError> {
        Self::from_env_with_auth(defaults, crate::auth::Authenticator::from_env()?)
    }

    /// [`CommonSettings::from_env`] with the token checks given, not read: for tests, whose
    /// tokens are their own.
    pub fn from_env_with_auth(
        defaults: ServiceDefaults,
        auth: crate::auth::Authenticator,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            auth,
            service_name: defaults.service_name,
            http: HttpSettings {
                host: var("HTTP_HOST", "127.0.0.1".to_owned())?,
                port: var("HTTP_PORT", defaults.http_port)?,
                request_timeout: millis("HTTP_REQUEST_TIMEOUT_MS", Duration::from_secs(10))?,
                max_body_bytes: var("HTTP_MAX_BODY_BYTES", 64 * 1024)?,
                max_connections: var("HTTP_MAX_CONNECTIONS", 1024)?,
                probe_port: Some(var("HTTP_PROBE_PORT", 0)?).filter(|port| *port != 0),
                shutdown_timeout: millis("SHUTDOWN_TIMEOUT_MS", Duration::from_secs(20))?,
                health_stale_after: millis("HEALTH_STALE_AFTER_MS", Duration::from_secs(30))?,
            },
            database: DatabaseSettings {
                url: var("DATABASE_URL", defaults.database_url.to_owned())?,
                max_connections: var("DB_MAX_CONNECTIONS", defaults.max_connections)?,
                min_connections: var("DB_MIN_CONNECTIONS", 1)?,
                connect_timeout: millis("DB_CONNECT_TIMEOUT_MS", Duration::from_secs(5))?,
                acquire_timeout: millis("DB_ACQUIRE_TIMEOUT_MS", Duration::from_secs(3))?,
                idle_timeout: millis("DB_IDLE_TIMEOUT_MS", Duration::from_secs(300))?,
                max_lifetime: millis("DB_MAX_LIFETIME_MS", Duration::from_secs(1800))?,
                ping_if_idle_for: millis("DB_PING_IF_IDLE_MS", Duration::from_secs(1))?,
                statement_timeout: millis("DB_STATEMENT_TIMEOUT_MS", Duration::from_secs(5))?,
                migration_lock_timeout: millis(
                    "DB_MIGRATION_LOCK_TIMEOUT_MS",
                    Duration::from_secs(60),
                )?,
            },
            kafka: KafkaSettings {
                brokers: var("KAFKA_BROKERS", "127.0.0.1:9092".to_owned())?,
                topic_prefix: var("KAFKA_TOPIC_PREFIX", String::new())?,
                group_id: var("KAFKA_GROUP_ID", defaults.service_name.to_owned())?,
                group_instance_id: Some(var("KAFKA_GROUP_INSTANCE_ID", String::new())?)
                    .filter(|id| !id.is_empty()),
                message_timeout: millis("KAFKA_MESSAGE_TIMEOUT_MS", Duration::from_secs(10))?,
                session_timeout: millis("KAFKA_SESSION_TIMEOUT_MS", Duration::from_secs(10))?,
                socket_timeout: millis("KAFKA_SOCKET_TIMEOUT_MS", Duration::from_secs(10))?,
                metadata_timeout: millis("KAFKA_METADATA_TIMEOUT_MS", Duration::from_secs(3))?,
                fetch_min_bytes: var("KAFKA_FETCH_MIN_BYTES", 1)?,
                fetch_wait_max: millis("KAFKA_FETCH_WAIT_MAX_MS", Duration::from_millis(500))?,
                producer_linger: fractional_millis("KAFKA_LINGER_MS", Duration::from_millis(2))?,
                client: shared_events::topics::client_properties(std::env::vars()),
            },
            relay: RelaySettings {
                batch_size: var("OUTBOX_BATCH_SIZE", 256)?,
                poll_interval: millis("OUTBOX_POLL_INTERVAL_MS", Duration::from_millis(1000))?,
                retry_backoff: millis("OUTBOX_RETRY_BACKOFF_MS", Duration::from_millis(500))?,
                linger: millis("OUTBOX_LINGER_MS", Duration::ZERO)?,
            },
            consumer: ConsumerSettings {
                lanes: var("CONSUMER_LANES", 1)?,
                retry_backoff_initial: millis(
                    "CONSUMER_RETRY_BACKOFF_INITIAL_MS",
                    Duration::from_millis(50),
                )?,
                retry_backoff_max: millis("CONSUMER_RETRY_BACKOFF_MAX_MS", Duration::from_secs(5))?,
                max_attempts: var("CONSUMER_MAX_ATTEMPTS", 8)?,
                max_transient_attempts: var("CONSUMER_MAX_TRANSIENT_ATTEMPTS", 40)?,
                max_record_bytes: var("CONSUMER_MAX_RECORD_BYTES", 256 * 1024)?,
                record_only_wait: millis(
                    "CONSUMER_RECORD_ONLY_WAIT_MS",
                    Duration::from_millis(200),
                )?,
            },
            retention: RetentionSettings {
                inbox: millis("INBOX_RETENTION_MS", DEFAULT_INBOX_RETENTION)?,
                idempotency: millis("IDEMPOTENCY_RETENTION_MS", Duration::from_secs(24 * 3600))?,
                interval: millis("RETENTION_INTERVAL_MS", Duration::from_secs(60))?,
                batch: var("RETENTION_BATCH", 1000)?,
                pause: millis("RETENTION_PAUSE_MS", Duration::from_millis(50))?,
            },
        })
    }
}

/// Eight days: one more than Kafka's default topic retention (`log.retention.hours=168`), which
/// the inbox must outlive (see `crate::retention`).
pub const DEFAULT_INBOX_RETENTION: Duration = Duration::from_secs(8 * 24 * 3600);

/// How long consumed events' IDs are kept, and how the job that deletes older ones paces
/// itself.
#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// Must exceed the retention of every consumed topic; checked at start-up.
    pub inbox: Duration,
    /// How long an `Idempotency-Key` is remembered: a retry after this is a new request.
    pub idempotency: Duration,
    /// How often the job looks for expired rows.
    pub interval: Duration,
    /// Rows deleted per transaction.
    pub batch: u64,
    /// Pause between two batches of one pass, so the job never crowds out the consumer.
    pub pause: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// Upper bound on one request, database work included; past it the client gets 503
    /// `timed_out` with `Retry-After`.
    pub request_timeout: Duration,
    /// Largest request body accepted; a larger one is refused with 413 before it is read.
    pub max_body_bytes: usize,
    /// Open connections past which the service stops accepting until one closes
    /// (`crate::listener`).
    pub max_connections: usize,
    /// A second port serving only `/health/*` and `/metrics`, outside that bound, so that a
    /// service at its bound still answers its orchestrator's probes and Prometheus's scrape
    /// (they also stay on the main port). None: no second port.
    pub probe_port: Option<u16>,
    /// How long shutdown waits for in-flight requests, the record in hand and the relay.
    pub shutdown_timeout: Duration,
    /// `/health/live` fails once the consumer or the relay loop has not beaten for this long.
    pub health_stale_after: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: String,
    /// The three services' pools together must fit this 2-core machine: 8 + 6 + 6 by default.
    pub max_connections: u32,
    pub min_connections: u32,
    /// Bounds the first connection at start-up, so a missing database fails fast.
    pub connect_timeout: Duration,
    /// Bounds waiting for a pooled connection; past it a request fails instead of queueing.
    pub acquire_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// A pooled connection idle for this long is pinged before it is lent out, and replaced
    /// if the server no longer answers on it (after a restart or a failover of PostgreSQL, or
    /// a proxy that dropped it). A connection in steady use is lent out without the ping's
    /// round trip.
    pub ping_if_idle_for: Duration,
    /// PostgreSQL's `statement_timeout`, set on every connection.
    pub statement_timeout: Duration,
    /// How long an instance waits at start-up while another one runs the migrations.
    pub migration_lock_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    /// Prepended to every topic name, so a test run can have topics of its own. Empty by default.
    pub topic_prefix: String,
    pub group_id: String,
    /// `group.instance.id` for static membership: set it to a name stable across restarts of
    /// one instance (unique per instance) so a restart does not wait for the session timeout.
    pub group_instance_id: Option<String>,
    /// librdkafka's `message.timeout.ms`: how long a produce may take, retries included.
    pub message_timeout: Duration,
    /// librdkafka's `session.timeout.ms`: how long a silent consumer keeps its partitions.
    pub session_timeout: Duration,
    /// librdkafka's `socket.timeout.ms`.
    pub socket_timeout: Duration,
    /// How long `/health` waits for the broker's metadata.
    pub metadata_timeout: Duration,
    /// librdkafka's `fetch.min.bytes`: the broker answers a consumer's fetch once this much
    /// is waiting, or after `fetch_wait_max`. 1 (the default) answers at once, the lowest
    /// latency; more makes fewer, fuller fetches, which costs the broker and the client less
    /// CPU under load and adds up to `fetch_wait_max` per hop when the load is light.
    pub fetch_min_bytes: u32,
    /// librdkafka's `fetch.wait.max.ms`.
    pub fetch_wait_max: Duration,
    /// librdkafka's `linger.ms` for the relay's producer: how long a record may wait for
    /// others to share its produce request. Each hop of a saga pays it once.
    pub producer_linger: Duration,
    /// Further librdkafka properties for every client (producer, consumer, admin), from
    /// `KAFKA_CLIENT_*` variables: `KAFKA_CLIENT_SECURITY_PROTOCOL=SASL_SSL` sets
    /// `security.protocol`. This is how SASL/SCRAM and TLS are turned on.
    pub client: Vec<(String, String)>,
}

impl KafkaSettings {
    /// The physical topic name for a logical one from `shared_events::topics`.
    pub fn topic(&self, logical: &str) -> String {
        format!("{}{}", self.topic_prefix, logical)
    }
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows claimed and published per transaction.
    pub batch_size: u64,
    /// Fallback wake-up for rows no in-process signal announced (e.g. left by a crash).
    pub poll_interval: Duration,
    /// Pause after a failed batch (Kafka or the database down) before trying again.
    pub retry_backoff: Duration,
    /// How long the relay lets commits accumulate after a wake-up before claiming a batch:
    /// zero favours latency, a few milliseconds favour throughput (fewer, larger batches).
    pub linger: Duration,
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Records are processed in this many parallel lanes; one partition always maps to one
    /// lane, so a partition's (and so a saga's) records stay in order. One by default: a lane
    /// applies what queued up in one transaction, which under load does what parallel lanes
    /// did (keep the database busy while a commit waits for its flush) with fewer commits, and
    /// lanes of one instance no longer deadlock on each other's batches (saga-bench measured
    /// 283 sagas/s with one lane, 42/s with two, at 300/s offered; see the README).
    pub lanes: usize,
    pub retry_backoff_initial: Duration,
    pub retry_backoff_max: Duration,
    /// Attempts at an event that fails permanently before it is parked for an operator.
    /// Transient failures and an unreachable database are retried without limit.
    pub max_attempts: u32,
    /// Tries at an event failing transiently (deadlock, statement timeout) before it is
    /// parked: larger than `max_attempts`, because retrying is usually the cure.
    pub max_transient_attempts: u32,
    /// Larger records go to the dead-letter topic unread.
    pub max_record_bytes: usize,
    /// How long a lane that holds only events its service merely records
    /// ([`crate::consumer::EventHandler::only_records`], such as the steps orders-svc's saga
    /// view shows) waits for an event it acts on, so that both share one transaction. Nobody
    /// waits for such an event, so holding it delays no saga; zero applies it at once.
    pub record_only_wait: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_fall_back_to_defaults() -> Result<(), ConfigError> {
        assert_eq!(var("SAGA_TEST_SURELY_UNSET_VARIABLE", 7u32)?, 7);
        assert_eq!(
            millis(
                "SAGA_TEST_SURELY_UNSET_VARIABLE_MS",
                Duration::from_millis(250)
            )?,
            Duration::from_millis(250)
        );
        Ok(())
    }

    #[test]
    fn blank_values_mean_unset_and_values_are_trimmed() -> Result<(), ConfigError> {
        assert_eq!(parse_or("X", Some(String::new()), 7u32)?, 7);
        assert_eq!(parse_or("X", Some("   ".to_owned()), 7u32)?, 7);
        assert_eq!(parse_or("X", Some(" 12 ".to_owned()), 7u32)?, 12);
        assert_eq!(parse_or("X", None, 7u32)?, 7);
        Ok(())
    }

    #[test]
    fn fractional_milliseconds_keep_their_fraction_and_refuse_what_is_no_duration()
    -> Result<(), ConfigError> {
        let two = Duration::from_millis(2);
        let read = |raw: &str| fractional_millis_or("KAFKA_LINGER_MS", Some(raw.to_owned()), two);
        assert_eq!(read("0.25")?, Duration::from_micros(250));
        assert_eq!(read("5")?, Duration::from_millis(5));
        assert_eq!(read("0")?, Duration::ZERO);
        assert_eq!(fractional_millis_or("KAFKA_LINGER_MS", None, two)?, two);
        for bad in ["-1", "NaN", "inf", "soon"] {
            assert!(read(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn an_invalid_value_is_an_error_naming_the_variable() {
        let error = parse_or("DB_MAX_CONNECTIONS", Some("abc".to_owned()), 7u32);
        assert!(
            matches!(&error, Err(ConfigError { name, value, .. }) if name == "DB_MAX_CONNECTIONS" && value == "abc"),
            "{error:?}"
        );
    }
}
