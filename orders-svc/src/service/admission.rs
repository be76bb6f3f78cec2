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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The sagas in flight, as far as this instance knows, and the bound.
#[derive(Debug)]
pub struct InFlight {
    count: AtomicU64,
    max: u64,
}

/// Refused: the bound is reached.
#[derive(Debug, thiserror::Error)]
#[error("{in_flight} orders are in progress, the most this service takes at once is {max}")]
pub struct Overloaded {
    pub in_flight: u64,
    pub max: u64,
}

impl InFlight {
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(Self {
            count: AtomicU64::new(0),
            max,
        })
    }

    /// Takes a place for one more saga, or refuses. The place is given back when the
    /// [`Admission`] is dropped without [`Admission::keep`], so a failed order frees it.
    pub fn admit(self: &Arc<Self>) -> Result<Admission, Overloaded> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map(|_| Admission {
                in_flight: Arc::clone(self),
                kept: false,
            })
            .map_err(|in_flight| {
                saga_runtime::metrics::REQUESTS_REFUSED.add(1);
                Overloaded {
                    in_flight,
                    max: self.max,
                }
            })
    }

    /// `n` sagas finished.
    pub fn finished(&self, n: u64) {
        // Saturating: a finish whose start an earlier correction already counted out.
        let _ = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                Some(count.saturating_sub(n))
            });
    }

    /// Replaces the count with one taken from the database.
    pub fn correct(&self, counted: u64) {
        self.count.store(counted, Ordering::Release);
    }

    pub fn current(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    pub fn max(&self) -> u64 {
        self.max
    }
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
}
