//! Products, their stock, and the all-or-nothing reservation rule. Pure: no I/O here.

mod product;
mod reservation;

pub use product::{MAX_ATTRIBUTES_BYTES, NewProduct, Product, ProductError};
pub use reservation::{Reservation, ReservationStatus, Shortage, plan_reservation};
