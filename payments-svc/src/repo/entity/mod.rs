//! sea-orm models of payments-svc's tables. They never leave the `repo` layer.

pub mod account;
pub mod payment;
