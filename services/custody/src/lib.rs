//! The `custody` binary's library: configuration, wiring of every crate into one server ([`app`]), the
//! upload client, the benchmark commands, and a child-process harness for tests.
//!
//! This is the only crate that picks concrete backends and the only one that may use `anyhow`.

pub mod admin;
pub mod admin_retention;
pub mod admin_users;
pub mod app;
pub mod bench;
pub mod bench_cases;
pub mod bench_export;
pub mod bench_ledger;
pub mod bench_telemetry;
/// The upload client, re-exported for the benchmarks and tests that drive a server.
pub use custody_client as client;
pub mod config;
pub mod mqtt;
pub mod process;
pub mod verify;
pub mod verify_package;

pub use app::{App, BoundAddrs, build, shutdown_signal};
pub use config::Config;

/// The wall clock as a Timestamp: the one place the binary's commands read it (the domain crate never
/// does).
pub fn now() -> custody_core::Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    custody_core::Timestamp::from_unix_micros(
        i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX),
    )
}

/// Sets up logging once: `filter` in `tracing` syntax (the `RUST_LOG` environment variable wins), text or
/// JSON lines on standard error.
pub fn init_logging(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
