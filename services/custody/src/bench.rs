//! `custody bench upload`: upload throughput of a real server process over gRPC, next to the limit of the
//! same machine measured in the same run (writing the same bytes with fsync, then reading and SHA-256
//! hashing them, which is the least work an upload must do), and the server's peak memory.

use crate::client::{Source, Uploader};
use crate::process::ServerProcess;
use anyhow::Context;
use bytes::Bytes;
use bytesize::ByteSize;
use custody_proto::v1 as pb;
use sha2::Digest;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `custody bench upload`.
#[derive(Debug, Clone, clap::Args)]
pub struct UploadBenchArgs {
    /// Size of each file.
    #[arg(long, default_value = "1GiB")]
    pub size: ByteSize,
    /// Files uploaded at once, each over its own connection.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Bytes per write message.
    #[arg(long, default_value = "1MiB")]
    pub chunk_size: ByteSize,
    /// Directory for the server's data and the limit measurement (needs 2 × size × concurrency free).
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Extra arguments for `custody serve` (e.g. `--database-url postgres://...`), space separated.
    #[arg(long, default_value = "")]
    pub serve_args: String,
}

const BASE_LEN: usize = 64 << 20;

/// Deterministic bytes of file `file`: a rotation of a random base buffer, so files differ and making them
/// costs one copy.
fn generator(base: Arc<Vec<u8>>, file: u64) -> Arc<dyn Fn(u64, usize) -> Bytes + Send + Sync> {
    let shift = (file as usize * 7_919_003) % BASE_LEN;
    Arc::new(move |off: u64, len: usize| {
        let mut out = Vec::with_capacity(len);
        let mut pos = (off as usize + shift) % BASE_LEN;
        while out.len() < len {
            let n = (len - out.len()).min(BASE_LEN - pos);
            out.extend_from_slice(&base[pos..pos + n]);
            pos = (pos + n) % BASE_LEN;
        }
        Bytes::from(out)
    })
}

fn rate(bytes: u64, secs: f64) -> String {
    format!("{:>8.1} MiB/s", bytes as f64 / secs / (1 << 20) as f64)
}

pub async fn upload(args: UploadBenchArgs) -> anyhow::Result<()> {
    let size = args.size.as_u64();
    let c = args.concurrency.max(1);
    let chunk = usize::try_from(args.chunk_size.as_u64())?.max(1);
    let total = size * c as u64;
    std::fs::create_dir_all(&args.dir)?;
    let work = tempfile::Builder::new()
        .prefix("custody-bench-")
        .tempdir_in(&args.dir)?;
    println!(
        "custody bench upload: {c} × {} files, {} chunks, in {}",
        args.size,
        args.chunk_size,
        work.path().display()
    );

    let mut base = vec![0u8; BASE_LEN];
    rand::fill(&mut base[..]);
    let base = Arc::new(base);
    let gens: Vec<_> = (0..c as u64).map(|i| generator(base.clone(), i)).collect();

    // The limit: the same bytes written with fsync, then read back and hashed, by `c` threads at once.
    let t = Instant::now();
    let handles: Vec<_> = gens
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let (g, path) = (g.clone(), work.path().join(format!("limit-{i}")));
            std::thread::spawn(move || -> std::io::Result<PathBuf> {
                let mut f = std::fs::File::create(&path)?;
                let mut off = 0u64;
                while off < size {
                    let len = (size - off).min(chunk as u64) as usize;
                    f.write_all(&g(off, len))?;
                    off += len as u64;
                }
                f.sync_all()?;
                Ok(path)
            })
        })
        .collect();
    let mut paths = Vec::new();
    for h in handles {
        paths.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))??,
        );
    }
    let t_write = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let handles: Vec<_> = paths
        .iter()
        .cloned()
        .map(|p| {
            std::thread::spawn(move || -> std::io::Result<String> {
                let mut f = std::fs::File::open(&p)?;
                let mut h = sha2::Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                Ok(hex::encode(h.finalize()))
            })
        })
        .collect();
    let mut digests = Vec::new();
    for h in handles {
        digests.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("hasher thread panicked"))??,
        );
    }
    let t_hash = t.elapsed().as_secs_f64();
    for p in &paths {
        std::fs::remove_file(p)?;
    }
    let limit_secs = t_write + t_hash;

    // The server, as a separate process so that its memory can be measured.
    let exe = std::env::current_exe()?;
    let extra: Vec<String> = args
        .serve_args
        .split_whitespace()
        .map(String::from)
        .collect();
    let server = ServerProcess::spawn(&exe, &work.path().join("server"), &extra)?;
    let grpc = server.addrs.grpc;
    let credential = server.add_station("bench")?;

    let t = Instant::now();
    let mut tasks = Vec::new();
    for (i, g) in gens.into_iter().enumerate() {
        let sha256 = digests[i].clone();
        let credential = credential.clone();
        tasks.push(tokio::spawn(async move {
            let mut up = Uploader::connect_addr(grpc, &credential)
                .await?
                .with_chunk_size(chunk);
            let req = pb::BeginRequest {
                device_id: format!("BENCH{i:04}"),
                station_id: "bench".into(),
                file_name: format!("bench-{i}.mp4"),
                size: size as i64,
                sha256,
                sm3: String::new(),
                capture_start: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                importance: pb::Importance::Normal.into(),
                media_type: pb::MediaType::Video.into(),
                officer_badge: String::new(),
                clock_offset_ms: None,
            };
            let receipt = up
                .upload(req, &Source::Generated(g))
                .await
                .context("upload")?;
            anyhow::Ok(receipt)
        }));
    }
    for task in tasks {
        let r = task.await??;
        anyhow::ensure!(
            !r.duplicate && r.size as u64 == size,
            "unexpected receipt {r:?}"
        );
    }
    let t_upload = t.elapsed().as_secs_f64();
    let rss = server.peak_rss();
    server.stop()?;

    let ratio = limit_secs / t_upload;
    println!();
    println!(
        "  write + fsync ({c} threads)          {}",
        rate(total, t_write)
    );
    println!(
        "  read + SHA-256 ({c} threads)         {}",
        rate(total, t_hash)
    );
    println!(
        "  limit: write, then read + hash     {}   ({:.2} s for {})",
        rate(total, limit_secs),
        limit_secs,
        ByteSize(total)
    );
    println!(
        "  custody upload over gRPC           {}   ({:.2} s, begin + write + commit)",
        rate(total, t_upload),
        t_upload
    );
    println!("  upload / limit                     {:>8.2}", ratio);
    match rss {
        Some(b) => println!(
            "  server peak RSS                    {:>8.1} MiB",
            b as f64 / (1 << 20) as f64
        ),
        None => println!("  server peak RSS                    unknown (no /proc)"),
    }
    Ok(())
}
