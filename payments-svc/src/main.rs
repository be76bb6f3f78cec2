use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    saga_runtime::service::main(payments_svc::config::DEFAULTS, payments_svc::build).await
}
