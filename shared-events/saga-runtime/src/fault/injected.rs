//! The fault hooks themselves, compiled only with the `fault-injection` feature. Even then
//! they do nothing unless configured through the environment:
//!
//! | Variable | Effect |
//! |---|---|
//! | `FAULT_CRASH_AT` | abort the process at one [`CrashPoint`] (e.g. `after_commit_before_publish`) |
//! | `FAULT_CRASH_AFTER` | pass the crash point this many times first (default 0: the first time) |
//! | `FAULT_DB_FAILURES` | make the first N consumed events' transactions fail in PostgreSQL |
//! | `FAULT_DB_FAILURE` | how they fail: `serialization` (default), `deadlock` or `timeout` |
//! | `FAULT_FAIL_EVENT_TYPE` | make every event of this type fail with a non-transient database error |
//! | `FAULT_PRODUCER_FATAL` | report the Kafka producer as fatally failed this many times, as librdkafka would |
//!
//! A crash is `std::process::abort()`: no destructor runs, nothing is flushed, exactly as if
//! the process had been killed at that line. It leaves no core file, whatever `ulimit -c`
//! says: the core files CI keeps are for crashes nobody planned.

use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use sea_orm::{ConnectionTrait, DbErr};

use super::CrashPoint;
use crate::config::{ConfigError, var};

impl FromStr for CrashPoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "after_commit_before_publish" => Ok(CrashPoint::AfterCommitBeforePublish),
            "after_publish_before_mark" => Ok(CrashPoint::AfterPublishBeforeMark),
            "after_consume_commit_before_offset" => Ok(CrashPoint::AfterConsumeCommitBeforeOffset),
            "mid_batch" => Ok(CrashPoint::MidBatch),
            other => Err(format!("unknown crash point {other:?}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbFailure {
    Serialization,
    Deadlock,
    Timeout,
}

impl FromStr for DbFailure {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "serialization" => Ok(DbFailure::Serialization),
            "deadlock" => Ok(DbFailure::Deadlock),
            "timeout" => Ok(DbFailure::Timeout),
            other => Err(format!("unknown database failure {other:?}")),
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    crash_at: Option<CrashPoint>,
    crash_after: u64,
    crash_hits: AtomicU64,
    db_failures_left: AtomicU64,
    db_failure: Option<DbFailure>,
    fail_event_type: Option<String>,
    producer_fatal_left: AtomicU64,
}

static FAULTS: OnceLock<Faults> = OnceLock::new();

/// Reads the fault variables once, at start-up. Without them every hook is a no-op.
pub fn init_from_env() -> Result<(), ConfigError> {
    let crash_at = optional::<CrashPoint>("FAULT_CRASH_AT")?;
    let db_failure = optional::<DbFailure>("FAULT_DB_FAILURE")?.unwrap_or(DbFailure::Serialization);
    let faults = Faults {
        crash_at,
        crash_after: var("FAULT_CRASH_AFTER", 0u64)?,
        crash_hits: AtomicU64::new(0),
        db_failures_left: AtomicU64::new(var("FAULT_DB_FAILURES", 0u64)?),
        db_failure: Some(db_failure),
        fail_event_type: optional::<String>("FAULT_FAIL_EVENT_TYPE")?,
        producer_fatal_left: AtomicU64::new(var("FAULT_PRODUCER_FATAL", 0u64)?),
    };
    if faults.crash_at.is_some()
        || faults.fail_event_type.is_some()
        || faults.db_failures_left.load(Ordering::Relaxed) > 0
        || faults.producer_fatal_left.load(Ordering::Relaxed) > 0
    {
        tracing::warn!(?faults, "fault injection is enabled");
    }
    // A second call (tests building several apps in one process) keeps the first settings.
    let _ = FAULTS.set(faults);
    Ok(())
}

fn optional<T>(name: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value
                .trim()
                .parse()
                .map(Some)
                .map_err(|e: T::Err| ConfigError {
                    name: name.to_owned(),
                    value,
                    reason: e.to_string(),
                })
        }
        _ => Ok(None),
    }
}

/// Aborts the process if `point` is the configured crash point and its turn has come.
pub fn crash_point(point: CrashPoint) {
    let Some(faults) = FAULTS.get() else { return };
    if faults.crash_at != Some(point) {
        return;
    }
    if faults.crash_hits.fetch_add(1, Ordering::SeqCst) >= faults.crash_after {
        tracing::error!(?point, "fault injection: crashing now");
        // A crash on purpose needs no core file, and with core files on (as CI has them, to
        // read real crashes) each would write the whole address space: over a gigabyte for
        // a debug build, several times a run, slowing the other tests' disks.
        let no_core = Rlimit {
            current: Some(0),
            ..getrlimit(Resource::Core)
        };
        let _ = setrlimit(Resource::Core, no_core);
        std::process::abort();
    }
}

/// Fails the caller's transaction with a real PostgreSQL error while injected failures last,
/// or always for the configured event type.
pub async fn inject_db_failure<C: ConnectionTrait>(db: &C, event_type: &str) -> Result<(), DbErr> {
    let Some(faults) = FAULTS.get() else {
        return Ok(());
    };
    if faults.fail_event_type.as_deref() == Some(event_type) {
        // 22023 invalid_parameter_value: an error no retry can fix.
        db.execute_unprepared("DO $$ BEGIN RAISE EXCEPTION 'injected permanent failure' USING ERRCODE = '22023'; END $$")
            .await?;
    }
    let took = faults
        .db_failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if took.is_err() {
        return Ok(());
    }
    let sql = match faults.db_failure {
        Some(DbFailure::Deadlock) => {
            "DO $$ BEGIN RAISE EXCEPTION 'injected deadlock' USING ERRCODE = 'deadlock_detected'; END $$"
        }
        Some(DbFailure::Timeout) => "SET LOCAL statement_timeout = 10; SELECT pg_sleep(1)",
        Some(DbFailure::Serialization) | None => {
            "DO $$ BEGIN RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = 'serialization_failure'; END $$"
        }
    };
    db.execute_unprepared(sql).await?;
    Ok(())
}

/// A fatal error for the producer while injected ones last: the producer is then treated as
/// librdkafka's fatally failed clients are.
pub fn injected_producer_fatal() -> Option<String> {
    let faults = FAULTS.get()?;
    faults
        .producer_fatal_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .ok()
        .map(|_| "injected fatal producer error".to_owned())
}
