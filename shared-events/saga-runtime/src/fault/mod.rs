//! Fault hooks for the failure-injection suite (`e2e-tests/tests/faults.rs`).
//!
//! They exist only in builds with the `fault-injection` feature, which `deploy/stack test`
//! turns on and nothing else does: in any other build every hook below is an empty inline
//! function, and the binary holds no trace of them (no `FAULT_*` variable is ever read). This
//! is the shape of tikv/fail-rs's `fail_point!`. The hooks sit where the protocol already has
//! a step; none changes the order of the code around it.

#[cfg(feature = "fault-injection")]
mod injected;

#[cfg(feature = "fault-injection")]
pub use injected::{crash_point, init_from_env, inject_db_failure, injected_producer_fatal};

/// A dangerous point in the outbox/inbox protocol, where a crash must lose nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// A unit of work committed its change and outbox rows; the relay has not published them.
    AfterCommitBeforePublish,
    /// Kafka acknowledged a batch; the relay has not committed its rows' deletion.
    AfterPublishBeforeMark,
    /// A consumed event's transaction committed; its offset is not stored.
    AfterConsumeCommitBeforeOffset,
    /// The relay is in the middle of a batch: some records sent, none acknowledged as a whole.
    MidBatch,
}

/// Without the feature: nothing to read.
#[cfg(not(feature = "fault-injection"))]
pub fn init_from_env() -> Result<(), crate::config::ConfigError> {
    Ok(())
}

/// Without the feature: never crashes.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_point(_point: CrashPoint) {}

/// Without the feature: never fails.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub async fn inject_db_failure<C: sea_orm::ConnectionTrait>(
    _db: &C,
    _event_type: &str,
) -> Result<(), sea_orm::DbErr> {
    Ok(())
}

/// Without the feature: the producer is only as failed as librdkafka says.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn injected_producer_fatal() -> Option<String> {
    None
}
