//! End-to-end tests live in `tests/`: they start the `custody` binary as a child process (so that it can
//! be killed with SIGKILL), with real PostgreSQL and S3 servers. Build the binary first
//! (`cargo build -p custody`); `scripts/test.sh` does.
