//! Persistence. Each aggregate has a repository trait, which is all the service layer sees,
//! and a sea-orm implementation. Every method takes the connection to run on, generic over
//! `ConnectionTrait`, so the same method serves the pool and a transaction; none commits.

pub mod entity;
mod products;
mod reservations;

pub use products::{ProductRepository, SeaOrmProductRepository};
pub use reservations::{ReservationRepository, SeaOrmReservationRepository};
