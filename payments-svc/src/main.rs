use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: under load a service spends a measurable share of its
/// CPU allocating and freeing small buffers (records, rows, spans), which mimalloc does with
/// per-thread free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    saga_runtime::service::main(payments_svc::config::DEFAULTS, payments_svc::build).await
}
