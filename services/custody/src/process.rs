//! A `custody serve` child process, for the benchmark and for tests that must kill a real server
//! (SIGKILL) and start it again.

use crate::app::BoundAddrs;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server process. Killed (SIGKILL) when dropped, unless stopped before.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub addrs: BoundAddrs,
    exe: PathBuf,
    data_dir: PathBuf,
    /// The storage flags among the extra arguments, for `custody admin` commands on the same storage.
    storage_args: Vec<String>,
}

/// The flags of `custody serve` that name where data lives (`config::StorageArgs`), each with a value.
const STORAGE_FLAGS: &[&str] = &[
    "--data-dir",
    "--database-url",
    "--object-store",
    "--s3-endpoint",
    "--s3-region",
    "--s3-access-key-id",
    "--s3-secret-access-key-file",
    "--s3-allow-http",
];

/// The storage flags (and their values) among `args`.
fn storage_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a.split('=').next().unwrap_or(a);
        if STORAGE_FLAGS.contains(&name) {
            out.push(a.clone());
            if !a.contains('=')
                && let Some(v) = it.next()
            {
                out.push(v.clone());
            }
        }
    }
    out
}

impl ServerProcess {
    /// Starts `exe serve --data-dir DATA_DIR` on ports chosen by the system plus `extra` arguments, and
    /// waits until it is serving. Its log goes to `DATA_DIR/../server-<n>.log`. A data directory without
    /// ledger keys gets a test key pair first (as an operator would with `custody admin keygen`).
    pub fn spawn(exe: &Path, data_dir: &Path, extra: &[String]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        crate::admin::test_keys(data_dir)?;
        let ready = data_dir.with_extension(format!("ready-{}", rand::random::<u32>()));
        let _ = std::fs::remove_file(&ready);
        let log_path = data_dir.with_extension(format!("log-{}", rand::random::<u32>()));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
            ])
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut p = Self {
            child,
            addrs: BoundAddrs {
                http: ([0, 0, 0, 0], 0).into(),
                grpc: ([0, 0, 0, 0], 0).into(),
                mqtt: None,
            },
            exe: exe.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            storage_args: storage_args(extra),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(bytes) = std::fs::read(&ready) {
                p.addrs = serde_json::from_slice(&bytes)?;
                let _ = std::fs::remove_file(&ready);
                return Ok(p);
            }
            if let Some(status) = p.child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                anyhow::bail!("server exited with {status} before serving; its log:\n{log}");
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "server did not start serving within 60 s; log at {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Registers a docking station in this server's storage with `custody admin station add`, as an
    /// operator would, and returns its credential.
    pub fn add_station(&self, id: &str) -> anyhow::Result<String> {
        let out = Command::new(&self.exe)
            .args(["admin", "station", "add", id, "--name", id, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.storage_args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} admin station add", self.exe.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "custody admin station add {id} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// A session token of a user with `roles` (comma-separated) in this server's storage, made with
    /// `custody admin user add` (once; the account is reused when it exists) and `custody admin user
    /// token`, as an operator would.
    pub fn user_token(&self, username: &str, roles: &str) -> anyhow::Result<String> {
        use std::io::Write;
        let mut add = Command::new(&self.exe)
            .args([
                "admin", "user", "add", username, "--name", username, "--roles", roles,
            ])
            .arg("--password-stdin")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.storage_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} admin user add", self.exe.display()))?;
        if let Some(mut stdin) = add.stdin.take() {
            writeln!(stdin, "pw-{:032x}", rand::random::<u128>())?;
        }
        let out = add.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            out.status.success() || stderr.contains("already exists"),
            "custody admin user add {username} failed: {stderr}"
        );
        let out = Command::new(&self.exe)
            .args(["admin", "user", "token", username, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.storage_args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} admin user token", self.exe.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "custody admin user token {username} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the process so far (Linux `VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// SIGKILL: the process gets no chance to clean up, as in a power cut of the process.
    pub fn kill_hard(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(self.child.wait()?)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `custody` binary next to the running one (for tests: `target/<profile>/custody`).
pub fn sibling_binary() -> anyhow::Result<PathBuf> {
    sibling("custody")
}

/// A binary of this workspace next to the running one (`custody`, `custody-station`, `custody-sim`).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let mut dir = me.parent().context("exe has no directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let exe = dir.join(name);
    anyhow::ensure!(
        exe.exists(),
        "{} does not exist: build it first with `cargo build --workspace`",
        exe.display()
    );
    Ok(exe)
}

#[cfg(test)]
mod tests {
    #[test]
    fn storage_flags_are_picked_out_of_server_arguments() {
        let args: Vec<String> = [
            "--database-url",
            "postgres://x",
            "--upload-flush-bytes",
            "1MiB",
            "--s3-allow-http=true",
            "--object-store",
            "s3://b",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            super::storage_args(&args),
            [
                "--database-url",
                "postgres://x",
                "--s3-allow-http=true",
                "--object-store",
                "s3://b"
            ]
        );
    }
}
