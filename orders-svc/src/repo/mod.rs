//! Persistence: sea-orm queries, one module per aggregate, plain functions. Each takes the
//! connection to run on, generic over `ConnectionTrait`, so the same function serves the pool
//! and a unit of work's transaction; none commits.
//!
//! There are no repository traits: each would have exactly one implementation. Use-case logic
//! is tested through its pure `domain` rules and, with these functions, against a real
//! database (see ARCHITECTURE.md).

pub mod admission;
pub mod catalog;
pub mod entity;
pub mod orders;
pub mod sagas;

pub use catalog::CatalogProduct;
