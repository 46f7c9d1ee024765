//! `custody-sim` stands in for the devices around Custody in tests, demos and benchmarks. Today it
//! simulates one docked recorder (执法记录仪): [`recorder::make_recorder`] writes the mount directory a
//! docking station sees, with real H.264/H.265 MP4, JPEG, WAV and MP3 files made by the ffmpeg command-line
//! tool, and returns a manifest with every file's hashes.
//!
//! The recorder's layout and file names come from `custody_core::recorder`, the module the station agent
//! reads them with; this crate never defines a format of its own. It needs `ffmpeg` and `ffprobe` on PATH
//! (Debian package `ffmpeg`) and links no codec library. It is a tool crate: errors are `anyhow`.

pub mod bench;
pub mod ffmpeg;
pub mod recorder;

pub use recorder::{Manifest, ManifestFile, RecorderArgs, make_recorder};
