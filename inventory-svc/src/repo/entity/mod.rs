//! sea-orm models of inventory-svc's tables. They never leave the `repo` layer.

pub mod product;
pub mod reservation;
