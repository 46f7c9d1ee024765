//! Poster frames and thumbnail strips, as baseline JPEG.
//!
//! Frames are decoded with ffmpeg, scaled to RGB with swscale at the size they are shown, and
//! encoded with the `image` crate's baseline JPEG encoder (what every browser shows). Sizes are
//! checked against the pixel limit before anything is decoded: a photo header claiming 60000×60000
//! must not make the server allocate gigabytes.

use crate::MediaError;
use crate::ffmpeg::{as_io_error, decoder_error, open_input};
use custody_core::media::{MediaInfo, StreamInfo};
use ff::Rescale;
use ffmpeg_next as ff;
use image::{RgbImage, imageops};
use std::path::Path;

/// Sizes and limits for posters and thumbnail strips.
#[derive(Debug, Clone)]
pub struct PictureOptions {
    /// A poster fits in this box (long side × short side), never upscaled. Default 1280 × 720.
    pub poster_long_side: u32,
    /// The short side of the poster's box. Default 720.
    pub poster_short_side: u32,
    /// Tiles in a thumbnail strip (default 10).
    pub tiles: u32,
    /// The width of each tile (default 160; height by aspect ratio, even).
    pub tile_width: u32,
    /// JPEG quality 1-100 (default 80).
    pub jpeg_quality: u8,
    /// Pictures with more pixels than this are refused before decoding (TooLarge). Default 8192*8192.
    pub max_pixels: u64,
}

impl Default for PictureOptions {
    fn default() -> Self {
        Self {
            poster_long_side: 1280,
            poster_short_side: 720,
            tiles: 10,
            tile_width: 160,
            jpeg_quality: 80,
            max_pixels: 8192 * 8192,
        }
    }
}

/// One JPEG picture and its size.
#[derive(Debug, Clone)]
pub struct Picture {
    /// The baseline JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A row of small frames of a video as one JPEG, left to right in time.
#[derive(Debug, Clone)]
pub struct ThumbStrip {
    /// The baseline JPEG bytes, `tiles × tile_width` wide and `tile_height` high.
    pub jpeg: Vec<u8>,
    /// Tiles in the strip (fewer than asked when the video has fewer decodable frames).
    pub tiles: u32,
    /// Width of each tile in pixels.
    pub tile_width: u32,
    /// Height of each tile in pixels (even).
    pub tile_height: u32,
    /// µs between tiles; tile `i` shows a moment from the middle half of the `i`-th interval
    /// (from `(i + 0.25) × interval_us` on, counted from the start of the video).
    pub interval_us: i64,
}

/// A video's poster frame (the frame at 10 % of its duration, or the first frame when the duration
/// is unknown or seeking fails), or a photo downscaled. Blocking.
///
/// The picture fits in `poster_long_side × poster_short_side` (turned to match a portrait
/// picture), keeps its aspect ratio, is never upscaled and is turned upright when the file says it
/// is recorded sideways (a quarter-turn rotation).
pub fn poster(path: &Path, info: &MediaInfo, opts: &PictureOptions) -> Result<Picture, MediaError> {
    let stream = picture_stream(path, info, opts.max_pixels)?;
    let rotation = stream.rotation.unwrap_or(0);
    let target_us = match info.duration_us {
        Some(d) if d > 0 && !info.is_image() => {
            Some(info.start_time_us.unwrap_or(0).saturating_add(d / 10))
        }
        _ => None,
    };

    let mut src = FrameSource::open(path, stream, opts.max_pixels)?;
    let mut chosen = None;
    if let Some(t) = target_us
        && src.seek(t)
    {
        chosen = src.frame_from(t)?;
    }
    if chosen.is_none() {
        // No duration, a failed seek, or nothing decodable after the seek point (a file cut
        // short whose index still lists the missing part): start again from the beginning.
        let mut src = FrameSource::open(path, stream, opts.max_pixels)?;
        chosen = src.frame_from(i64::MIN)?;
    }
    let Some(frame) = chosen else {
        return Err(no_frames(stream));
    };

    let (w, h) = upright(frame.width(), frame.height(), rotation);
    let (tw, th) = fit(w, h, opts.poster_long_side, opts.poster_short_side, false);
    // Scaled in the frame's stored orientation, then turned.
    let (sw, sh) = upright(tw, th, rotation);
    let img = to_rgb(&frame, sw, sh, rotation)?;
    let jpeg = encode_jpeg(&img, opts.jpeg_quality)?;
    Ok(Picture {
        jpeg,
        width: img.width(),
        height: img.height(),
    })
}

/// A row of `opts.tiles` small frames evenly spaced through a video, as one JPEG (width tiles ×
/// tile_width). Fewer tiles when the video has fewer decodable frames (at least 1, else NoFrames).
/// Blocking.
pub fn thumbs(
    path: &Path,
    info: &MediaInfo,
    opts: &PictureOptions,
) -> Result<ThumbStrip, MediaError> {
    let stream = picture_stream(path, info, opts.max_pixels)?;
    let rotation = stream.rotation.unwrap_or(0);
    // Bounded so that a misconfiguration cannot ask for a strip too wide to allocate.
    let wanted = opts.tiles.clamp(1, MAX_TILES);
    let tile_width = opts.tile_width.clamp(2, MAX_TILE_WIDTH);
    let duration = info.duration_us.filter(|d| *d > 0 && !info.is_image());
    let start = info.start_time_us.unwrap_or(0);
    // The video is cut in `wanted` equal parts; tile i shows a frame from the middle half of
    // part i (the first one decoded at or after a quarter into it). That avoids the black first
    // frame many recorders start with and the very end, which a cut-off file may not have, and
    // it lets a keyframe a little before the middle stand for its part without decoding on to
    // the exact middle.
    let (accept_from, interval_us) = match duration {
        Some(d) => {
            let n = i64::from(wanted);
            // In i128: a damaged header can claim a duration of millennia.
            let at = |i: i64| {
                let offset = i128::from(d) * i128::from(4 * i + 1) / i128::from(4 * n);
                start.saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
            };
            let from: Vec<i64> = (0..n).map(at).collect();
            (from, d / n)
        }
        None => (vec![i64::MIN], 0),
    };

    let mut src = FrameSource::open(path, stream, opts.max_pixels)?;
    let mut frames: Vec<ff::frame::Video> = Vec::new();
    for from in accept_from {
        // Seek only when a keyframe probably lies between where decoding stands and the next
        // tile; otherwise decoding on (skipping frames nothing refers to) is cheaper than
        // seeking back to a keyframe already passed.
        let seek = match src.position_us {
            None => true,
            Some(p) => from - p > src.gop_estimate_us().max(MIN_SEEK_GAP_US),
        };
        if seek && from != i64::MIN {
            src.seek(from);
        }
        match src.frame_from(from)? {
            Some(frame) => frames.push(frame),
            // The end of what can be decoded: later tiles would find nothing either.
            None => break,
        }
    }
    if frames.is_empty() {
        // A failed first seek can leave nothing; the first frame still makes a one-tile strip.
        let mut src = FrameSource::open(path, stream, opts.max_pixels)?;
        if let Some(frame) = src.frame_from(i64::MIN)? {
            frames.push(frame);
        }
    }
    let Some(first) = frames.first() else {
        return Err(no_frames(stream));
    };

    let (w, h) = upright(first.width(), first.height(), rotation);
    let tile_height = even((f64::from(tile_width) * f64::from(h) / f64::from(w)).round() as u32);
    let count = u32::try_from(frames.len()).unwrap_or(u32::MAX);
    let mut strip = RgbImage::new(tile_width * count, tile_height);
    for (i, frame) in frames.iter().enumerate() {
        let (tw, th) = if rotation.rem_euclid(180) == 0 {
            (tile_width, tile_height)
        } else {
            (tile_height, tile_width)
        };
        let tile = to_rgb(frame, tw, th, rotation)?;
        let x = i64::from(tile_width) * i as i64;
        imageops::replace(&mut strip, &tile, x, 0);
    }
    let jpeg = encode_jpeg(&strip, opts.jpeg_quality)?;
    Ok(ThumbStrip {
        jpeg,
        tiles: count,
        tile_width,
        tile_height,
        interval_us,
    })
}

/// At most this many tiles in a strip.
const MAX_TILES: u32 = 100;
/// At most this wide a tile.
const MAX_TILE_WIDTH: u32 = 1920;

/// Seeking is never worth it for a gap shorter than this (µs).
const MIN_SEEK_GAP_US: i64 = 1_000_000;

/// The stream a picture is taken from, after checking its size against the limit.
fn picture_stream<'a>(
    path: &Path,
    info: &'a MediaInfo,
    max_pixels: u64,
) -> Result<&'a StreamInfo, MediaError> {
    let Some(stream) = info.video() else {
        return Err(MediaError::NoFrames(
            "the file holds no picture: it has no video stream".into(),
        ));
    };
    check_size(stream.width, stream.height, max_pixels)?;
    if matches!(stream.codec.as_str(), "mjpeg" | "png") {
        // ffmpeg reports 0×0 for a JPEG whose header claims a size it refuses, and decodes a
        // PNG of any size it accepts (up to ~268 megapixels): read the header ourselves rather
        // than trust a probe that may be from elsewhere.
        let mut head = Vec::new();
        if let Ok(f) = std::fs::File::open(path) {
            use std::io::Read;
            let _ = f.take(1 << 20).read_to_end(&mut head);
        }
        if let Some((w, h)) = crate::probe::image_dimensions(&head) {
            check_size(Some(w), Some(h), max_pixels)?;
        }
    }
    if stream.frames == Some(0) {
        return Err(no_frames(stream));
    }
    Ok(stream)
}

fn check_size(width: Option<u32>, height: Option<u32>, max_pixels: u64) -> Result<(), MediaError> {
    if let (Some(w), Some(h)) = (width, height)
        && u64::from(w) * u64::from(h) > max_pixels
    {
        return Err(MediaError::TooLarge {
            width: w,
            height: h,
            max_pixels,
        });
    }
    Ok(())
}

fn no_frames(stream: &StreamInfo) -> MediaError {
    MediaError::NoFrames(format!(
        "no picture could be decoded from the {} stream",
        stream.codec
    ))
}

/// Width and height as shown, after a quarter-turn rotation.
fn upright(w: u32, h: u32, rotation: i32) -> (u32, u32) {
    if rotation.rem_euclid(180) == 90 {
        (h, w)
    } else {
        (w, h)
    }
}

fn even(v: u32) -> u32 {
    (v & !1).max(2)
}

/// The largest size with the aspect ratio of `w × h` that fits in `long × short` (turned for a
/// portrait picture), never larger than `w × h`; with `even`, both sides rounded down to even.
pub(crate) fn fit(w: u32, h: u32, long: u32, short: u32, make_even: bool) -> (u32, u32) {
    let (bw, bh) = if w >= h { (long, short) } else { (short, long) };
    let scale = (f64::from(bw) / f64::from(w.max(1)))
        .min(f64::from(bh) / f64::from(h.max(1)))
        .min(1.0);
    let tw = ((f64::from(w) * scale).round() as u32).clamp(1, bw.max(1));
    let th = ((f64::from(h) * scale).round() as u32).clamp(1, bh.max(1));
    if make_even {
        (even(tw), even(th))
    } else {
        (tw, th)
    }
}

/// Scales a decoded frame to `tw × th` RGB (in the frame's stored orientation) and turns it upright.
fn to_rgb(
    frame: &ff::frame::Video,
    tw: u32,
    th: u32,
    rotation: i32,
) -> Result<RgbImage, MediaError> {
    let internal = |what: &str, e: ff::Error| MediaError::Internal(format!("{what}: {e}"));
    let mut sws = ff::software::scaling::Context::get(
        frame.format(),
        frame.width(),
        frame.height(),
        ff::format::Pixel::RGB24,
        tw,
        th,
        ff::software::scaling::Flags::AREA,
    )
    .map_err(|e| internal("setting up the scaler", e))?;
    let mut rgb = ff::frame::Video::empty();
    sws.run(frame, &mut rgb)
        .map_err(|e| internal("scaling a frame", e))?;
    let stride = rgb.stride(0);
    let row = tw as usize * 3;
    let data = rgb.data(0);
    let mut buf = Vec::with_capacity(row * th as usize);
    for y in 0..th as usize {
        let line = data
            .get(y * stride..y * stride + row)
            .ok_or_else(|| MediaError::Internal("the scaler returned a short picture".into()))?;
        buf.extend_from_slice(line);
    }
    let img = RgbImage::from_raw(tw, th, buf)
        .ok_or_else(|| MediaError::Internal("the scaler returned a short picture".into()))?;
    Ok(match rotation.rem_euclid(360) {
        90 => imageops::rotate90(&img),
        180 => imageops::rotate180(&img),
        270 => imageops::rotate270(&img),
        _ => img,
    })
}

fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, MediaError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode_image(img)
        .map_err(|e| MediaError::Internal(format!("encoding a JPEG: {e}")))?;
    Ok(out)
}

/// Decoded pictures of one stream, in order, surviving damaged packets and a cut-off end.
struct FrameSource {
    ictx: ff::format::context::Input,
    index: usize,
    time_base: ff::Rational,
    decoder: ff::decoder::Video,
    max_pixels: u64,
    /// End of input was sent to the decoder; what it still holds is being drained.
    draining: bool,
    /// Time (µs) of the last frame decoded, `None` before the first and after a seek.
    position_us: Option<i64>,
    /// Time of the last keyframe decoded since the last seek.
    last_key_us: Option<i64>,
    /// The longest keyframe distance seen (µs), a lower bound of the file's GOP length.
    gop_us: i64,
    /// Where the last seek aimed and where decoding stood before it, to learn from a seek that
    /// landed behind (no keyframe in between).
    seek_from: Option<(i64, Option<i64>)>,
    /// Whether frames nothing refers to are being skipped.
    skipping: bool,
    /// Frames with the same or an earlier time were already returned.
    returned_us: Option<i64>,
}

/// Consecutive unreadable packets after which the rest of a file is taken as unreadable.
const MAX_BAD_READS: u32 = 10_000;

impl FrameSource {
    fn open(path: &Path, stream: &StreamInfo, max_pixels: u64) -> Result<Self, MediaError> {
        let ictx = open_input(path)?;
        let index = stream.index as usize;
        let st = ictx.stream(index).ok_or_else(|| {
            MediaError::Unreadable(format!("the file no longer has stream {index}"))
        })?;
        let time_base = st.time_base();
        let codec = st.parameters().id();
        let mut ctx = ff::codec::Context::from_parameters(st.parameters())
            .map_err(|e| decoder_error(codec, e))?;
        // Let ffmpeg pick the thread count: a 4K H.265 frame decodes several times faster.
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        let decoder = ctx.decoder().video().map_err(|e| decoder_error(codec, e))?;
        check_size(
            Some(decoder.width()).filter(|w| *w > 0),
            Some(decoder.height()).filter(|h| *h > 0),
            max_pixels,
        )?;
        Ok(Self {
            ictx,
            index,
            time_base,
            decoder,
            max_pixels,
            draining: false,
            position_us: None,
            last_key_us: None,
            gop_us: 0,
            seek_from: None,
            skipping: false,
            returned_us: None,
        })
    }

    /// What is known of the distance between keyframes: at least the longest seen, and at least
    /// how far decoding has gone since the last one.
    fn gop_estimate_us(&self) -> i64 {
        let since_key = match (self.position_us, self.last_key_us) {
            (Some(p), Some(k)) => p - k,
            _ => 0,
        };
        self.gop_us.max(since_key)
    }

    /// Seeks to the keyframe at or before `us` (µs from the file's time origin). False when the
    /// file cannot seek there; decoding then goes on from where it was.
    fn seek(&mut self, us: i64) -> bool {
        if self.ictx.seek(us, ..us).is_err() {
            return false;
        }
        self.decoder.flush();
        self.draining = false;
        self.seek_from = Some((us, self.position_us));
        self.position_us = None;
        self.last_key_us = None;
        true
    }

    fn set_skipping(&mut self, skip: bool) {
        if self.skipping != skip {
            self.skipping = skip;
            self.decoder.skip_frame(if skip {
                ff::Discard::NonReference
            } else {
                ff::Discard::Default
            });
        }
    }

    /// The first frame whose time is at or after `from_us`, or the last frame decoded when the
    /// stream ends first. Frames before `from_us` that no other frame refers to are not even
    /// decoded. A frame is returned at most once. `None` when nothing new decodes.
    fn frame_from(&mut self, from_us: i64) -> Result<Option<ff::frame::Video>, MediaError> {
        let mut last: Option<(ff::frame::Video, i64)> = None;
        self.set_skipping(from_us != i64::MIN);
        loop {
            let mut frame = ff::frame::Video::empty();
            if !self.next_frame(&mut frame)? {
                self.set_skipping(false);
                return Ok(last.map(|(f, us)| {
                    self.returned_us = Some(us);
                    f
                }));
            }
            let us = match frame.timestamp() {
                Some(pts) => pts.rescale(self.time_base, ff::rescale::TIME_BASE),
                // Without a time, frames count as consecutive.
                None => self.position_us.map_or(0, |p| p + 1),
            };
            self.learn(us, frame.is_key());
            if self.returned_us.is_some_and(|r| us <= r) {
                continue;
            }
            check_size(Some(frame.width()), Some(frame.height()), self.max_pixels)?;
            if us >= from_us {
                self.set_skipping(false);
                self.returned_us = Some(us);
                return Ok(Some(frame));
            }
            last = Some((frame, us));
        }
    }

    /// Notes where decoding stands and what it says about the distance between keyframes.
    fn learn(&mut self, us: i64, key: bool) {
        if let Some((target, before)) = self.seek_from.take()
            && before.is_some_and(|b| us <= b)
        {
            // The seek landed at or behind where decoding already was: there is no keyframe
            // between that point and the seek's target.
            self.gop_us = self.gop_us.max(target - us);
        }
        if key {
            if let Some(k) = self.last_key_us
                && us > k
            {
                self.gop_us = self.gop_us.max(us - k);
            }
            self.last_key_us = Some(us);
        }
        self.position_us = Some(us);
    }

    /// Decodes the next frame into `frame`; false at the end of what can be decoded.
    fn next_frame(&mut self, frame: &mut ff::frame::Video) -> Result<bool, MediaError> {
        let mut bad_reads = 0u32;
        loop {
            match self.decoder.receive_frame(frame) {
                Ok(()) if frame.width() > 0 && frame.height() > 0 => return Ok(true),
                Ok(()) => continue,
                Err(ff::Error::Eof) => return Ok(false),
                Err(_) if self.draining => return Ok(false),
                // EAGAIN: it wants more input. Any other error is a damaged frame: go on.
                Err(_) => {}
            }
            let mut packet = ff::Packet::empty();
            match packet.read(&mut self.ictx) {
                Ok(()) => {
                    if packet.stream() != self.index {
                        continue;
                    }
                    bad_reads = 0;
                    // A packet the decoder refuses is damaged; the next keyframe recovers.
                    let _ = self.decoder.send_packet(&packet);
                }
                Err(ff::Error::InvalidData) if bad_reads < MAX_BAD_READS => bad_reads += 1,
                Err(e) => {
                    if let Some(source) = as_io_error(e)
                        && crate::ffmpeg::is_system_errno(&source)
                    {
                        return Err(MediaError::Io {
                            context: "reading the media file".into(),
                            source,
                        });
                    }
                    // The end of the file, or of what can be read of it.
                    let _ = self.decoder.send_eof();
                    self.draining = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_fit_the_box_turned_for_portrait_and_are_never_upscaled() {
        assert_eq!(fit(1920, 1080, 1280, 720, true), (1280, 720));
        assert_eq!(fit(1080, 1920, 1280, 720, true), (720, 1280));
        assert_eq!(fit(4000, 3000, 1280, 720, false), (960, 720));
        assert_eq!(fit(642, 362, 1280, 720, true), (642, 362));
        assert_eq!(fit(641, 361, 1280, 720, true), (640, 360));
        assert_eq!(fit(1, 1, 1280, 720, true), (2, 2));
    }
}
