use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    saga_runtime::service::main(orders_svc::config::DEFAULTS, orders_svc::build).await
}
