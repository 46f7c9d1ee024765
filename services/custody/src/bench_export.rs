//! `custody bench export`: how fast evidence bytes go into an export package, next to this machine's
//! plain copy + hash of the same files.
//!
//! Both runs read the same files (made first, so both find them in the page cache alike), hash every
//! byte (SHA-256, and SM3 with `--sm3`) and write and fsync the same number of bytes: the baseline as one
//! copy per file, the export through [`custody_cases::export::write_archive`] — the writer the server
//! uses — into one ZIP. The ratio is what the package format costs; the database and ledger work of an
//! export does not depend on the bytes and is not part of this number.

use anyhow::Context;
use custody_cases::export::{Member, MemberSource, write_archive};
use custody_core::hash::ContentHasher;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `custody bench export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportBenchArgs {
    /// Files in the package.
    #[arg(long, default_value_t = 20)]
    pub files: usize,
    /// Size of each file, in MiB.
    #[arg(long, default_value_t = 50)]
    pub size_mib: u64,
    /// Hash SM3 too (国密 deployments), in both runs.
    #[arg(long)]
    pub sm3: bool,
    /// Directory for the files [default: a temporary directory]
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const BUF: usize = 1 << 20;

/// Fills `path` with `size` pseudo-random bytes (xorshift; incompressible enough for a stored ZIP).
fn make_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(
        BUF,
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut x = seed | 1;
    let mut buf = vec![0u8; BUF];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(BUF as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn copy_and_hash(src: &Path, dst: &Path, sm3: bool) -> anyhow::Result<u64> {
    let mut i = std::fs::File::open(src)?;
    let mut o = std::fs::File::create(dst)?;
    let mut h = ContentHasher::new(sm3);
    let mut buf = vec![0u8; BUF];
    loop {
        let n = i.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        o.write_all(&buf[..n])?;
    }
    o.sync_all()?;
    Ok(h.finish().size)
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9)
}

pub fn run(args: ExportBenchArgs) -> anyhow::Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let size = args.size_mib << 20;
    let total = size * args.files as u64;
    println!(
        "making {} files of {} MiB ({} MiB) in {}",
        args.files,
        args.size_mib,
        total >> 20,
        dir.display()
    );
    let srcs: Vec<PathBuf> = (0..args.files)
        .map(|i| dir.join(format!("src-{i:03}.MP4")))
        .collect();
    for (i, p) in srcs.iter().enumerate() {
        make_file(p, size, 0x9e37_79b9_7f4a_7c15 ^ i as u64)?;
    }

    // Baseline: copy each file with hashing and fsync.
    let started = Instant::now();
    let mut copied = 0;
    for (i, p) in srcs.iter().enumerate() {
        copied += copy_and_hash(p, &dir.join(format!("copy-{i:03}")), args.sm3)?;
    }
    let base = started.elapsed().as_secs_f64();
    for i in 0..srcs.len() {
        let _ = std::fs::remove_file(dir.join(format!("copy-{i:03}")));
    }

    // The package writer.
    let out = dir.join("package.zip");
    let started = Instant::now();
    let members = srcs.iter().enumerate().map(|(i, p)| Member {
        path: format!(
            "files/{i:03}/{}",
            p.file_name().unwrap_or_default().to_string_lossy()
        ),
        source: MemberSource::File(p.clone()),
        hash: Some(args.sm3),
    });
    let digests = write_archive(&out, members).map_err(anyhow::Error::msg)?;
    let export = started.elapsed().as_secs_f64();
    let packaged: u64 = digests.iter().map(|d| d.size).sum();
    let zip_size = std::fs::metadata(&out)?.len();
    let _ = std::fs::remove_file(&out);
    for p in &srcs {
        let _ = std::fs::remove_file(p);
    }

    let hashes = if args.sm3 { "SHA-256 + SM3" } else { "SHA-256" };
    println!(
        "plain copy + {hashes} + fsync: {:>8.1} MiB/s  ({} MiB in {:.2} s)",
        mib_s(copied, base),
        copied >> 20,
        base
    );
    println!(
        "export package (stored ZIP, {hashes} while copying, fsync): {:>8.1} MiB/s  ({} MiB in {:.2} s; archive {} bytes, {} bytes of ZIP structure)",
        mib_s(packaged, export),
        packaged >> 20,
        export,
        zip_size,
        zip_size.saturating_sub(packaged)
    );
    println!(
        "export / plain copy: {:.2}",
        mib_s(packaged, export) / mib_s(copied, base).max(1e-9)
    );
    Ok(())
}
