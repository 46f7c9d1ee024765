//! `custody-sim` stands in for the devices around Custody in tests, demos and benchmarks. It
//! simulates a docked recorder (执法记录仪): [`recorder::make_recorder`] writes the mount directory a
//! docking station sees, with real H.264/H.265 MP4, JPEG, WAV and MP3 files made by the ffmpeg command-line
//! tool, and returns a manifest with every file's hashes.
//!
//! [`fleet`] (`custody-sim fleet`) simulates officers patrolling with GPS recorders and publishes their
//! positions and SOS alarms over MQTT, for the telemetry tests and benchmark.
//!
//! The recorder's layout and file names come from `custody_core::recorder`, the module the station agent
//! reads them with; the fleet's payloads are `custody_core::position`'s JSON formats and the protobuf
//! `custody.v1.PositionBatch`, on the topics of `custody_mqtt::topics`: this crate never defines a format
//! of its own. The recorder needs `ffmpeg` and `ffprobe` on PATH (Debian package `ffmpeg`); the crate
//! links no codec library. It is a tool crate: errors are `anyhow`.

pub mod bench;
pub mod ffmpeg;
pub mod fleet;
pub mod recorder;

pub use recorder::{Manifest, ManifestFile, RecorderArgs, make_recorder};

/// Reads `LAT,LON` in WGS-84 degrees, with the latitude at most `max_lat` from the equator and the
/// longitude from -180 to 180: the form of `fleet --center` and of a `recorder --recording` place.
pub(crate) fn parse_lat_lon(s: &str, max_lat: f64) -> Result<(f64, f64), String> {
    let bad = || format!("expected LAT,LON in degrees such as 30.2741,120.1551, got {s:?}");
    let (lat, lon) = s.split_once(',').ok_or_else(bad)?;
    let (lat, lon): (f64, f64) = (
        lat.trim().parse().map_err(|_| bad())?,
        lon.trim().parse().map_err(|_| bad())?,
    );
    if !(-max_lat..=max_lat).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(format!(
            "{s:?}: latitude must be between -{max_lat} and {max_lat} and longitude between -180 and 180"
        ));
    }
    Ok((lat, lon))
}
