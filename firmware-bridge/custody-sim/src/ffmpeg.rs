//! Running the ffmpeg and ffprobe command-line tools. The simulator makes real media with them rather
//! than with a linked library, so the crate builds without codec headers and the media are exactly what
//! the Debian `ffmpeg` package writes.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

const MISSING: &str =
    "ffmpeg not found on PATH: install the Debian package ffmpeg (scripts/test.sh does)";

/// Fails with an actionable message when `ffmpeg` or `ffprobe` cannot be run.
pub fn check_installed() -> anyhow::Result<()> {
    for tool in ["ffmpeg", "ffprobe"] {
        let found = Command::new(tool)
            .arg("-version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            // ffprobe ships in the same package, so one message covers both.
            bail!(MISSING);
        }
    }
    Ok(())
}

/// Runs `ffmpeg` with `args` (after `-nostdin -hide_banner -v error -y`). On failure the error holds
/// the command line and the end of ffmpeg's own message, which is where it says what went wrong.
pub fn run<I, S>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(MISSING)
        } else {
            anyhow::Error::new(e).context("could not start ffmpeg")
        }
    })?;
    if !out.status.success() {
        bail!(
            "ffmpeg failed ({}): {}\ncommand: {}",
            out.status,
            tail(&out.stderr),
            command_line(&cmd)
        );
    }
    Ok(())
}

/// The last few lines of a tool's stderr: enough to say why it failed without flooding the terminal.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What ffprobe says about a media file: its streams' codecs and the container's duration.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Codec names as ffprobe spells them (`h264`, `hevc`, `aac`, `mjpeg`, `pcm_s16le`, `mp3`), in stream
    /// order.
    pub codecs: Vec<String>,
    /// Codec tags (`avc1`, `hvc1`, `mp4a`…), in stream order; `[0][0][0][0]` where the container has none.
    pub codec_tags: Vec<String>,
    /// Container duration in seconds, when the format has one (a JPEG has none).
    pub duration_s: Option<f64>,
    /// The container's ISO 6709 `location` tag, as written (e.g. `+22.5431+114.0579/`).
    pub location: Option<String>,
}

#[derive(Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeStream {
    codec_name: Option<String>,
    codec_tag_string: Option<String>,
}

#[derive(Deserialize)]
struct ProbeFormat {
    duration: Option<String>,
    #[serde(default)]
    tags: ProbeTags,
}

#[derive(Default, Deserialize)]
struct ProbeTags {
    location: Option<String>,
}

/// Asks ffprobe for the streams, duration and location tag of `path`.
pub fn probe(path: &Path) -> anyhow::Result<Probe> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,codec_tag_string:format=duration:format_tags=location",
            "-of",
            "json",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(MISSING)
            } else {
                anyhow::Error::new(e).context("could not start ffprobe")
            }
        })?;
    if !out.status.success() {
        bail!(
            "ffprobe {} failed ({}): {}",
            path.display(),
            out.status,
            tail(&out.stderr)
        );
    }
    let json: ProbeJson = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("ffprobe {}: unexpected output", path.display()))?;
    Ok(Probe {
        codecs: json
            .streams
            .iter()
            .map(|s| s.codec_name.clone().unwrap_or_default())
            .collect(),
        codec_tags: json
            .streams
            .iter()
            .map(|s| s.codec_tag_string.clone().unwrap_or_default())
            .collect(),
        duration_s: json
            .format
            .as_ref()
            .and_then(|f| f.duration.as_deref())
            .and_then(|d| d.parse().ok()),
        location: json.format.and_then(|f| f.tags.location),
    })
}

/// Decodes every frame of `path` and returns what ffmpeg reported at level `error`; empty means the file
/// decoded cleanly. This is slow for long files (it is a full decode), so tests use it on short ones.
pub fn decode_errors(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .stdin(Stdio::null())
        .output()
        .context("could not start ffmpeg")?;
    let mut report = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        report.push_str(&format!("\nffmpeg exited with {}", out.status));
    }
    Ok(report)
}
