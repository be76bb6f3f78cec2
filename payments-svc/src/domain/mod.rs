//! Accounts and payments, and the rules for charging and refunding. Pure: no I/O here.

mod account;
mod payment;

pub use account::{Account, AccountError};
pub use payment::{ChargeOutcome, Payment, PaymentStatus, RefundOutcome, charge};
