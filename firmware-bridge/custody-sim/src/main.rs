//! `custody-sim`: simulated recorders and fleets of GPS recorders for tests, demos and benchmarks.

use clap::{Parser, Subcommand};
use custody_sim::{bench, fleet, recorder};
use std::time::Instant;

/// Simulates the devices around Custody: writes what a docked body-worn recorder holds, with real media
/// made by ffmpeg.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write one docked recorder's mount directory: ZFY_INFO.TXT and H hours of real video (H.264/H.265
    /// MP4 with AAC) in segment files, photos (JPEG) and audio (WAV, MP3) under DCIM/, named as recorders
    /// name them; or, with --recording, exactly the recordings asked for. Needs ffmpeg on PATH. The
    /// directory appears only when complete.
    Recorder(Box<recorder::RecorderArgs>),
    /// Officers carrying GPS recorders on a street grid, publishing their positions over MQTT (protobuf
    /// or JSON on custody/v1/dev/{device}/pos, or OwnTracks), with SOS alarms, until Ctrl-C, SIGTERM or
    /// --duration. Prints a summary and can write stats as JSON.
    #[command(after_long_help = fleet::EXAMPLES)]
    Fleet(Box<fleet::FleetArgs>),
    /// Measure performance on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Station throughput: simulated recorders offloaded by the real agent into a real `custody serve`
    /// (next to it, as a child process), next to this machine's limit for a verified copy (read, hash,
    /// write and fsync the same bytes) and next to `rclone copy` of the same files to the S3 test server.
    Station(Box<bench::StationBenchArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(BenchCommand::Station(args)) => bench::station(*args)?,
        Command::Fleet(args) => {
            let stats = fleet::run(&args)?;
            println!("{}", stats.summary());
        }
        Command::Recorder(args) => {
            let started = Instant::now();
            let manifest = recorder::make_recorder(&args)?;
            println!(
                "{}; took {:.1}s",
                manifest.summary(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
