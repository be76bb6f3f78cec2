//! What a service process knows about its own loops, for `GET /health/live` and
//! `GET /health/ready` ([`crate::http::health_router`]).
//!
//! - **Alive**: the consumer's dispatcher and the outbox relay each beat at least once a
//!   second while they run, waiting included. A loop that has not beaten for
//!   `HEALTH_STALE_AFTER_MS` has ended or hangs, and the process should be restarted. Neither
//!   an unreachable database nor a stopped broker makes a loop stop beating: restarting the
//!   process would not fix those.
//! - **Ready**: neither loop reports trouble (the relay's last batch could not be published,
//!   or the consumer's client failed fatally and is being replaced), and the database and the
//!   broker answer. Trouble clears with the loop's next success.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A loop whose health the process reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    Consumer,
    Relay,
}

impl Loop {
    const ALL: [Loop; 2] = [Loop::Consumer, Loop::Relay];

    fn name(self) -> &'static str {
        match self {
            Loop::Consumer => "consumer",
            Loop::Relay => "relay",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How often a loop beats while it waits.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct LoopState {
    /// Milliseconds since `Health::started` at the last beat; 0 before the first.
    last_beat: AtomicU64,
    trouble: Mutex<Option<String>>,
}

#[derive(Debug)]
struct State {
    started: Instant,
    loops: [LoopState; 2],
}

/// The loops' shared health record. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Health(Arc<State>);

impl Default for Health {
    fn default() -> Self {
        Self(Arc::new(State {
            started: Instant::now(),
            loops: Default::default(),
        }))
    }
}

/// One loop as `/health/live` and `/health/ready` describe it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LoopReport {
    pub name: &'static str,
    /// Milliseconds since its last beat, or `None` if it never beat.
    pub since_last_beat_ms: Option<u64>,
    pub alive: bool,
    pub trouble: Option<String>,
}

impl Health {
    /// The loop is running.
    pub fn beat(&self, which: Loop) {
        let now = self.elapsed_ms().max(1);
        self.state(which).last_beat.store(now, Ordering::Relaxed);
    }

    /// The loop runs but cannot do its work: the process is not ready until it can.
    pub fn trouble(&self, which: Loop, why: impl std::fmt::Display) {
        self.beat(which);
        *self.trouble_of(which) = Some(why.to_string());
    }

    /// The loop did its work: any trouble is over.
    pub fn working(&self, which: Loop) {
        self.beat(which);
        let mut trouble = self.trouble_of(which);
        if trouble.is_some() {
            tracing::info!(part = which.name(), "working again");
            *trouble = None;
        }
    }

    /// Every loop, with whether it beat within `stale_after`.
    pub fn report(&self, stale_after: Duration) -> Vec<LoopReport> {
        let now = self.elapsed_ms();
        let stale_after = u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX);
        Loop::ALL
            .iter()
            .map(|&which| {
                let last = self.state(which).last_beat.load(Ordering::Relaxed);
                let since = (last > 0).then(|| now.saturating_sub(last));
                LoopReport {
                    name: which.name(),
                    since_last_beat_ms: since,
                    alive: since.is_some_and(|since| since <= stale_after),
                    trouble: self.trouble_of(which).clone(),
                }
            })
            .collect()
    }

    fn state(&self, which: Loop) -> &LoopState {
        &self.0.loops[which.index()]
    }

    /// A loop that panicked while holding it leaves it poisoned, not wrong: each update is one
    /// assignment.
    fn trouble_of(&self, which: Loop) -> std::sync::MutexGuard<'_, Option<String>> {
        self.state(which)
            .trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_alive_only_after_a_recent_beat_and_trouble_clears_on_success() {
        let health = Health::default();
        let report = health.report(Duration::from_secs(30));
        assert!(report.iter().all(|part| !part.alive), "no beat yet");

        health.beat(Loop::Consumer);
        health.trouble(Loop::Relay, "kafka refused the batch");
        let report = health.report(Duration::from_secs(30));
        assert!(report.iter().all(|part| part.alive));
        assert_eq!(
            report[1].trouble.as_deref(),
            Some("kafka refused the batch")
        );
        assert_eq!(report[0].trouble, None);

        health.working(Loop::Relay);
        assert_eq!(health.report(Duration::from_secs(30))[1].trouble, None);

        std::thread::sleep(Duration::from_millis(20));
        let stale = health.report(Duration::from_millis(5));
        assert!(stale.iter().all(|part| !part.alive), "{stale:?}");
    }
}
