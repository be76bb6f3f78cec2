//! The order aggregate and its state machine. Pure: no database, HTTP or Kafka here.

mod order;

pub use order::{
    LineRequest, MAX_LINES, MAX_QUANTITY, Order, OrderLine, OrderStatus, PlaceOrderError,
    PricedProduct, TransitionError,
};
