use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    saga_runtime::service::main(inventory_svc::config::DEFAULTS, inventory_svc::build).await
}
