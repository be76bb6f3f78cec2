//! Persistence. Each aggregate has a repository trait, which is all the service layer sees,
//! and a sea-orm implementation. Every method takes the connection to run on, generic over
//! `ConnectionTrait`, so the same method serves the pool and a transaction; none commits.

mod catalog;
pub mod entity;
mod orders;

pub use catalog::{CatalogProduct, CatalogRepository, SeaOrmCatalogRepository};
pub use orders::{OrderRepository, SeaOrmOrderRepository};
