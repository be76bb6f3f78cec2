//! Runs a suite's scenarios under libtest-mimic, against one world (the running stack and
//! whatever the suite keeps beside it).
//!
//! The world starts on first use, so `--list` or a filter that selects nothing starts no
//! service. Scenarios run one at a time, in the order given: they share the stack, and some
//! read what an earlier one left (the saga suite's replay scenario). A failed scenario gives
//! the world a chance to [`World::recover`] before the next one; after the last, the world
//! [`World::finish`]es (stops the services, prints its table).

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use libtest_mimic::{Arguments, Failed, Trial};

use crate::TestResult;

/// What a suite runs against: set up once, shared by its scenarios.
pub trait World: Send + Sized + 'static {
    fn start() -> impl Future<Output = TestResult<Self>>;

    /// Called after a scenario failed, to leave the stack usable for the next one.
    fn recover(&mut self) -> impl Future<Output = TestResult> {
        async { Ok(()) }
    }

    /// Called once after the last scenario: report, and stop the services.
    fn finish(self) -> impl Future<Output = TestResult>;
}

pub type ScenarioFuture<'a> = Pin<Box<dyn Future<Output = TestResult> + Send + 'a>>;
type ScenarioFn<W> = dyn for<'a> Fn(&'a mut W) -> ScenarioFuture<'a> + Send + Sync;

/// One named scenario of a suite.
pub struct Scenario<W> {
    name: &'static str,
    run: Arc<ScenarioFn<W>>,
}

/// Names a scenario. `run` borrows the world for the scenario's length.
pub fn scenario<W, F>(name: &'static str, run: F) -> Scenario<W>
where
    F: for<'a> Fn(&'a mut W) -> ScenarioFuture<'a> + Send + Sync + 'static,
{
    Scenario {
        name,
        run: Arc::new(run),
    }
}

/// The world as the trials share it: not started yet, started, or failed to start.
type Slot<W> = Arc<Mutex<Option<Result<W, String>>>>;

/// The whole `main` of a suite binary.
pub fn run<W: World>(scenarios: Vec<Scenario<W>>) -> ExitCode {
    let mut args = Arguments::from_args();
    // One stack, one scenario at a time.
    args.test_threads = Some(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Arc::new(runtime),
        Err(error) => {
            eprintln!("cannot start a tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let world: Slot<W> = Arc::new(Mutex::new(None));
    let trials = scenarios
        .into_iter()
        .map(|scenario| {
            let (runtime, world) = (Arc::clone(&runtime), Arc::clone(&world));
            Trial::test(scenario.name, move || {
                run_one(&runtime, &world, scenario.run.as_ref())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let started = world.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(Ok(world)) = started
        && let Err(error) = runtime.block_on(world.finish())
    {
        eprintln!("the stack did not stop cleanly: {error}");
        return ExitCode::FAILURE;
    }
    conclusion.exit_code()
}

fn run_one<W: World>(
    runtime: &tokio::runtime::Runtime,
    world: &Mutex<Option<Result<W, String>>>,
    scenario: &ScenarioFn<W>,
) -> Result<(), Failed> {
    // A scenario that panicked poisons the lock; the world itself is still worth using.
    let mut slot = world.lock().unwrap_or_else(PoisonError::into_inner);
    let started = slot.get_or_insert_with(|| {
        runtime
            .block_on(W::start())
            .map_err(|error| error.to_string())
    });
    let world = match started {
        Ok(world) => world,
        Err(error) => return Err(format!("the stack could not be set up: {error}").into()),
    };
    let Err(error) = runtime.block_on(scenario(world)) else {
        return Ok(());
    };
    let mut message = error.to_string();
    if let Err(recovery) = runtime.block_on(world.recover()) {
        message.push_str(&format!(
            "\n    and the stack could not be restored: {recovery}"
        ));
    }
    Err(message.into())
}
