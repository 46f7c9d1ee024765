//! Process-wide ffmpeg set-up, opening inputs, and turning ffmpeg's errors into [`MediaError`]s that
//! tell a case handler why a file cannot be shown.
//!
//! ffmpeg's own explanations ("moov atom not found") go to its log, which we silence (a server's
//! stderr is not the place, and the safe API cannot capture it). So when ffmpeg refuses a file, we
//! look at the bytes ourselves to say what is wrong in words.

use crate::MediaError;
use crate::probe::mp4;
use ffmpeg_next as ff;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Once;

/// Initialises ffmpeg once per process and silences its logging.
pub(crate) fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // `init` only registers devices and can only fail on builds without them; the formats and
        // codecs we use need no registration since FFmpeg 4.
        let _ = ff::init();
        ff::util::log::set_level(ff::util::log::Level::Quiet);
    });
}

/// An `std::io::Error` for an ffmpeg error that wraps an errno (`AVERROR(EIO)`, ...), if it is one.
pub(crate) fn as_io_error(e: ff::Error) -> Option<std::io::Error> {
    match e {
        ff::Error::Other { errno } => Some(std::io::Error::from_raw_os_error(errno)),
        _ => None,
    }
}

/// Whether an errno-style ffmpeg error is about the machine (disk, permissions, memory) rather
/// than about the bytes: such a failure may pass, and says nothing about the file.
pub(crate) fn is_system_errno(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::NotFound
            | K::PermissionDenied
            | K::OutOfMemory
            | K::StorageFull
            | K::IsADirectory
            | K::ReadOnlyFilesystem
            | K::QuotaExceeded
    ) || e.raw_os_error() == Some(5) // EIO: the disk, not the media.
}

/// Opens `path` for demuxing: reads the header and probes the streams (`avformat_find_stream_info`).
pub(crate) fn open_input(path: &Path) -> Result<ff::format::context::Input, MediaError> {
    init();
    let meta = std::fs::metadata(path).map_err(|source| MediaError::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    if !meta.is_file() {
        return Err(MediaError::Io {
            context: format!("reading {}", path.display()),
            source: std::io::Error::other("not a regular file"),
        });
    }
    if meta.len() == 0 {
        return Err(MediaError::Unreadable("the file is empty".into()));
    }
    let ictx = ff::format::input(path).map_err(|e| open_error(path, e))?;
    if TEXT_DEMUXERS.contains(&ictx.format().name()) {
        // ffmpeg renders text files (`.txt`, ANSI art) as a video of the text; for evidence
        // that is not media.
        return Err(MediaError::Unreadable(
            "not a media file: the file holds text".into(),
        ));
    }
    Ok(ictx)
}

/// ffmpeg demuxers that turn text into pictures of it.
const TEXT_DEMUXERS: [&str; 5] = ["tty", "bin", "xbin", "adf", "idf"];

/// Turns a failure to open an input into an error that says what is wrong with the file.
fn open_error(path: &Path, e: ff::Error) -> MediaError {
    if let Some(io) = as_io_error(e)
        && is_system_errno(&io)
    {
        return MediaError::Io {
            context: format!("reading {}", path.display()),
            source: io,
        };
    }
    if matches!(e, ff::Error::DecoderNotFound | ff::Error::DemuxerNotFound) {
        return MediaError::Unsupported(format!("this ffmpeg build cannot read the file: {e}"));
    }
    MediaError::Unreadable(describe_unreadable(path, e))
}

/// Says in words why ffmpeg could not open a file, looking at its first bytes.
fn describe_unreadable(path: &Path, e: ff::Error) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("not a media file ffmpeg recognises: {e}");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = [0u8; 512];
    let n = read_up_to(&mut file, &mut head);
    let head = &head[..n];
    let boxes = mp4::top_level_boxes(&mut file, len);
    if mp4::looks_like_mp4(&boxes) {
        let has = |k: &[u8; 4]| boxes.iter().any(|b| &b.kind == k);
        let cut = boxes
            .last()
            .is_some_and(|b| b.offset.saturating_add(b.size) > len);
        if !has(b"moov") {
            return if has(b"mdat") {
                "an MP4/MOV recording without its index (no moov box): the recording was cut off \
                 or the recorder stopped before finalising the file; the picture and sound data \
                 are there but cannot be located without the index"
                    .to_string()
            } else {
                "an MP4/MOV file that holds neither an index (moov box) nor media data (mdat box)"
                    .to_string()
            };
        }
        if cut {
            return format!(
                "a damaged MP4/MOV file: it ends in the middle of a box, so it was probably cut \
                 off ({e})"
            );
        }
        return format!("a damaged MP4/MOV file: {e}");
    }
    if head.starts_with(&[0xff, 0xd8]) {
        return format!("a damaged JPEG picture: {e}");
    }
    if !head.is_empty() && std::str::from_utf8(head).is_ok_and(|s| !s.contains('\0')) {
        return "not a media file: the file holds text".to_string();
    }
    format!("not a media file ffmpeg recognises: {e}")
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// A decoder could not be set up for a stream: the codec is missing from this ffmpeg build, or the
/// stream's parameters are nonsense.
pub(crate) fn decoder_error(codec: ff::codec::Id, e: ff::Error) -> MediaError {
    match e {
        ff::Error::DecoderNotFound => MediaError::Unsupported(format!(
            "this ffmpeg build has no decoder for {} streams",
            codec.name()
        )),
        _ if ff::codec::decoder::find(codec).is_none() => MediaError::Unsupported(format!(
            "this ffmpeg build has no decoder for {} streams",
            codec.name()
        )),
        _ => MediaError::Unreadable(format!(
            "the {} stream cannot be decoded: {e}",
            codec.name()
        )),
    }
}

/// A failure of ffmpeg while producing output: writing is IO, anything else is ffmpeg's own.
pub(crate) fn output_error(context: &str, e: ff::Error) -> MediaError {
    match as_io_error(e) {
        Some(source) => MediaError::Io {
            context: context.to_string(),
            source,
        },
        None => MediaError::Internal(format!("{context}: {e}")),
    }
}
