use std::collections::{BTreeMap, HashMap};

use shared_events::OrderLine;
use strum::{Display, EnumString, IntoStaticStr};
use uuid::Uuid;

/// A reservation's status; its text (`RESERVED`, …) is what the database stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Display, EnumString, IntoStaticStr)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    /// Every line is held for the order.
    Reserved,
    /// Nothing was held, because some line was short.
    Rejected,
    /// Held once and given back (for a cancelled saga).
    Released,
    /// The order was cancelled before any reservation; a late request is refused.
    Cancelled,
}

/// The reservation decision for one order.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub order_id: Uuid,
    pub saga_id: Uuid,
    /// The customer whose order it is; unknown for an order cancelled before any reservation.
    pub customer_id: Option<Uuid>,
    pub status: ReservationStatus,
    pub lines: Vec<OrderLine>,
    pub reason: Option<String>,
}

impl Reservation {
    /// Gives a held reservation back. Returns the quantities to return to stock per product,
    /// in product-ID order, or nothing if nothing is held (so releasing twice is harmless).
    pub fn release(&mut self) -> Vec<(Uuid, i64)> {
        if self.status != ReservationStatus::Reserved {
            return Vec::new();
        }
        self.status = ReservationStatus::Released;
        let mut held: BTreeMap<Uuid, i64> = BTreeMap::new();
        for line in &self.lines {
            *held.entry(line.product_id).or_default() += i64::from(line.quantity);
        }
        held.into_iter().collect()
    }
}

/// The first product that cannot cover the order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("product_id={product_id} {reason}")]
pub struct Shortage {
    pub product_id: Uuid,
    pub reason: String,
}

/// Decides whether `available` stock covers every line. On success it returns the quantity
/// to take per product, in product-ID order: taking locks in one global order means two
/// concurrent reservations can never deadlock on each other.
pub fn plan_reservation(
    lines: &[OrderLine],
    available: &HashMap<Uuid, i64>,
) -> Result<Vec<(Uuid, i64)>, Shortage> {
    let mut wanted: BTreeMap<Uuid, i64> = BTreeMap::new();
    for line in lines {
        *wanted.entry(line.product_id).or_default() += i64::from(line.quantity);
    }
    for (&product_id, &quantity) in &wanted {
        match available.get(&product_id) {
            None => {
                return Err(Shortage {
                    product_id,
                    reason: "is not in the catalog".to_owned(),
                });
            }
            Some(&have) if have < quantity => {
                return Err(Shortage {
                    product_id,
                    reason: format!("is out of stock: {quantity} requested, {have} available"),
                });
            }
            Some(_) => {}
        }
    }
    Ok(wanted.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_what_they_write() {
        for status in [
            ReservationStatus::Reserved,
            ReservationStatus::Rejected,
            ReservationStatus::Released,
            ReservationStatus::Cancelled,
        ] {
            let text: &'static str = status.into();
            assert_eq!(text.parse::<ReservationStatus>(), Ok(status));
        }
        assert_eq!(ReservationStatus::Released.to_string(), "RELEASED");
    }

    fn line(product_id: Uuid, quantity: u32) -> OrderLine {
        OrderLine {
            product_id,
            quantity,
            unit_price_cents: 1,
        }
    }

    #[test]
    fn covered_lines_are_planned_in_product_order() -> Result<(), Shortage> {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let plan = plan_reservation(&[line(b, 2), line(a, 1)], &HashMap::from([(a, 1), (b, 5)]))?;
        assert_eq!(plan, vec![(a, 1), (b, 2)]);
        Ok(())
    }

    #[test]
    fn one_short_line_rejects_the_whole_order() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let shortage =
            plan_reservation(&[line(a, 1), line(b, 3)], &HashMap::from([(a, 10), (b, 2)]));
        assert_eq!(shortage.map_err(|s| s.product_id), Err(b));
    }

    #[test]
    fn repeated_products_are_added_up_before_checking() {
        let a = Uuid::now_v7();
        assert!(plan_reservation(&[line(a, 2), line(a, 2)], &HashMap::from([(a, 3)])).is_err());
    }

    #[test]
    fn releasing_gives_back_what_was_held_once() {
        let a = Uuid::now_v7();
        let mut reservation = Reservation {
            customer_id: None,
            order_id: Uuid::now_v7(),
            saga_id: Uuid::now_v7(),
            status: ReservationStatus::Reserved,
            lines: vec![line(a, 2), line(a, 1)],
            reason: None,
        };
        assert_eq!(reservation.release(), vec![(a, 3)]);
        assert_eq!(reservation.status, ReservationStatus::Released);
        assert!(reservation.release().is_empty());
    }

    #[test]
    fn unknown_products_are_a_shortage() {
        let a = Uuid::now_v7();
        assert!(plan_reservation(&[line(a, 1)], &HashMap::new()).is_err());
    }
}
