//! `custody-sim`: simulated recorders (and, later, stations and fleets) for tests, demos and benchmarks.

use clap::{Parser, Subcommand};
use custody_sim::recorder;
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
    /// name them. Needs ffmpeg on PATH. The directory appears only when complete.
    Recorder(Box<recorder::RecorderArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
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
