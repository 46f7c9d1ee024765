//! Reading what a file is: container, streams, time and place of recording.
//!
//! ffmpeg's demuxer does most of it. Three things it does not answer well are read from the bytes
//! here: how many frames an MP4 track really holds (see [`mp4`]), the size a JPEG claims when ffmpeg
//! refuses to decode it (a 60000×60000 header leaves ffmpeg's width and height at 0), and a photo's
//! EXIF time, place and orientation.

pub(crate) mod mp4;

use crate::MediaError;
use crate::ffmpeg::open_input;
use custody_core::media::{
    EmbeddedLocation, MediaInfo, StreamInfo, StreamKind, parse_creation_time, parse_iso6709,
};
use ff::{Rescale, media};
use ffmpeg_next as ff;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// ffmpeg's "no value" for timestamps and durations.
const NOPTS: i64 = i64::MIN;

/// Probes a local file. Blocking.
///
/// Reads the container header and as much of the start of the file as ffmpeg needs to describe
/// its streams; it never decodes a whole stream. A file ffmpeg cannot open is
/// [`MediaError::Unreadable`] with a sentence saying why.
pub fn probe(path: &Path) -> Result<MediaInfo, MediaError> {
    let ictx = open_input(path)?;
    let container = ictx.format().name().to_string();
    let image_container = container == "image2" || container.ends_with("_pipe");

    let mut streams = Vec::new();
    let mut start_time_us: Option<i64> = None;
    for stream in ictx.streams() {
        let info = stream_info(&stream, image_container);
        if stream.start_time() != NOPTS {
            let us = stream
                .start_time()
                .rescale(stream.time_base(), ff::rescale::TIME_BASE);
            start_time_us = Some(start_time_us.map_or(us, |s| s.min(us)));
        }
        streams.push(info);
    }

    let mp4_family = container.split(',').any(|c| c == "mp4" || c == "mov");
    if mp4_family {
        fill_mp4_frame_counts(path, &ictx, &mut streams);
    }

    let meta = ictx.metadata();
    let stream_tag = |key: &str| {
        ictx.streams()
            .find_map(|s| s.metadata().get(key).map(str::to_string))
    };
    let creation_time = meta
        .get("creation_time")
        .map(str::to_string)
        .or_else(|| stream_tag("creation_time"));
    let location = [
        "location",
        "com.apple.quicktime.location.ISO6709",
        "location-eng",
    ]
    .iter()
    .find_map(|k| meta.get(k).and_then(parse_iso6709));

    let mut info = MediaInfo {
        container,
        duration_us: Some(ictx.duration()).filter(|d| *d != NOPTS && *d >= 0),
        start_time_us,
        bit_rate: u64::try_from(ictx.bit_rate()).ok().filter(|b| *b > 0),
        created_at: creation_time.as_deref().and_then(parse_creation_time),
        creation_time,
        location,
        streams,
    };
    drop(ictx);

    if info.video().is_some_and(|v| v.codec == "mjpeg") && info.audio().is_none() {
        fill_from_jpeg(path, &mut info);
    }
    Ok(info)
}

fn stream_kind(t: media::Type) -> StreamKind {
    match t {
        media::Type::Video => StreamKind::Video,
        media::Type::Audio => StreamKind::Audio,
        media::Type::Subtitle => StreamKind::Subtitle,
        media::Type::Data => StreamKind::Data,
        media::Type::Attachment => StreamKind::Attachment,
        media::Type::Unknown => StreamKind::Unknown,
    }
}

fn stream_info(stream: &ff::format::stream::Stream, image_container: bool) -> StreamInfo {
    let params = stream.parameters();
    let id = params.id();
    let kind = stream_kind(params.medium());
    let mut s = StreamInfo {
        index: u32::try_from(stream.index()).unwrap_or(u32::MAX),
        kind,
        codec: id.name().to_string(),
        profile: None,
        width: None,
        height: None,
        frame_rate: None,
        pixel_format: None,
        sample_rate: None,
        channels: None,
        bit_rate: u64::try_from(params.bit_rate()).ok().filter(|b| *b > 0),
        duration_us: None,
        frames: u64::try_from(stream.frames()).ok().filter(|n| *n > 0),
        rotation: None,
    };
    let tb = stream.time_base();
    if stream.duration() != NOPTS && stream.duration() >= 0 && tb.denominator() > 0 {
        s.duration_us = Some(stream.duration().rescale(tb, ff::rescale::TIME_BASE));
    }

    // The safe API exposes a stream's picture and sound parameters through a codec context. An
    // *encoder* view of that context only reads the fields (no codec is opened, none needs to
    // exist in this build), so it also describes streams we could not decode.
    match kind {
        StreamKind::Video => {
            if let Ok(v) = ff::codec::Context::from_parameters(stream.parameters())
                .and_then(|c| c.encoder().video())
            {
                s.width = Some(v.width()).filter(|w| *w > 0);
                s.height = Some(v.height()).filter(|h| *h > 0);
                s.pixel_format = v.format().descriptor().map(|d| d.name().to_string());
            }
            let r = stream.avg_frame_rate();
            if r.numerator() > 0 && r.denominator() > 0 && !image_container {
                s.frame_rate = Some(f64::from(r));
            }
            s.rotation = stream_rotation(stream);
        }
        StreamKind::Audio => {
            if let Ok(a) = ff::codec::Context::from_parameters(stream.parameters())
                .and_then(|c| c.encoder().audio())
            {
                s.sample_rate = Some(a.rate()).filter(|r| *r > 0);
                s.channels = Some(u32::from(a.channels())).filter(|c| *c > 0);
            }
        }
        _ => {}
    }
    if matches!(kind, StreamKind::Video | StreamKind::Audio) {
        s.profile = profile(stream);
    }
    s
}

/// The codec profile, which only an opened decoder reports. Opening one reads the stream's
/// parameters (extradata), it decodes nothing.
fn profile(stream: &ff::format::stream::Stream) -> Option<String> {
    use ff::codec::profile::{AAC, H264, HEVC, Profile};
    let ctx = ff::codec::Context::from_parameters(stream.parameters()).ok()?;
    let codec = ff::codec::decoder::find(ctx.id())?;
    let opened = ctx.decoder().open_as(codec).ok()?;
    let name = match opened.profile() {
        Profile::Unknown | Profile::Reserved => return None,
        Profile::H264(p) => match p {
            H264::ConstrainedBaseline => "Constrained Baseline",
            H264::High10 => "High 10",
            H264::High10Intra => "High 10 Intra",
            H264::High422 => "High 4:2:2",
            H264::High422Intra => "High 4:2:2 Intra",
            H264::High444 => "High 4:4:4",
            H264::High444Predictive => "High 4:4:4 Predictive",
            H264::High444Intra => "High 4:4:4 Intra",
            H264::CAVLC444 => "CAVLC 4:4:4",
            other => return Some(format!("{other:?}")),
        },
        Profile::HEVC(p) => match p {
            HEVC::Main => "Main",
            HEVC::Main10 => "Main 10",
            HEVC::MainStillPicture => "Main Still Picture",
            HEVC::Rext => "Rext",
        },
        Profile::AAC(p) => match p {
            AAC::Low => "LC",
            AAC::HE => "HE-AAC",
            AAC::HEv2 => "HE-AACv2",
            AAC::MPEG2Low => "LC (MPEG-2)",
            AAC::MPEG2HE => "HE-AAC (MPEG-2)",
            other => return Some(format!("{other:?}")),
        },
        other => return Some(format!("{other:?}")),
    };
    Some(name.to_string())
}

/// Clockwise rotation a player applies, from the stream's display matrix (MP4 `tkhd` matrix) or an
/// old-style `rotate` tag. Only quarter turns are reported, as players only apply those.
pub(crate) fn stream_rotation(stream: &ff::format::stream::Stream) -> Option<i32> {
    let from_matrix = stream.side_data().find_map(|sd| {
        if sd.kind() != ff::codec::packet::side_data::Type::DisplayMatrix {
            return None;
        }
        display_matrix_rotation(sd.data())
    });
    let degrees = from_matrix.or_else(|| {
        stream
            .metadata()
            .get("rotate")
            .and_then(|r| r.trim().parse::<i32>().ok())
    })?;
    let quarter = (((degrees as f64 / 90.0).round() as i64).rem_euclid(4) * 90) as i32;
    (quarter != 0).then_some(quarter)
}

/// Reads ffmpeg's 3×3 display matrix (nine native-endian 32-bit integers, 16.16 fixed point for
/// the rotation part) as the clockwise angle to apply, as ffmpeg's own autorotate does
/// (`-av_display_rotation_get`).
fn display_matrix_rotation(data: &[u8]) -> Option<i32> {
    let m = |i: usize| -> Option<f64> {
        let b = data.get(i * 4..i * 4 + 4)?;
        Some(f64::from(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])))
    };
    let (m0, m1, m3, m4) = (m(0)?, m(1)?, m(3)?, m(4)?);
    let scale0 = m0.hypot(m3);
    let scale1 = m1.hypot(m4);
    if scale0 == 0.0 || scale1 == 0.0 {
        return None;
    }
    let ccw = -(m1 / scale1).atan2(m0 / scale0).to_degrees();
    Some((-ccw).round() as i32)
}

/// Replaces ffmpeg's `nb_frames` of MP4/MOV tracks with the sample counts of the file's own index
/// and fragments (ffmpeg's is 0 for every track of a fragmented file). A track the file lists with
/// no samples at all is reported as `Some(0)`: an empty recording.
fn fill_mp4_frame_counts(
    path: &Path,
    ictx: &ff::format::context::Input,
    streams: &mut [StreamInfo],
) {
    let Ok(file) = File::open(path) else { return };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = BufReader::new(file);
    let boxes = mp4::top_level_boxes(&mut r, len);
    let Some(counts) = mp4::sample_counts(&mut r, &boxes, len) else {
        return;
    };
    for (stream, info) in ictx.streams().zip(streams.iter_mut()) {
        // The mov demuxer sets a stream's id to its track ID.
        let Ok(track) = u32::try_from(stream.id()) else {
            continue;
        };
        if let Some(n) = counts.get(&track) {
            info.frames = Some(*n);
        }
    }
}

/// Photo facts ffmpeg does not give: the size a JPEG claims when ffmpeg refused it, EXIF time,
/// place and orientation.
fn fill_from_jpeg(path: &Path, info: &mut MediaInfo) {
    let Ok(file) = File::open(path) else { return };
    // Markers before the first scan hold everything we read; 1 MiB covers large EXIF thumbnails.
    let mut head = Vec::new();
    if file.take(1 << 20).read_to_end(&mut head).is_err() {
        return;
    }
    let exif = read_exif(&head);
    let Some(video) = info
        .streams
        .iter_mut()
        .find(|s| s.kind == StreamKind::Video && s.codec == "mjpeg")
    else {
        return;
    };
    if (video.width.is_none() || video.height.is_none())
        && let Some((w, h)) = jpeg_dimensions(&head)
    {
        video.width = Some(w);
        video.height = Some(h);
    }
    let Some(exif) = exif else { return };
    if video.rotation.is_none() {
        video.rotation = exif.rotation;
    }
    if info.creation_time.is_none()
        && let Some(t) = exif.taken
    {
        info.created_at = exif.taken_utc.or_else(|| parse_creation_time(&t));
        info.creation_time = Some(t);
    }
    if info.location.is_none() {
        info.location = exif.location;
    }
}

/// The size a JPEG or PNG header claims, read without decoding.
pub(crate) fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    jpeg_dimensions(bytes).or_else(|| png_dimensions(bytes))
}

/// The size in a PNG's IHDR chunk, which the format puts first.
fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) || bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let be = |at: usize| -> Option<u32> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (w, h) = (be(16)?, be(20)?);
    (w > 0 && h > 0).then_some((w, h))
}

/// The size in a JPEG's frame header (SOFn), read without decoding. `None` when the bytes are not
/// a JPEG or end before the frame header.
pub(crate) fn jpeg_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    let mut pos = 2usize;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while *bytes.get(pos)? != 0xff {
            pos += 1;
        }
        while *bytes.get(pos)? == 0xff {
            pos += 1;
        }
        let marker = *bytes.get(pos)?;
        pos += 1;
        match marker {
            // Standalone markers carry no length.
            0x01 | 0xd0..=0xd8 => continue,
            // End of image or start of scan: no frame header before it.
            0xd9 | 0xda => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*bytes.get(pos)?, *bytes.get(pos + 1)?]));
        if len < 2 {
            return None;
        }
        let is_sof = matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc);
        if is_sof {
            let seg = bytes.get(pos + 2..pos + len)?;
            let h = u32::from(u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]));
            let w = u32::from(u16::from_be_bytes([*seg.get(3)?, *seg.get(4)?]));
            return (w > 0 && h > 0).then_some((w, h));
        }
        pos += len;
    }
}

/// What a photo's EXIF says.
struct PhotoExif {
    /// DateTimeOriginal (else DateTime) as written: `2025:11:23 10:02:03`.
    taken: Option<String>,
    /// The same, in UTC when the EXIF also gives the offset (OffsetTimeOriginal).
    taken_utc: Option<custody_core::time::Timestamp>,
    location: Option<EmbeddedLocation>,
    rotation: Option<i32>,
}

fn read_exif(jpeg: &[u8]) -> Option<PhotoExif> {
    use exif::{In, Tag, Value};
    let exif = exif::Reader::new()
        .read_from_container(&mut std::io::Cursor::new(jpeg))
        .ok()?;
    let ascii = |tag: Tag| -> Option<String> {
        match &exif.get_field(tag, In::PRIMARY)?.value {
            Value::Ascii(v) => v
                .first()
                .map(|s| String::from_utf8_lossy(s).trim().to_string())
                .filter(|s| !s.is_empty()),
            _ => None,
        }
    };
    let taken = ascii(Tag::DateTimeOriginal).or_else(|| ascii(Tag::DateTime));
    let offset = ascii(Tag::OffsetTimeOriginal).or_else(|| ascii(Tag::OffsetTime));
    let taken_utc = match (&taken, &offset) {
        (Some(t), Some(o)) => chrono::NaiveDateTime::parse_from_str(t, "%Y:%m:%d %H:%M:%S")
            .ok()
            .and_then(|n| {
                custody_core::time::Timestamp::parse_rfc3339(&format!(
                    "{}{o}",
                    n.format("%Y-%m-%dT%H:%M:%S")
                ))
                .ok()
            }),
        _ => None,
    };

    let degrees = |tag: Tag| -> Option<f64> {
        match &exif.get_field(tag, In::PRIMARY)?.value {
            Value::Rational(v) if !v.is_empty() => {
                let part = |i: usize| v.get(i).map_or(0.0, |r| r.to_f64());
                let d = part(0) + part(1) / 60.0 + part(2) / 3600.0;
                d.is_finite().then_some(d)
            }
            _ => None,
        }
    };
    let reference = |tag: Tag| ascii(tag).and_then(|s| s.chars().next());
    let location = match (degrees(Tag::GPSLatitude), degrees(Tag::GPSLongitude)) {
        (Some(lat), Some(lon)) => {
            let lat = if reference(Tag::GPSLatitudeRef) == Some('S') {
                -lat
            } else {
                lat
            };
            let lon = if reference(Tag::GPSLongitudeRef) == Some('W') {
                -lon
            } else {
                lon
            };
            let alt = match &exif
                .get_field(Tag::GPSAltitude, In::PRIMARY)
                .map(|f| &f.value)
            {
                Some(Value::Rational(v)) => v.first().map(|r| r.to_f64()).filter(|a| a.is_finite()),
                _ => None,
            }
            .map(|a| {
                let below = exif
                    .get_field(Tag::GPSAltitudeRef, In::PRIMARY)
                    .and_then(|f| f.value.get_uint(0))
                    == Some(1);
                if below { -a } else { a }
            });
            ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
                .then_some(EmbeddedLocation { lat, lon, alt })
        }
        _ => None,
    };
    let rotation = exif
        .get_field(Tag::Orientation, In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .and_then(|o| match o {
            3 => Some(180),
            6 => Some(90),
            8 => Some(270),
            _ => None,
        });
    Some(PhotoExif {
        taken,
        taken_utc,
        location,
        rotation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_sizes_are_read_from_the_frame_header_and_garbage_is_refused() {
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00];
        jpeg.extend_from_slice(&[0xff, 0xc0, 0x00, 0x0b, 0x08, 0xea, 0x60, 0xea, 0x60, 0x01]);
        jpeg.extend_from_slice(&[0x01, 0x11, 0x00]);
        assert_eq!(jpeg_dimensions(&jpeg), Some((60000, 60000)));
        assert_eq!(jpeg_dimensions(&jpeg[..12]), None);
        assert_eq!(jpeg_dimensions(b"hello"), None);
        for cut in 0..jpeg.len() {
            let _ = jpeg_dimensions(&jpeg[..cut]);
        }
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        png.extend_from_slice(&30000u32.to_be_bytes());
        png.extend_from_slice(&20000u32.to_be_bytes());
        assert_eq!(image_dimensions(&png), Some((30000, 20000)));
        assert_eq!(image_dimensions(&png[..20]), None);
    }

    #[test]
    fn display_matrices_give_clockwise_quarter_turns() {
        let matrix = |a: i32, b: i32, c: i32, d: i32| {
            [a, b, 0, c, d, 0, 0, 0, 1 << 30]
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect::<Vec<u8>>()
        };
        let one = 1 << 16;
        assert_eq!(display_matrix_rotation(&matrix(one, 0, 0, one)), Some(0));
        // What a phone held upright writes: the player turns the picture a quarter clockwise.
        assert_eq!(display_matrix_rotation(&matrix(0, one, -one, 0)), Some(90));
        assert_eq!(
            display_matrix_rotation(&matrix(-one, 0, 0, -one)).map(i32::abs),
            Some(180)
        );
        assert_eq!(display_matrix_rotation(&[0u8; 7]), None);
    }
}
