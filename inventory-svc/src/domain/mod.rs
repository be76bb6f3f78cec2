//! Products, their stock, the JSON Schemas of their categories, and the all-or-nothing
//! reservation rule. Pure: no I/O here.

mod category;
mod product;
mod reservation;

pub use category::{
    Category, CategoryError, Judgement, ValidationAction, ValidationLevel, valid_category_name,
};
pub use product::{MAX_ATTRIBUTES_BYTES, NewProduct, Product, ProductChanges, ProductError};
pub use reservation::{Reservation, ReservationStatus, Shortage, plan_reservation};
