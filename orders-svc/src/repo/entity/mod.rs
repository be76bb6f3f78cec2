//! sea-orm models of orders-svc's tables. They never leave the `repo` layer.

pub mod catalog_product;
pub mod order;
pub mod order_item;
