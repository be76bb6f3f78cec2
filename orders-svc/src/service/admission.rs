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
//! in force (the *limit*) follows the sagas' own durations. Every two target waits (a
//! *window*, checked at each recount) the median duration of the sagas finished here in the
//! window is compared with `ORDERS_ADMISSION_TARGET_WAIT_MS`, and the limit moves by their
//! ratio: down while the limit binds and the sagas were slower, up to `ORDERS_MAX_IN_FLIGHT`
//! while they were faster, by half at most down and a quarter at most up per window. On a
//! machine fast enough for the ceiling the limit stays there; on a slower one it settles where
//! the median saga takes about the target.
//!
//! The limit is the service's, kept in its database (`admission_bound`): every instance adopts
//! it at each recount, and a step is taken only if no instance took one in the last window,
//! so N instances step as often as one. With a limit each, they drifted apart (17 and 121 at
//! the end of one saga-bench run), and an instance whose limit fell below the service's count
//! refused all its orders, however much room the service had.

use sea_orm::ConnectionTrait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ServiceError;
use crate::repo;

/// The lowest the limit goes: enough sagas at once for placement's group commit to fill its
/// batches, so that a slow stretch does not throttle the stack below what it can do.
pub const LIMIT_FLOOR: u64 = 16;
/// The most one window shrinks the limit by, and grows it by. The step is proportional (the
/// target over the median, as Little's law has it for a fixed completion rate) and these only
/// bound it, so that one odd window cannot swing the limit far. Up and down are about even
/// (in ratio, not in count) on purpose: with steps of a tenth down and 2% up every recount, the
/// noise of 100 ms windows alone pushed the limit down: the median saga settled at 410–450 ms
/// against a target of 500, and two instances under saga-bench sat at 50–130 for a whole run.
const MOST_SHRUNK: f64 = 0.5;
const MOST_GROWN: f64 = 1.25;
/// The most durations kept in one window. Their median is as good a guide as all
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
    /// The sagas finished here in the current window.
    window: Mutex<Window>,
}

/// One window of adjustment: how long each saga finished here in it took.
#[derive(Debug)]
struct Window {
    started: Instant,
    durations: Vec<Duration>,
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
            window: Mutex::new(Window {
                started: Instant::now(),
                durations: Vec::new(),
            }),
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

    /// A saga finished here after `took`: its place is free, and its duration counts in the
    /// window.
    pub fn saga_finished(&self, took: Duration) {
        self.finished(1);
        if self.target_wait.is_some()
            && let Ok(mut window) = self.window.lock()
            && window.durations.len() < MOST_DURATIONS
        {
            window.durations.push(took);
        }
    }

    /// Replaces the count with one taken from the database, and the limit with the service's
    /// (within this instance's floor and ceiling), if there is a target and the service has
    /// one yet.
    fn adopt(&self, counted: u64, service_limit: Option<u64>) {
        self.count.store(counted, Ordering::Release);
        if self.target_wait.is_some()
            && let Some(limit) = service_limit
        {
            self.limit.store(
                limit.clamp(LIMIT_FLOOR.min(self.max), self.max),
                Ordering::Release,
            );
        }
    }

    /// Once a window has passed: the limit the sagas finished in it call for, if it differs
    /// from the one in force. It is proposed, not applied: the caller applies it
    /// ([`InFlight::set_limit`]) once the service's limit has taken it.
    fn step(&self, now: Instant) -> Option<Step> {
        let target_wait = self.target_wait?;
        // A window of two target waits: a step acts on the sagas admitted from then on, which
        // finish about a target wait later, so each window sees the last step's effect and
        // its median is taken over enough sagas to be steady.
        let window_length = target_wait * 2;
        let (median, sagas) = match self.window.lock() {
            Ok(mut window) if now.duration_since(window.started) >= window_length => {
                window.started = now;
                let sagas = window.durations.len();
                (median(&mut window.durations), sagas)
            }
            _ => return None,
        };
        let (before, in_flight) = (self.limit(), self.current());
        let limit = next_limit(before, self.max, target_wait, median, in_flight);
        tracing::debug!(
            sagas,
            median_ms = median.map(|m| m.as_millis()),
            in_flight,
            before,
            limit,
            "admission window"
        );
        // A tenth of slack, for the recount's period and the instances' windows' phases.
        (limit != before).then(|| Step {
            limit,
            not_within: window_length.mul_f64(0.9),
        })
    }

    /// Puts `limit` in force here (the service's limit has taken it).
    fn set_limit(&self, limit: u64) {
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

/// A move of the limit, to be taken unless an instance took one within `not_within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    limit: u64,
    not_within: Duration,
}

/// Takes the count of sagas in flight and the service's limit from the database and adopts
/// them; once a window has passed, moves the service's limit by the sagas finished here in it,
/// unless another instance moved it within the window. The count, for the metrics.
pub async fn recount_in_flight<C: ConnectionTrait>(
    db: &C,
    in_flight: &InFlight,
) -> Result<u64, ServiceError> {
    let census = repo::admission::census(db).await?;
    in_flight.adopt(census.in_flight, census.bound);
    if let Some(step) = in_flight.step(Instant::now())
        && repo::admission::step_bound(db, step.limit, step.not_within).await?
    {
        in_flight.set_limit(step.limit);
    }
    Ok(census.in_flight)
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

/// The limit after `limit`, given the median duration of the sagas finished in the last
/// window and the count in flight now. With none finished there is nothing to go by, and the
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
    // Growing, always by one at least: from a small limit a little rounds to nothing.
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
        in_flight.adopt(7, None);
        assert_eq!(in_flight.current(), 7);
        in_flight.finished(9);
        assert_eq!(in_flight.current(), 0);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A recount of the only instance at `now`: its steps always land.
    fn recount_alone(in_flight: &InFlight, counted: u64, now: Instant) {
        in_flight.adopt(counted, None);
        if let Some(step) = in_flight.step(now) {
            in_flight.set_limit(step.limit);
        }
    }

    #[test]
    fn the_services_limit_is_adopted_within_this_instances_floor_and_ceiling() {
        let in_flight = InFlight::with_target_wait(150, Some(ms(400)));
        in_flight.adopt(30, Some(90));
        assert_eq!((in_flight.current(), in_flight.limit()), (30, 90));
        in_flight.adopt(30, Some(600));
        assert_eq!(in_flight.limit(), 150, "another instance's higher ceiling");
        in_flight.adopt(30, Some(3));
        assert_eq!(in_flight.limit(), LIMIT_FLOOR);
        in_flight.adopt(30, None);
        assert_eq!(
            in_flight.limit(),
            LIMIT_FLOOR,
            "no limit read: the last one stays"
        );

        let fixed = InFlight::new(150);
        fixed.adopt(30, Some(90));
        assert_eq!(fixed.limit(), 150, "without a target the bound is fixed");
    }

    #[test]
    fn a_step_is_proposed_once_a_window_has_passed_and_only_if_the_limit_moves() {
        let in_flight = InFlight::with_target_wait(100, Some(ms(400)));
        let start = Instant::now();
        in_flight.adopt(100, None);
        in_flight.saga_finished(ms(800));
        assert_eq!(in_flight.step(start + ms(700)), None, "inside the window");
        assert_eq!(
            in_flight.step(start + ms(800)),
            Some(Step {
                limit: 50,
                not_within: ms(720)
            })
        );
        assert_eq!(in_flight.limit(), 100, "proposed, not applied");
        in_flight.saga_finished(ms(400));
        assert_eq!(in_flight.step(start + ms(1_600)), None, "at the target");
    }

    #[test]
    fn sagas_slower_than_the_target_shrink_the_limit_in_proportion_by_half_at_most() {
        assert_eq!(next_limit(150, 150, ms(500), Some(ms(520)), 150), 144);
        assert_eq!(next_limit(150, 150, ms(500), Some(ms(750)), 150), 100);
        assert_eq!(next_limit(150, 150, ms(500), Some(ms(5_000)), 113), 75);
    }

    #[test]
    fn slow_sagas_with_room_to_spare_leave_the_limit_alone() {
        assert_eq!(next_limit(150, 150, ms(500), Some(ms(12_000)), 30), 150);
        assert_eq!(next_limit(100, 150, ms(500), Some(ms(12_000)), 74), 100);
    }

    #[test]
    fn sagas_faster_than_the_target_grow_it_back_by_a_quarter_at_most_up_to_the_ceiling() {
        assert_eq!(next_limit(100, 150, ms(500), Some(ms(50)), 100), 125);
        assert_eq!(next_limit(100, 150, ms(500), Some(ms(450)), 100), 111);
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
        let start = Instant::now();
        let at = |n: u64| start + ms(n);
        for _ in 0..20 {
            in_flight.admit().map(Admission::keep).ok();
        }
        for _ in 0..3 {
            in_flight.saga_finished(ms(600));
        }
        // Inside the window only the count is corrected.
        recount_alone(&in_flight, 17, at(500));
        assert_eq!((in_flight.current(), in_flight.limit()), (17, 20));
        recount_alone(&in_flight, 17, at(1_000));
        assert_eq!(in_flight.limit(), 17);
        assert!(
            in_flight.admit().is_err(),
            "17 in flight against a limit of 17"
        );
        for _ in 0..3 {
            in_flight.saga_finished(ms(2_000));
        }
        recount_alone(&in_flight, 17, at(2_000));
        assert_eq!(in_flight.limit(), LIMIT_FLOOR);
        in_flight.saga_finished(ms(400));
        recount_alone(&in_flight, 10, at(3_000));
        assert_eq!(in_flight.limit(), 20);
        assert!(in_flight.admit().is_ok());
    }

    #[test]
    fn a_window_with_no_saga_finished_leaves_the_limit_alone() {
        let in_flight = InFlight::with_target_wait(20, Some(ms(500)));
        let start = Instant::now();
        in_flight.saga_finished(ms(5_000));
        recount_alone(&in_flight, 20, start + ms(1_000));
        assert_eq!(in_flight.limit(), 16);
        recount_alone(&in_flight, 20, start + ms(2_000));
        assert_eq!(in_flight.limit(), 16);
    }

    #[test]
    fn a_window_keeps_a_bounded_number_of_durations() {
        let in_flight = InFlight::with_target_wait(30, Some(ms(500)));
        for _ in 0..MOST_DURATIONS + 10 {
            in_flight.saga_finished(ms(10));
        }
        assert_eq!(
            in_flight.window.lock().map(|w| w.durations.len()).ok(),
            Some(MOST_DURATIONS)
        );
    }

    #[test]
    fn without_a_target_the_bound_is_fixed() {
        let in_flight = InFlight::with_target_wait(30, Some(Duration::ZERO));
        in_flight.saga_finished(ms(60_000));
        recount_alone(&in_flight, 0, Instant::now() + ms(60_000));
        assert_eq!(in_flight.limit(), 30);
    }
}
