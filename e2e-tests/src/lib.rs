//! The end-to-end harness. It starts the three real service binaries on fresh databases and
//! on Kafka topics of their own (`e2e-<run>.` prefix), talks to them over HTTP like a user,
//! and reads every saga event back from Kafka. In reading order:
//!
//! - [`stack`]: the running services ([`Stack`]), started from `SAGA_BIN_DIR` (default
//!   `target/debug`), and process control over them.
//! - [`api`]: the HTTP calls a user makes ([`Api`]).
//! - [`events`]: every record on the saga topics, by key ([`EventLog`]); raw records.
//! - [`ledger`]: what a scenario created, and the invariants it must end with ([`Ledger`]).
//! - [`runner`]: runs a suite's scenarios under libtest-mimic, so `--list`, name filters
//!   and nextest work, against one stack started on first use.
//! - [`fault_world`]: the failure suites' world ([`FaultWorld`]), with one or more instances of
//!   each service.

pub type TestError = Box<dyn std::error::Error + Send + Sync>;
pub type TestResult<T = ()> = Result<T, TestError>;

/// Fails the scenario with a message unless `condition` holds.
#[macro_export]
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+).into());
        }
    };
}

/// Fails the scenario unless the two values are equal, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($message:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(format!("{}: expected {:?}, got {:?}", format!($($message)+), right, left).into());
        }
    }};
}

// After the macros: `macro_rules!` is in scope only below its definition.
pub mod api;
pub mod events;
pub mod fault_world;
pub mod ledger;
pub mod runner;
pub mod stack;

pub use api::{Api, PlacedOrder};
pub use events::{EventLog, RawProducer, Record, read_topic};
pub use fault_world::FaultWorld;
pub use ledger::{Catalog, Ledger, Table, TrackedOrder, Verdict, print_table};
pub use runner::{Scenario, World, scenario};
pub use stack::{Instance, PgLayout, ServiceName, Stack};

/// A small deterministic generator, so a randomised run can be replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}
