//! One saga's events as a timeline: in time order, each with the service that produced it,
//! the time since the saga's previous event (the hop) and what it meant (a success, a failure
//! or a compensation), and how the saga ended. Pure: the `saga` CLI builds it from Kafka and
//! orders-svc from its saga view, and both show the same thing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::events::{FailedStatus, SagaEvent};

/// What an event means for its saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A step done: the saga moves forward.
    Success,
    /// A step that could not be done, or the saga's failed end.
    Failure,
    /// A step that undoes an earlier one (a refund).
    Compensation,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Compensation => "compensation",
        }
    }
}

impl SagaEvent {
    /// What this event means for its saga.
    pub fn outcome(&self) -> Outcome {
        match self {
            SagaEvent::PaymentRefunded(_) => Outcome::Compensation,
            SagaEvent::OrderCreated(_)
            | SagaEvent::PaymentSucceeded(_)
            | SagaEvent::InventoryReserved(_)
            | SagaEvent::OrderConfirmed(_)
            | SagaEvent::ProductUpserted(_) => Outcome::Success,
            SagaEvent::PaymentFailed(_)
            | SagaEvent::InventoryReservationFailed(_)
            | SagaEvent::OrderFailed(_)
            | SagaEvent::OrderCancelled(_) => Outcome::Failure,
        }
    }

    /// The order's terminal status, if this event ends its saga: `CONFIRMED`,
    /// `FAILED_PAYMENT`, `FAILED_INVENTORY` or `CANCELLED`, as `GET /orders/{id}` says.
    pub fn terminal_status(&self) -> Option<&'static str> {
        match self {
            SagaEvent::OrderConfirmed(_) => Some("CONFIRMED"),
            SagaEvent::OrderFailed(failed) => Some(match failed.status {
                FailedStatus::FailedPayment => "FAILED_PAYMENT",
                FailedStatus::FailedInventory => "FAILED_INVENTORY",
            }),
            SagaEvent::OrderCancelled(_) => Some("CANCELLED"),
            _ => None,
        }
    }
}

/// One event of a saga's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Step {
    /// The event's type, e.g. `PaymentSucceeded`.
    pub step: &'static str,
    /// The service that produced it.
    pub service: String,
    /// When it happened (the envelope's `time`, set by the producing transaction).
    pub time: DateTime<Utc>,
    /// Since the saga's previous event; `None` for the first.
    #[serde(rename = "hop_ms", serialize_with = "millis")]
    #[schema(value_type = Option<f64>)]
    pub hop: Option<Duration>,
    pub outcome: Outcome,
    pub event_id: Uuid,
}

/// A saga's events in order and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub saga_id: Uuid,
    pub steps: Vec<Step>,
    /// The terminal status, once an event ended the saga.
    pub terminal: Option<&'static str>,
    /// From the first event to the one that ended the saga.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Option<Duration>,
}

fn millis<S: serde::Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(duration) => serializer.serialize_f64(duration.as_secs_f64() * 1000.0),
        None => serializer.serialize_none(),
    }
}

impl Timeline {
    /// The timeline of `saga_id` from its events, in any order and with duplicates (the relay
    /// publishes at least once): sorted by time, then by ID (UUID v7, so by creation), each
    /// event once. Events of other sagas are left out.
    pub fn of<'a>(saga_id: Uuid, events: impl IntoIterator<Item = &'a Envelope>) -> Timeline {
        let steps = events
            .into_iter()
            .filter(|event| event.sagaid == Some(saga_id))
            .map(|event| {
                (
                    Step {
                        step: event.event_type(),
                        service: event.source.clone(),
                        time: event.time,
                        hop: None,
                        outcome: event.event.outcome(),
                        event_id: event.id,
                    },
                    event.event.terminal_status(),
                )
            })
            .collect();
        Timeline::from_steps(saga_id, steps)
    }

    /// The timeline from steps read elsewhere (a saga view), each with the terminal status it
    /// set, if any; their `hop`s are computed here, as [`Timeline::of`] does.
    pub fn from_steps(saga_id: Uuid, mut steps: Vec<(Step, Option<&'static str>)>) -> Timeline {
        steps.sort_by_key(|(step, _)| (step.time, step.event_id));
        steps.dedup_by_key(|(step, _)| step.event_id);
        let started = steps.first().map(|(step, _)| step.time);
        let mut previous: Option<DateTime<Utc>> = None;
        let mut terminal = None;
        let mut duration = None;
        let mut ordered = Vec::with_capacity(steps.len());
        for (mut step, ends_with) in steps {
            step.hop = previous.map(|at| (step.time - at).to_std().unwrap_or_default());
            previous = Some(step.time);
            if terminal.is_none()
                && let Some(status) = ends_with
            {
                terminal = Some(status);
                duration = started.map(|at| (step.time - at).to_std().unwrap_or_default());
            }
            ordered.push(step);
        }
        Timeline {
            saga_id,
            steps: ordered,
            terminal,
            duration,
        }
    }
}

/// A look-back window as both saga tools take it (`saga stats --since`, `GET /sagas?since=`):
/// a whole number and `s`, `m`, `h` or `d`, e.g. `10m`. `None` for anything else, a negative
/// number or one too large for a time span.
pub fn parse_lookback(text: &str) -> Option<chrono::TimeDelta> {
    let text = text.trim();
    // The unit is the last character, which need not be one byte long: split after it, never
    // inside it.
    let unit = text.chars().next_back()?;
    let number = &text[..text.len() - unit.len_utf8()];
    let number: i64 = number.parse().ok().filter(|n| *n >= 0)?;
    let seconds = match unit {
        's' => Some(number),
        'm' => number.checked_mul(60),
        'h' => number.checked_mul(3600),
        'd' => number.checked_mul(86_400),
        _ => None,
    }?;
    chrono::TimeDelta::try_seconds(seconds)
}

/// A hop or a duration as the saga tools print it: milliseconds with one decimal.
pub fn format_millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// Every terminal status a saga can end in, as [`SagaEvent::terminal_status`] names them.
pub const TERMINAL_STATUSES: [&str; 4] = [
    "CONFIRMED",
    "FAILED_PAYMENT",
    "FAILED_INVENTORY",
    "CANCELLED",
];

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::events::{InventoryReservationFailed, OrderFailed, PaymentRefunded};

    fn at(envelope: Envelope, millis: i64, start: DateTime<Utc>) -> Envelope {
        Envelope {
            time: start + TimeDelta::milliseconds(millis),
            ..envelope
        }
    }

    #[test]
    fn a_compensated_saga_reads_in_order_once_with_hops_outcomes_and_its_end() {
        let saga = Uuid::now_v7();
        let order_id = Uuid::now_v7();
        let start = Utc::now();
        let failed = at(
            Envelope::new(
                "inventory-svc",
                Some(saga),
                SagaEvent::InventoryReservationFailed(InventoryReservationFailed {
                    order_id,
                    product_id: None,
                    reason: "short".into(),
                }),
            ),
            10,
            start,
        );
        let refunded = at(
            Envelope::new(
                "payments-svc",
                Some(saga),
                SagaEvent::PaymentRefunded(PaymentRefunded {
                    order_id,
                    customer_id: Uuid::now_v7(),
                    payment_id: Uuid::now_v7(),
                    amount_cents: 5,
                    reason: "short".into(),
                }),
            ),
            25,
            start,
        );
        let ended = at(
            Envelope::new(
                "orders-svc",
                Some(saga),
                SagaEvent::OrderFailed(OrderFailed {
                    order_id,
                    status: FailedStatus::FailedInventory,
                    reason: "short".into(),
                }),
            ),
            40,
            start,
        );
        let other_saga = Envelope {
            sagaid: Some(Uuid::now_v7()),
            ..ended.clone()
        };
        // Out of order, one published twice, one of another saga.
        let events = [
            ended.clone(),
            failed.clone(),
            refunded.clone(),
            failed.clone(),
            other_saga,
        ];
        let timeline = Timeline::of(saga, &events);
        let steps: Vec<(&str, Outcome, Option<Duration>)> = timeline
            .steps
            .iter()
            .map(|s| (s.step, s.outcome, s.hop))
            .collect();
        assert_eq!(
            steps,
            [
                ("InventoryReservationFailed", Outcome::Failure, None),
                (
                    "PaymentRefunded",
                    Outcome::Compensation,
                    Some(Duration::from_millis(15))
                ),
                (
                    "OrderFailed",
                    Outcome::Failure,
                    Some(Duration::from_millis(15))
                ),
            ]
        );
        assert_eq!(timeline.terminal, Some("FAILED_INVENTORY"));
        assert_eq!(timeline.duration, Some(Duration::from_millis(30)));
        let json = serde_json::to_value(&timeline).unwrap_or_default();
        assert_eq!(json["steps"][1]["outcome"], "compensation");
        assert_eq!(json["steps"][1]["hop_ms"], 15.0);
        assert_eq!(json["duration_ms"], 30.0);
    }

    #[test]
    fn the_compensating_types_are_the_events_whose_outcome_is_compensation() {
        let refund = SagaEvent::PaymentRefunded(PaymentRefunded {
            order_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            payment_id: Uuid::now_v7(),
            amount_cents: 1,
            reason: String::new(),
        });
        assert_eq!(refund.outcome(), Outcome::Compensation);
        assert!(refund.is_compensation());
        assert_eq!(crate::events::COMPENSATING_EVENT_TYPES, ["PaymentRefunded"]);
    }

    #[test]
    fn a_lookback_is_a_number_and_a_unit_and_nothing_else() {
        assert_eq!(parse_lookback("10m"), chrono::TimeDelta::try_minutes(10));
        assert_eq!(parse_lookback(" 2h "), chrono::TimeDelta::try_hours(2));
        assert_eq!(parse_lookback("1d"), chrono::TimeDelta::try_days(1));
        for bad in [
            "",
            "m",
            "10",
            "10x",
            "-5m",
            "1.5h",
            "99999999999999999d",
            "\u{80}",
            "5é",
        ] {
            assert_eq!(parse_lookback(bad), None, "{bad:?}");
        }
        assert_eq!(format_millis(Duration::from_micros(12_345)), "12.3 ms");
    }

    #[test]
    fn a_saga_in_flight_has_no_end_yet() {
        let saga = Uuid::now_v7();
        let created = Envelope::new(
            "orders-svc",
            Some(saga),
            SagaEvent::InventoryReserved(crate::events::InventoryReserved {
                order_id: Uuid::now_v7(),
            }),
        );
        let timeline = Timeline::of(saga, [&created]);
        assert_eq!(timeline.steps.len(), 1);
        assert_eq!(timeline.terminal, None);
        assert_eq!(timeline.duration, None);
    }
}
