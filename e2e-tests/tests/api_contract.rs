//! The HTTP contract, checked from outside as a client sees it: schemathesis (from PyPI, run
//! through `deploy/schemathesis`) reads each service's `GET /openapi.json` and sends it
//! requests the document allows and requests it forbids. No answer may be a 5xx, or a status,
//! header or body the document does not describe, and no forbidden request may be accepted.
//!
//! Afterwards the stack must still work: a real order placed after the onslaught is
//! confirmed, and no service has panicked.

use std::path::Path;
use std::process::ExitCode;

use e2e_tests::runner::{self, World, scenario};
use e2e_tests::stack::ServiceName;
use e2e_tests::{Api, Stack, TestResult, ensure, ensure_eq};

fn main() -> ExitCode {
    runner::run(vec![scenario(
        "schemathesis_finds_no_failure_in_any_service_and_the_stack_still_confirms_orders",
        |w: &mut ContractWorld| Box::pin(schemathesis_finds_nothing(w)),
    )])
}

struct ContractWorld {
    stack: Stack,
    api: Api,
}

impl World for ContractWorld {
    async fn start() -> TestResult<Self> {
        let stack = Stack::start().await?;
        let api = Api::new(&stack);
        Ok(ContractWorld { stack, api })
    }

    async fn finish(self) -> TestResult {
        self.stack.stop().await
    }
}

async fn schemathesis_finds_nothing(w: &mut ContractWorld) -> TestResult {
    let services = [
        ServiceName::Payments,
        ServiceName::Inventory,
        ServiceName::Orders,
    ];
    let urls: Vec<String> = services.iter().map(|s| w.stack.url(*s)).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/schemathesis");
    let output = tokio::process::Command::new(&script)
        .args(&urls)
        .env(
            "SCHEMATHESIS_TOKEN",
            saga_runtime::testing::token("schemathesis", &saga_runtime::auth::Scope::ALL),
        )
        .output()
        .await?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(w.stack.log_dir.join("schemathesis.txt"), &report)?;
    ensure!(
        output.status.success(),
        "schemathesis found failures (also in {}):\n{report}",
        w.stack.log_dir.display()
    );
    // One summary per service, each with cases run and none failed.
    let summaries: Vec<&str> = report
        .lines()
        .filter(|line| line.contains(" generated, "))
        .collect();
    ensure_eq!(summaries.len(), services.len(), "schemathesis summaries");
    for summary in &summaries {
        // e.g. "317 generated, 317 passed, 8 skipped": skipped are the checks that do not
        // apply to an operation, never a failure.
        ensure!(
            summary.contains(" passed")
                && !["fail", "error"].iter().any(|bad| summary.contains(bad)),
            "schemathesis: {summary}"
        );
    }
    println!("schemathesis: {}", summaries.join(" | "));

    // The services took all of that and still run a saga to its end.
    w.api.confirmed_order(500).await?;
    for service in services {
        let log =
            std::fs::read_to_string(w.stack.log_dir.join(format!("{}.log", service.binary())))?;
        ensure!(
            !log.contains("panicked"),
            "{} panicked during the run",
            service.binary()
        );
        // Its stderr is a file here, not a terminal: plain text, no colour codes.
        ensure!(
            !log.contains('\u{1b}'),
            "{}'s log file holds terminal escape codes",
            service.binary()
        );
    }
    Ok(())
}
