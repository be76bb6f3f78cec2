use std::collections::{HashMap, HashSet};

use strum::{Display, EnumString, IntoStaticStr, VariantNames};
use uuid::Uuid;

/// Upper bound on lines per order; a bigger basket is almost surely a client bug.
pub const MAX_LINES: usize = 100;
/// Upper bound on one line's quantity.
pub const MAX_QUANTITY: u32 = 1_000;

/// Where an order is in its saga. Only `PendingPayment` is not terminal. Its text
/// (`PENDING_PAYMENT`, …) is what the database stores and the API shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    PendingPayment,
    Confirmed,
    FailedPayment,
    FailedInventory,
    Cancelled,
}

impl OrderStatus {
    /// The one status an order leaves: a saga's outcome or its deadline moves an order out of
    /// it, once. The repository's compare-and-set (`repo::orders::finish`) names it too.
    pub const OPEN: OrderStatus = OrderStatus::PendingPayment;

    pub fn is_terminal(self) -> bool {
        self != Self::OPEN
    }

    /// Whether order `order_id`, now in this status, may become `to`.
    pub fn check_finish(self, order_id: Uuid, to: OrderStatus) -> Result<(), TransitionError> {
        if self.is_terminal() {
            return Err(TransitionError {
                order_id,
                from: self,
                to,
            });
        }
        Ok(())
    }
}

/// What the client asked for: a product and a quantity, never a price. The quantity is as
/// sent, so that a negative or huge one is refused here with the domain's own message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRequest {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// A product's price as the catalog replica knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricedProduct {
    pub product_id: Uuid,
    pub price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub saga_id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub total_cents: i64,
    pub lines: Vec<OrderLine>,
    pub failure_reason: Option<String>,
}

/// Why an order cannot be placed; each is the client's to fix (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceOrderError {
    #[error("an order needs at least one item")]
    NoItems,
    #[error("an order has at most {MAX_LINES} items")]
    TooManyItems,
    #[error("product_id={0} quantity must be between 1 and {MAX_QUANTITY}")]
    InvalidQuantity(Uuid),
    #[error("product_id={0} appears more than once; put the whole quantity on one item")]
    DuplicateProduct(Uuid),
    #[error("product_id={0} is not in the catalog")]
    UnknownProduct(Uuid),
    #[error("the order total does not fit in 64 bits")]
    TotalOverflow,
}

/// An event asked for a transition the order's current status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order_id={order_id} cannot become {to} from {from}")]
pub struct TransitionError {
    pub order_id: Uuid,
    pub from: OrderStatus,
    pub to: OrderStatus,
}

impl Order {
    /// Validates the request and prices every line from `catalog`. The new order waits for
    /// payment; its saga ID is new and distinct from its order ID.
    pub fn place(
        customer_id: Uuid,
        requested: &[LineRequest],
        catalog: &HashMap<Uuid, PricedProduct>,
    ) -> Result<Order, PlaceOrderError> {
        if requested.is_empty() {
            return Err(PlaceOrderError::NoItems);
        }
        if requested.len() > MAX_LINES {
            return Err(PlaceOrderError::TooManyItems);
        }
        let mut seen = HashSet::with_capacity(requested.len());
        let mut lines = Vec::with_capacity(requested.len());
        let mut total: i64 = 0;
        for line in requested {
            let quantity = u32::try_from(line.quantity)
                .ok()
                .filter(|quantity| (1..=MAX_QUANTITY).contains(quantity))
                .ok_or(PlaceOrderError::InvalidQuantity(line.product_id))?;
            if !seen.insert(line.product_id) {
                return Err(PlaceOrderError::DuplicateProduct(line.product_id));
            }
            let product = catalog
                .get(&line.product_id)
                .ok_or(PlaceOrderError::UnknownProduct(line.product_id))?;
            let line_total = product
                .price_cents
                .checked_mul(i64::from(quantity))
                .ok_or(PlaceOrderError::TotalOverflow)?;
            total = total
                .checked_add(line_total)
                .ok_or(PlaceOrderError::TotalOverflow)?;
            lines.push(OrderLine {
                product_id: line.product_id,
                quantity,
                unit_price_cents: product.price_cents,
            });
        }
        Ok(Order {
            id: Uuid::now_v7(),
            saga_id: Uuid::now_v7(),
            customer_id,
            status: OrderStatus::PendingPayment,
            total_cents: total,
            lines,
            failure_reason: None,
        })
    }

    /// Inventory reserved the order (so it was also paid): the saga succeeded.
    pub fn confirm(&mut self) -> Result<(), TransitionError> {
        self.finish(OrderStatus::Confirmed, None)
    }

    /// The payment was declined; nothing needs compensating.
    pub fn fail_payment(&mut self, reason: &str) -> Result<(), TransitionError> {
        self.finish(OrderStatus::FailedPayment, Some(reason))
    }

    /// Inventory could not reserve the order and the payment has already been refunded.
    pub fn fail_inventory(&mut self, reason: &str) -> Result<(), TransitionError> {
        self.finish(OrderStatus::FailedInventory, Some(reason))
    }

    /// The saga passed its deadline: give up. Payments and inventory compensate in response.
    pub fn cancel(&mut self, reason: &str) -> Result<(), TransitionError> {
        self.finish(OrderStatus::Cancelled, Some(reason))
    }

    fn finish(&mut self, to: OrderStatus, reason: Option<&str>) -> Result<(), TransitionError> {
        self.status.check_finish(self.id, to)?;
        self.status = to;
        self.failure_reason = reason.map(str::to_owned);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(prices: &[(Uuid, i64)]) -> HashMap<Uuid, PricedProduct> {
        prices
            .iter()
            .map(|&(product_id, price_cents)| {
                (
                    product_id,
                    PricedProduct {
                        product_id,
                        price_cents,
                    },
                )
            })
            .collect()
    }

    fn pending() -> Result<Order, PlaceOrderError> {
        let product = Uuid::now_v7();
        Order::place(
            Uuid::now_v7(),
            &[LineRequest {
                product_id: product,
                quantity: 1,
            }],
            &catalog(&[(product, 5)]),
        )
    }

    #[test]
    fn placing_prices_every_line_from_the_catalog() -> Result<(), PlaceOrderError> {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let order = Order::place(
            Uuid::now_v7(),
            &[
                LineRequest {
                    product_id: a,
                    quantity: 2,
                },
                LineRequest {
                    product_id: b,
                    quantity: 3,
                },
            ],
            &catalog(&[(a, 1250), (b, 100)]),
        )?;
        assert_eq!(order.status, OrderStatus::PendingPayment);
        assert_eq!(order.total_cents, 2 * 1250 + 3 * 100);
        assert_eq!(order.lines[0].unit_price_cents, 1250);
        assert_ne!(order.id, order.saga_id);
        Ok(())
    }

    #[test]
    fn placing_rejects_bad_requests() {
        let known = Uuid::now_v7();
        let unknown = Uuid::now_v7();
        let prices = catalog(&[(known, 10), (Uuid::nil(), i64::MAX)]);
        let line = |product_id, quantity| LineRequest {
            product_id,
            quantity,
        };
        let cases = [
            (vec![], PlaceOrderError::NoItems),
            (
                vec![line(known, 0)],
                PlaceOrderError::InvalidQuantity(known),
            ),
            (
                vec![line(known, i64::from(MAX_QUANTITY) + 1)],
                PlaceOrderError::InvalidQuantity(known),
            ),
            (
                vec![line(known, -1)],
                PlaceOrderError::InvalidQuantity(known),
            ),
            (
                vec![line(known, i64::MAX)],
                PlaceOrderError::InvalidQuantity(known),
            ),
            (
                vec![line(known, 1), line(known, 2)],
                PlaceOrderError::DuplicateProduct(known),
            ),
            (
                vec![line(unknown, 1)],
                PlaceOrderError::UnknownProduct(unknown),
            ),
            (vec![line(Uuid::nil(), 2)], PlaceOrderError::TotalOverflow),
            (
                vec![line(known, 1); MAX_LINES + 1],
                PlaceOrderError::TooManyItems,
            ),
        ];
        for (lines, expected) in cases {
            assert_eq!(Order::place(Uuid::now_v7(), &lines, &prices), Err(expected));
        }
    }

    #[test]
    fn an_order_of_exactly_the_maximum_lines_and_quantity_is_accepted()
    -> Result<(), PlaceOrderError> {
        let products: Vec<Uuid> = (0..MAX_LINES).map(|_| Uuid::now_v7()).collect();
        let prices = catalog(&products.iter().map(|&p| (p, 1)).collect::<Vec<_>>());
        let lines: Vec<LineRequest> = products
            .iter()
            .map(|&product_id| LineRequest {
                product_id,
                quantity: i64::from(MAX_QUANTITY),
            })
            .collect();
        let order = Order::place(Uuid::now_v7(), &lines, &prices)?;
        assert_eq!(order.lines.len(), MAX_LINES);
        let units: i64 = order.lines.iter().map(|l| i64::from(l.quantity)).sum();
        assert_eq!(order.total_cents, units);
        assert_eq!(order.lines[0].quantity, MAX_QUANTITY);
        Ok(())
    }

    #[test]
    fn only_a_pending_order_is_not_terminal() {
        assert!(!OrderStatus::PendingPayment.is_terminal());
        for status in [
            OrderStatus::Confirmed,
            OrderStatus::FailedPayment,
            OrderStatus::FailedInventory,
            OrderStatus::Cancelled,
        ] {
            assert!(status.is_terminal(), "{status}");
        }
    }

    #[test]
    fn a_pending_order_reaches_exactly_one_terminal_status()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut order = pending()?;
        order.confirm()?;
        assert_eq!(order.status, OrderStatus::Confirmed);
        assert!(order.status.is_terminal());
        assert!(order.fail_payment("late").is_err());
        assert!(order.fail_inventory("late").is_err());
        assert!(order.confirm().is_err());
        assert_eq!(order.status, OrderStatus::Confirmed);
        Ok(())
    }

    #[test]
    fn failures_record_their_reason() -> Result<(), Box<dyn std::error::Error>> {
        let mut by_payment = pending()?;
        by_payment.fail_payment("insufficient funds")?;
        assert_eq!(by_payment.status, OrderStatus::FailedPayment);
        assert_eq!(
            by_payment.failure_reason.as_deref(),
            Some("insufficient funds")
        );

        let mut by_inventory = pending()?;
        by_inventory.fail_inventory("out of stock")?;
        assert_eq!(by_inventory.status, OrderStatus::FailedInventory);
        assert!(by_inventory.confirm().is_err());
        Ok(())
    }

    #[test]
    fn only_a_pending_order_can_be_cancelled() -> Result<(), Box<dyn std::error::Error>> {
        let mut order = pending()?;
        order.cancel("deadline passed")?;
        assert_eq!(order.status, OrderStatus::Cancelled);
        assert!(order.confirm().is_err());
        let mut confirmed = pending()?;
        confirmed.confirm()?;
        assert!(confirmed.cancel("deadline passed").is_err());
        Ok(())
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in [
            OrderStatus::PendingPayment,
            OrderStatus::Confirmed,
            OrderStatus::FailedPayment,
            OrderStatus::FailedInventory,
            OrderStatus::Cancelled,
        ] {
            let text: &'static str = status.into();
            assert_eq!(text.parse::<OrderStatus>(), Ok(status));
        }
        assert_eq!(OrderStatus::FailedInventory.to_string(), "FAILED_INVENTORY");
        assert!("SHIPPED".parse::<OrderStatus>().is_err());
    }

    proptest::proptest! {
        /// Whatever is asked, an order is placed exactly when every rule holds: 1 to
        /// MAX_LINES lines, each quantity in 1..=MAX_QUANTITY, no product twice, every product
        /// known; and then it is priced from the catalog alone.
        #[test]
        fn an_order_is_placed_exactly_when_every_rule_holds(
            lines in proptest::collection::vec((0usize..8, -2i64..=1_002), 0..=MAX_LINES + 2),
            prices in proptest::collection::vec(0i64..1_000_000, 6),
        ) {
            // Products 0..6 are in the catalog, 6 and 7 are not.
            let products: Vec<Uuid> = (0..8u128).map(Uuid::from_u128).collect();
            let known: Vec<(Uuid, i64)> = products.iter().copied().zip(prices.iter().copied()).collect();
            let requested: Vec<LineRequest> = lines
                .iter()
                .map(|&(product, quantity)| LineRequest { product_id: products[product], quantity })
                .collect();
            let placed = Order::place(Uuid::now_v7(), &requested, &catalog(&known));

            let distinct: HashSet<Uuid> = requested.iter().map(|l| l.product_id).collect();
            let every_rule_holds = (1..=MAX_LINES).contains(&requested.len())
                && requested.iter().all(|l| (1..=i64::from(MAX_QUANTITY)).contains(&l.quantity))
                && distinct.len() == requested.len()
                && requested.iter().all(|l| known.iter().any(|(id, _)| *id == l.product_id));
            proptest::prop_assert_eq!(placed.is_ok(), every_rule_holds, "{:?}", placed);
            if let Ok(order) = placed {
                let expected: i64 = order
                    .lines
                    .iter()
                    .map(|line| {
                        let price = known.iter().find(|(id, _)| *id == line.product_id).map_or(-1, |p| p.1);
                        price * i64::from(line.quantity)
                    })
                    .sum();
                proptest::prop_assert_eq!(order.total_cents, expected);
                proptest::prop_assert_eq!(order.lines.len(), requested.len());
            }
        }
    }
}
