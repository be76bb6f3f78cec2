//! Admission control. Past its capacity the stack can only queue, and a queue makes every saga
//! late; so orders-svc refuses a new order while too many sagas are in flight (placed, not yet
//! confirmed, failed or cancelled), and the client gets 503 with `Retry-After`. A refused order
//! creates nothing.
//!
//! The count lives in memory: an order placed adds one, an order finished here takes one off.
//! It is not exact (another instance's orders, or its finishes on partitions this instance
//! does not consume, a transaction that rolls back after the count moved), so a job recounts
//! the pending orders in the database every `ORDERS_IN_FLIGHT_RECOUNT_MS` and corrects it. No
//! request counts rows. With several instances the bound is the service's, not each one's.
//!
//! The bound is a count, but what a client feels is a wait: by Little's law a count is worth
//! `count ÷ completion rate` of waiting, and the completion rate is the machine's. So the count
//! in force (the *limit*) follows the sagas' own durations. At each recount the median
//! duration of the sagas finished here since the last one is compared with
//! `ORDERS_ADMISSION_TARGET_WAIT_MS`: longer while the limit binds, and the limit shrinks in
//! proportion (by a tenth at most per step); shorter, and it grows back (by 2% at most per
//! step) up to `ORDERS_MAX_IN_FLIGHT`. On a machine fast enough for the ceiling the limit
//! stays there; on a slower one it settles where the sagas take about the target. Each
//! instance moves its own limit against the service-wide count; they need not agree (two
//! instances under saga-bench settled at 100 and 128), and the higher one is the service's
//! bound in effect.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The lowest the limit goes: enough sagas at once for placement's group commit to fill its
/// batches, so that a slow stretch does not throttle the stack below what it can do.
pub const LIMIT_FLOOR: u64 = 16;
/// The most one adjustment shrinks the limit by, and grows it by. The durations measured are
/// those of sagas admitted a saga's duration ago (several adjustments), so each step reacts
/// to old news: with steps of a fifth and a tenth, saga-bench saw the limit swing and the
/// p99 of accepted orders reach 1.45 s against a target of 0.5 s. Growth is the slower, so
/// that it takes longer than that delay to undo a cut.
const MOST_SHRUNK: f64 = 0.9;
const MOST_GROWN: f64 = 1.02;
/// The most durations kept between two adjustments. Their median is as good a guide as all
/// of them, and a recount job that cannot reach the database for a while must not let the
/// list grow with every saga finished meanwhile.
const MOST_DURATIONS: usize = 4096;

/// The sagas in flight, as far as this instance knows, and the bound.
#[derive(Debug)]
pub struct InFlight {
    count: AtomicU64,
    /// The bound in force: `max`, or less while sagas take longer than `target_wait`.
    limit: AtomicU64,
    max: u64,
    target_wait: Option<Duration>,
    /// How long each saga finished here since the last adjustment took.
    durations: Mutex<Vec<Duration>>,
}

/// Refused: the bound is reached.
#[derive(Debug, thiserror::Error)]
#[error("{in_flight} orders are in progress, the most this service takes at once is {max} now")]
pub struct Overloaded {
    pub in_flight: u64,
    pub max: u64,
}

impl InFlight {
    /// A fixed bound of `max`.
    pub fn new(max: u64) -> Arc<Self> {
        Self::with_target_wait(max, None)
    }

    /// A bound of at most `max`, lowered while the sagas take longer than `target_wait`.
    pub fn with_target_wait(max: u64, target_wait: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            count: AtomicU64::new(0),
            limit: AtomicU64::new(max),
            max,
            target_wait: target_wait.filter(|wait| !wait.is_zero()),
            durations: Mutex::default(),
        })
    }

    /// Takes a place for one more saga, or refuses. The place is given back when the
    /// [`Admission`] is dropped without [`Admission::keep`], so a failed order frees it.
    pub fn admit(self: &Arc<Self>) -> Result<Admission, Overloaded> {
        let limit = self.limit();
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map(|_| Admission {
                in_flight: Arc::clone(self),
                kept: false,
            })
            .map_err(|in_flight| {
                saga_runtime::metrics::REQUESTS_REFUSED.add(1);
                Overloaded {
                    in_flight,
                    max: limit,
                }
            })
    }

    /// `n` places given back without a saga finishing.
    pub fn finished(&self, n: u64) {
        // Saturating: a finish whose start an earlier correction already counted out.
        let _ = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                Some(count.saturating_sub(n))
            });
    }

    /// A saga finished here after `took`: its place is free, and its duration counts at the
    /// next adjustment.
    pub fn saga_finished(&self, took: Duration) {
        self.finished(1);
        if self.target_wait.is_some()
            && let Ok(mut durations) = self.durations.lock()
            && durations.len() < MOST_DURATIONS
        {
            durations.push(took);
        }
    }

    /// Replaces the count with one taken from the database, and moves the limit by the
    /// durations of the sagas finished since the last correction.
    pub fn correct(&self, counted: u64) {
        self.count.store(counted, Ordering::Release);
        let Some(target_wait) = self.target_wait else {
            return;
        };
        let median = match self.durations.lock() {
            Ok(mut durations) => median(&mut durations),
            Err(_) => None,
        };
        let limit = next_limit(self.limit(), self.max, target_wait, median, counted);
        self.limit.store(limit, Ordering::Release);
    }

    pub fn current(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// The bound in force now.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }
}

/// The median of `durations`, which it empties; `None` when there are none.
fn median(durations: &mut Vec<Duration>) -> Option<Duration> {
    if durations.is_empty() {
        return None;
    }
    let middle = durations.len() / 2;
    let (_, median, _) = durations.select_nth_unstable(middle);
    let median = *median;
    durations.clear();
    Some(median)
}

/// The limit after `limit`, given the median duration of the sagas finished since the last
/// step and the count in flight now. With none finished there is nothing to go by, and the
/// limit stays: an idle stack has no reason to move it, and a stalled one (a service down)
/// must not be offered more. It shrinks only while it binds (the count is within a quarter of
/// it): sagas that were slow with room to spare were held up by something else than a queue
/// admission let in, such as an outage whose backlog is now finishing, and refusing new
/// orders would not make them faster.
fn next_limit(
    limit: u64,
    max: u64,
    target_wait: Duration,
    median: Option<Duration>,
    in_flight: u64,
) -> u64 {
    let Some(median) = median else {
        return limit.min(max);
    };
    let binding = in_flight.saturating_mul(4) >= limit.saturating_mul(3);
    let most_shrunk = if binding { MOST_SHRUNK } else { 1.0 };
    let ratio =
        (target_wait.as_secs_f64() / median.as_secs_f64().max(1e-6)).clamp(most_shrunk, MOST_GROWN);
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let scaled = (limit as f64 * ratio).round() as u64;
    // Growing, always by one at least: from a small limit 2% rounds to nothing.
    let next = if ratio > 1.0 {
        scaled.max(limit + 1)
    } else {
        scaled
    };
    next.clamp(LIMIT_FLOOR.min(max), max)
}

/// A place taken by [`InFlight::admit`].
#[derive(Debug)]
pub struct Admission {
    in_flight: Arc<InFlight>,
    kept: bool,
}

impl Admission {
    /// The order was placed: its saga is in flight until it finishes.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.kept {
            self.in_flight.finished(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_past_the_bound_are_refused_until_one_finishes() {
        let in_flight = InFlight::new(2);
        in_flight.admit().map(Admission::keep).ok();
        in_flight.admit().map(Admission::keep).ok();
        assert_eq!(in_flight.current(), 2);
        let refused = in_flight.admit().err();
        assert_eq!(refused.map(|o| (o.in_flight, o.max)), Some((2, 2)));
        in_flight.finished(1);
        assert!(in_flight.admit().is_ok());
    }

    #[test]
    fn a_place_not_kept_is_given_back() {
        let in_flight = InFlight::new(1);
        let admission = in_flight.admit();
        assert!(admission.is_ok());
        drop(admission);
        assert_eq!(in_flight.current(), 0);
        assert!(in_flight.admit().is_ok());
    }

    #[test]
    fn a_correction_replaces_the_count_and_finishing_never_goes_below_zero() {
        let in_flight = InFlight::new(10);
        in_flight.correct(7);
        assert_eq!(in_flight.current(), 7);
        in_flight.finished(9);
        assert_eq!(in_flight.current(), 0);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sagas_slower_than_the_target_shrink_the_limit_by_a_tenth_at_most() {
        assert_eq!(next_limit(150, 150, ms(500), Some(ms(520)), 150), 144);
        assert_eq!(next_limit(150, 150, ms(500), Some(ms(5_000)), 113), 135);
    }

    #[test]
    fn slow_sagas_with_room_to_spare_leave_the_limit_alone() {
        assert_eq!(next_limit(150, 150, ms(500), Some(ms(12_000)), 30), 150);
        assert_eq!(next_limit(100, 150, ms(500), Some(ms(12_000)), 74), 100);
    }

    #[test]
    fn sagas_faster_than_the_target_grow_it_back_up_to_the_ceiling() {
        assert_eq!(next_limit(100, 150, ms(500), Some(ms(50)), 100), 102);
        assert_eq!(next_limit(149, 150, ms(500), Some(ms(50)), 0), 150);
        assert_eq!(next_limit(16, 150, ms(500), Some(ms(499)), 16), 17);
    }

    #[test]
    fn with_no_saga_finished_the_limit_stays_and_it_never_leaves_its_floor() {
        assert_eq!(next_limit(40, 150, ms(500), None, 40), 40);
        assert_eq!(
            next_limit(LIMIT_FLOOR, 150, ms(500), Some(ms(60_000)), 16),
            LIMIT_FLOOR
        );
        assert_eq!(next_limit(8, 8, ms(500), Some(ms(60_000)), 8), 8);
    }

    #[test]
    fn the_median_of_a_window_ignores_a_few_stuck_sagas() {
        let mut durations = vec![ms(100), ms(120), ms(30_000), ms(110), ms(25_000)];
        assert_eq!(median(&mut durations), Some(ms(120)));
        assert!(durations.is_empty());
        assert_eq!(median(&mut durations), None);
    }

    #[test]
    fn slow_sagas_lower_the_bound_admission_uses_and_fast_ones_restore_it() {
        let in_flight = InFlight::with_target_wait(20, Some(ms(500)));
        for _ in 0..20 {
            in_flight.admit().map(Admission::keep).ok();
        }
        for _ in 0..3 {
            in_flight.saga_finished(ms(2_000));
        }
        in_flight.correct(17);
        assert_eq!(in_flight.limit(), 18);
        in_flight.admit().map(Admission::keep).ok();
        assert!(
            in_flight.admit().is_err(),
            "18 in flight against a limit of 18"
        );
        for _ in 0..3 {
            in_flight.saga_finished(ms(2_000));
        }
        in_flight.correct(17);
        assert_eq!(in_flight.limit(), 16);
        assert!(
            in_flight.admit().is_err(),
            "17 in flight against a limit of 16"
        );
        in_flight.saga_finished(ms(40));
        in_flight.correct(10);
        assert_eq!(in_flight.limit(), 17);
        assert!(in_flight.admit().is_ok());
    }

    #[test]
    fn a_window_keeps_a_bounded_number_of_durations() {
        let in_flight = InFlight::with_target_wait(30, Some(ms(500)));
        for _ in 0..MOST_DURATIONS + 10 {
            in_flight.saga_finished(ms(10));
        }
        assert_eq!(
            in_flight.durations.lock().map(|d| d.len()).ok(),
            Some(MOST_DURATIONS)
        );
    }

    #[test]
    fn without_a_target_the_bound_is_fixed() {
        let in_flight = InFlight::with_target_wait(30, Some(Duration::ZERO));
        in_flight.saga_finished(ms(60_000));
        in_flight.correct(0);
        assert_eq!(in_flight.limit(), 30);
    }
}
