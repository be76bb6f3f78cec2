//! Persistence. Each aggregate has a repository trait, which is all the service layer sees,
//! and a sea-orm implementation. Every method takes the connection to run on, generic over
//! `ConnectionTrait`, so the same method serves the pool and a transaction; none commits.

mod accounts;
pub mod entity;
mod payments;

pub use accounts::{AccountRepository, SeaOrmAccountRepository};
pub use payments::{PaymentRepository, SeaOrmPaymentRepository};
