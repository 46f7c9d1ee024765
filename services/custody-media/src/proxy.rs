//! Browser proxies: H.264/AAC MP4 with fast-start, at most 720p.
//!
//! One pass over the input: packets are decoded, pictures go through a filter graph (turn upright,
//! scale, `yuv420p`) into libx264, sound through another (resample, `fltp`, stereo or mono, frames
//! of the AAC frame size) into ffmpeg's AAC encoder, and the packets are interleaved into an MP4
//! whose index is moved to the front when it is finished (`movflags=+faststart`), so a browser can
//! start playing before it has the whole file.

use crate::MediaError;
use crate::ffmpeg::{as_io_error, decoder_error, open_input, output_error};
use crate::picture::fit;
use custody_core::media::{MediaInfo, StreamKind};
use ff::{Rational, Rescale, filter, frame};
use ffmpeg_next as ff;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a browser proxy is encoded.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The proxy fits in long side × short side (default 1280 × 720: "at most 720p"), never upscaled, even dimensions.
    pub long_side: u32,
    /// The short side of the box (default 720).
    pub short_side: u32,
    /// libx264 preset (default "veryfast").
    pub preset: String,
    /// libx264 CRF (default 23).
    pub crf: u8,
    /// AAC bit rate (default 96_000).
    pub audio_bit_rate: u64,
    /// Encoder threads, 0 = ffmpeg's choice.
    pub threads: u32,
    /// Pictures with more pixels than this are refused before decoding (TooLarge). Default 8192*8192.
    pub max_pixels: u64,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            long_side: 1280,
            short_side: 720,
            preset: "veryfast".into(),
            crf: 23,
            audio_bit_rate: 96_000,
            threads: 0,
            max_pixels: 8192 * 8192,
        }
    }
}

/// What a finished proxy holds, as probed from the written file.
#[derive(Debug, Clone)]
pub struct ProxyReport {
    /// Picture width of the proxy, when it has video.
    pub width: Option<u32>,
    /// Picture height of the proxy, when it has video.
    pub height: Option<u32>,
    /// Whether the proxy has a video track.
    pub has_video: bool,
    /// Whether the proxy has an audio track.
    pub has_audio: bool,
    /// Length of the proxy in µs.
    pub duration_us: i64,
    /// seconds of media per second of wall time
    pub speed: f64,
}

/// Transcodes `input` into a browser proxy at `output` (a local path; the file is
/// created/overwritten): H.264 (libx264, yuv420p) + AAC-LC (ffmpeg's native "aac" encoder) in MP4
/// with `movflags=+faststart` (moov before mdat). Video-less input (odd audio codecs) gives an
/// audio-only MP4; audio-less input a video-only MP4. Checks `cancel` between packets and returns
/// Cancelled when set. Calls `progress(fraction 0..=1)` now and then (at most a few times per
/// second). Blocking.
///
/// A damaged or cut-off input gives a proxy of what could be decoded; nothing decodable is
/// [`MediaError::NoFrames`]. On any error, and on cancellation, `output` is removed.
pub fn make_proxy(
    input: &Path,
    output: &Path,
    info: &MediaInfo,
    opts: &ProxyOptions,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(f64),
) -> Result<ProxyReport, MediaError> {
    let started = Instant::now();
    let result = transcode(input, output, info, opts, cancel, progress);
    let result = result.and_then(|()| {
        let made = crate::probe(output)?;
        let video = made.video();
        let duration_us = made.duration_us.unwrap_or(0);
        let wall = started.elapsed().as_secs_f64().max(1e-6);
        Ok(ProxyReport {
            width: video.and_then(|v| v.width),
            height: video.and_then(|v| v.height),
            has_video: video.is_some(),
            has_audio: made.audio().is_some(),
            duration_us,
            speed: duration_us as f64 / 1e6 / wall,
        })
    });
    if result.is_err() {
        // A half-written proxy is worthless and must not be mistaken for a finished one.
        let _ = std::fs::remove_file(output);
    }
    result
}

/// How often `progress` is called at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Consecutive unreadable packets after which the rest of the input is taken as unreadable.
const MAX_BAD_READS: u32 = 10_000;

fn transcode(
    input: &Path,
    output: &Path,
    info: &MediaInfo,
    opts: &ProxyOptions,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(f64),
) -> Result<(), MediaError> {
    let mut ictx = open_input(input)?;

    // The streams to convert: the main picture (not a cover image, not a track the file lists
    // with no frames) and the first sound.
    let video_index = info
        .streams
        .iter()
        .filter(|s| s.kind == StreamKind::Video && s.frames != Some(0))
        .find(|s| {
            ictx.stream(s.index as usize).is_some_and(|st| {
                !st.disposition()
                    .contains(ff::format::stream::Disposition::ATTACHED_PIC)
            })
        })
        .map(|s| s.index as usize);
    let audio_index = info
        .streams
        .iter()
        .find(|s| s.kind == StreamKind::Audio && s.frames != Some(0))
        .map(|s| s.index as usize);
    if video_index.is_none() && audio_index.is_none() {
        return Err(MediaError::NoFrames(
            "the file holds no audio or video stream to convert".into(),
        ));
    }
    if let Some(v) = video_index.and_then(|i| info.streams.iter().find(|s| s.index as usize == i))
        && let (Some(w), Some(h)) = (v.width, v.height)
        && u64::from(w) * u64::from(h) > opts.max_pixels
    {
        return Err(MediaError::TooLarge {
            width: w,
            height: h,
            max_pixels: opts.max_pixels,
        });
    }
    // Timestamps are shifted so that the proxy starts at zero (MPEG-TS starts anywhere, MP4 audio
    // often slightly before zero).
    let start_us = [video_index, audio_index]
        .into_iter()
        .flatten()
        .filter_map(|i| ictx.stream(i))
        .filter(|s| s.start_time() != i64::MIN)
        .map(|s| {
            s.start_time()
                .rescale(s.time_base(), ff::rescale::TIME_BASE)
        })
        .min()
        .unwrap_or(0);

    let mut octx = ff::format::output_as(output, "mp4")
        .map_err(|e| output_error(&format!("creating {}", output.display()), e))?;
    let global_header = octx
        .format()
        .flags()
        .contains(ff::format::Flags::GLOBAL_HEADER);

    let mut video = match video_index {
        Some(i) => VideoPipe::new(&ictx, i, &mut octx, opts, global_header, start_us)?,
        None => None,
    };
    let mut audio = match audio_index {
        Some(i) => Some(AudioPipe::new(
            &ictx,
            i,
            &mut octx,
            opts,
            global_header,
            start_us,
        )?),
        None => None,
    };
    if video.is_none() && audio.is_none() {
        return Err(MediaError::NoFrames(
            "the file holds no audio or video stream that can be converted".into(),
        ));
    }

    let mut mux_opts = ff::Dictionary::new();
    mux_opts.set("movflags", "+faststart");
    octx.write_header_with(mux_opts)
        .map_err(|e| output_error("writing the proxy's header", e))?;
    let mut mux = Muxer { octx };
    if let Some(v) = video.as_mut() {
        v.out_tb = mux.time_base(v.out_index);
    }
    if let Some(a) = audio.as_mut() {
        a.out_tb = mux.time_base(a.out_index);
    }

    let duration_us = info.duration_us.filter(|d| *d > 0);
    let mut report = |pos_us: i64, last: &mut Instant, force: bool| {
        if force || last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            let fraction = duration_us.map_or(0.0, |d| (pos_us as f64 / d as f64).clamp(0.0, 1.0));
            progress(fraction);
        }
    };
    let mut last_report = Instant::now();
    report(0, &mut last_report, true);

    let mut bad_reads = 0u32;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(MediaError::Cancelled);
        }
        let mut packet = ff::Packet::empty();
        match packet.read(&mut ictx) {
            Ok(()) => {
                bad_reads = 0;
                let index = packet.stream();
                if let Some(v) = video.as_mut().filter(|v| v.in_index == index) {
                    v.send_packet(&packet, &mut mux)?;
                } else if let Some(a) = audio.as_mut().filter(|a| a.in_index == index) {
                    a.send_packet(&packet, &mut mux)?;
                } else {
                    continue;
                }
                let pos = video
                    .as_ref()
                    .map(|v| v.position_us)
                    .into_iter()
                    .chain(audio.as_ref().map(|a| a.position_us))
                    .max()
                    .unwrap_or(0);
                report(pos, &mut last_report, false);
            }
            Err(ff::Error::Eof) => break,
            // A damaged packet: the demuxer resyncs on the next one.
            Err(ff::Error::InvalidData) if bad_reads < MAX_BAD_READS => bad_reads += 1,
            Err(e) => match as_io_error(e) {
                Some(source) if crate::ffmpeg::is_system_errno(&source) => {
                    return Err(MediaError::Io {
                        context: format!("reading {}", input.display()),
                        source,
                    });
                }
                // Anything else ends what can be read; what was decoded so far is kept.
                _ => break,
            },
        }
    }

    if let Some(v) = video.as_mut() {
        v.finish(&mut mux)?;
    }
    if let Some(a) = audio.as_mut() {
        a.finish(&mut mux)?;
    }
    let decoded = video.as_ref().map_or(0, |v| v.frames) + audio.as_ref().map_or(0, |a| a.frames);
    mux.octx
        .write_trailer()
        .map_err(|e| output_error("finishing the proxy", e))?;
    drop(mux);
    if decoded == 0 {
        return Err(MediaError::NoFrames(
            "no picture or sound could be decoded from the file".into(),
        ));
    }
    progress(1.0);
    Ok(())
}

/// The output file and what writing to it needs.
struct Muxer {
    octx: ff::format::context::Output,
}

impl Muxer {
    fn time_base(&self, index: usize) -> Rational {
        self.octx
            .stream(index)
            .map_or(Rational(1, 90_000), |s| s.time_base())
    }

    fn write(
        &mut self,
        packet: &mut ff::Packet,
        index: usize,
        from: Rational,
        to: Rational,
    ) -> Result<(), MediaError> {
        packet.set_stream(index);
        packet.rescale_ts(from, to);
        packet.set_position(-1);
        packet
            .write_interleaved(&mut self.octx)
            .map_err(|e| output_error("writing the proxy", e))
    }
}

/// Encoded packets waiting in `encoder` go to the muxer.
fn drain_encoder(
    encoder: &mut ff::encoder::Encoder,
    mux: &mut Muxer,
    out_index: usize,
    enc_tb: Rational,
    out_tb: Rational,
) -> Result<(), MediaError> {
    let mut packet = ff::Packet::empty();
    loop {
        match encoder.receive_packet(&mut packet) {
            Ok(()) => mux.write(&mut packet, out_index, enc_tb, out_tb)?,
            Err(ff::Error::Eof) => return Ok(()),
            Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => return Ok(()),
            Err(e) => return Err(MediaError::Internal(format!("encoding: {e}"))),
        }
    }
}

fn internal(what: &str) -> impl Fn(ff::Error) -> MediaError + '_ {
    move |e| MediaError::Internal(format!("{what}: {e}"))
}

/// The picture half: decoder → buffer → [transpose] → scale → format → buffersink → libx264.
struct VideoPipe {
    in_index: usize,
    in_tb: Rational,
    decoder: ff::decoder::Video,
    /// Built from the first decoded frame (its format is only certain then), rebuilt when the
    /// picture size or format changes mid-stream.
    graph: Option<(filter::Graph, (u32, u32, ff::format::Pixel))>,
    rotation: i32,
    width: u32,
    height: u32,
    encoder: ff::encoder::Video,
    out_index: usize,
    out_tb: Rational,
    /// Subtracted from every timestamp (input time base) so that the proxy starts at zero.
    offset: i64,
    last_pts: Option<i64>,
    frame_step: i64,
    frames: u64,
    position_us: i64,
}

impl VideoPipe {
    fn new(
        ictx: &ff::format::context::Input,
        index: usize,
        octx: &mut ff::format::context::Output,
        opts: &ProxyOptions,
        global_header: bool,
        start_us: i64,
    ) -> Result<Option<Self>, MediaError> {
        let Some(st) = ictx.stream(index) else {
            return Ok(None);
        };
        let in_tb = st.time_base();
        let codec = st.parameters().id();
        let mut ctx = ff::codec::Context::from_parameters(st.parameters())
            .map_err(|e| decoder_error(codec, e))?;
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        let decoder = ctx.decoder().video().map_err(|e| decoder_error(codec, e))?;
        let (w, h) = (decoder.width(), decoder.height());
        if w == 0 || h == 0 {
            // No picture size: nothing to convert (the sound, if any, still is).
            return Ok(None);
        }
        if u64::from(w) * u64::from(h) > opts.max_pixels {
            return Err(MediaError::TooLarge {
                width: w,
                height: h,
                max_pixels: opts.max_pixels,
            });
        }
        let rotation = info_rotation(&st);
        // Shown size: sample aspect ratio applied, turned upright.
        let sar = decoder.aspect_ratio();
        let shown_w = if sar.numerator() > 0 && sar.denominator() > 0 {
            (f64::from(w) * f64::from(sar)).round() as u32
        } else {
            w
        };
        let (sw, sh) = if rotation % 180 == 0 {
            (shown_w, h)
        } else {
            (h, shown_w)
        };
        let (width, height) = fit(sw, sh, opts.long_side, opts.short_side, true);

        let frame_rate = Some(st.avg_frame_rate())
            .filter(|r| r.numerator() > 0 && r.denominator() > 0)
            .or_else(|| Some(st.rate()).filter(|r| r.numerator() > 0 && r.denominator() > 0));
        let frame_step = frame_rate
            .map_or(1, |r| 1i64.rescale(r.invert(), in_tb))
            .max(1);

        let x264 = ff::encoder::find_by_name("libx264").ok_or_else(|| {
            MediaError::Unsupported("this ffmpeg build has no libx264 encoder".into())
        })?;
        let mut ost = octx
            .add_stream(x264)
            .map_err(internal("adding the video stream"))?;
        let out_index = ost.index();
        let mut enc = ff::codec::Context::new_with_codec(x264)
            .encoder()
            .video()
            .map_err(internal("setting up libx264"))?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_aspect_ratio(Rational(1, 1));
        enc.set_time_base(in_tb);
        enc.set_frame_rate(frame_rate);
        if let Some(r) = frame_rate {
            // A keyframe every two seconds, so that reviewers can jump around the proxy quickly.
            enc.set_gop((f64::from(r) * 2.0).round().clamp(1.0, 600.0) as u32);
        }
        if global_header {
            enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        }
        enc.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: opts.threads as usize,
            ..Default::default()
        });
        let mut x264_opts = ff::Dictionary::new();
        x264_opts.set("preset", &opts.preset);
        x264_opts.set("crf", &opts.crf.to_string());
        let encoder = enc
            .open_with(x264_opts)
            .map_err(internal("opening libx264"))?;
        ost.set_parameters(&encoder);
        ost.set_time_base(in_tb);
        if let Some(r) = frame_rate {
            ost.set_avg_frame_rate(r);
        }
        Ok(Some(Self {
            in_index: index,
            in_tb,
            decoder,
            graph: None,
            rotation,
            width,
            height,
            encoder,
            out_index,
            out_tb: in_tb,
            offset: start_us.rescale(ff::rescale::TIME_BASE, in_tb),
            last_pts: None,
            frame_step,
            frames: 0,
            position_us: 0,
        }))
    }

    fn send_packet(&mut self, packet: &ff::Packet, mux: &mut Muxer) -> Result<(), MediaError> {
        // A packet the decoder refuses is damaged; decoding recovers at the next keyframe.
        let _ = self.decoder.send_packet(packet);
        self.receive_frames(mux)
    }

    fn receive_frames(&mut self, mux: &mut Muxer) -> Result<(), MediaError> {
        let mut frame = frame::Video::empty();
        loop {
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => self.filter_frame(&mut frame, mux)?,
                Err(ff::Error::Eof) => return Ok(()),
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => return Ok(()),
                // A damaged frame: go on with the next packet.
                Err(_) => return Ok(()),
            }
        }
    }

    fn filter_frame(
        &mut self,
        frame: &mut frame::Video,
        mux: &mut Muxer,
    ) -> Result<(), MediaError> {
        if frame.width() == 0 || frame.height() == 0 {
            return Ok(());
        }
        // Encoders need strictly increasing timestamps; a missing one follows the last, a repeated
        // or backward one (damaged input) is dropped.
        let pts = match frame.timestamp() {
            Some(p) => p.saturating_sub(self.offset),
            None => self
                .last_pts
                .map_or(0, |l| l.saturating_add(self.frame_step)),
        };
        if self.last_pts.is_some_and(|l| pts <= l) {
            return Ok(());
        }
        self.last_pts = Some(pts);
        self.position_us = pts.rescale(self.in_tb, ff::rescale::TIME_BASE);
        frame.set_pts(Some(pts));
        let key = (frame.width(), frame.height(), frame.format());
        if self.graph.as_ref().is_some_and(|(_, k)| *k != key) {
            // The picture changed size or format mid-stream: finish the old graph, start anew.
            self.flush_graph(mux)?;
            self.graph = None;
        }
        if self.graph.is_none() {
            let g = self.build_graph(frame)?;
            self.graph = Some((g, key));
        }
        if let Some((g, _)) = self.graph.as_mut() {
            let mut src = g.get("in").ok_or_else(|| {
                MediaError::Internal("the video filter graph has no input".into())
            })?;
            src.source()
                .add(frame)
                .map_err(internal("filtering a picture"))?;
        }
        self.frames += 1;
        self.pull_filtered(mux)
    }

    fn build_graph(&self, frame: &frame::Video) -> Result<filter::Graph, MediaError> {
        let fail = internal("building the video filter graph");
        let pix = frame
            .format()
            .descriptor()
            .map(|d| d.name())
            .ok_or_else(|| {
                MediaError::Unsupported("a picture in an unknown pixel format".into())
            })?;
        let sar = frame.aspect_ratio();
        let sar = if sar.numerator() > 0 && sar.denominator() > 0 {
            sar
        } else {
            Rational(1, 1)
        };
        let args = format!(
            "video_size={}x{}:pix_fmt={pix}:time_base={}/{}:pixel_aspect={}/{}",
            frame.width(),
            frame.height(),
            self.in_tb.numerator(),
            self.in_tb.denominator(),
            sar.numerator(),
            sar.denominator()
        );
        let turn = match self.rotation {
            90 => "transpose=clock,",
            180 => "hflip,vflip,",
            270 => "transpose=cclock,",
            _ => "",
        };
        let spec = format!(
            "{turn}scale={}:{}:flags=bicubic,setsar=1,format=yuv420p",
            self.width, self.height
        );
        let mut g = filter::Graph::new();
        let buffer = filter::find("buffer")
            .ok_or_else(|| MediaError::Internal("no buffer filter".into()))?;
        let sink = filter::find("buffersink")
            .ok_or_else(|| MediaError::Internal("no buffersink filter".into()))?;
        g.add(&buffer, "in", &args).map_err(&fail)?;
        g.add(&sink, "out", "").map_err(&fail)?;
        if let Some(mut out) = g.get("out") {
            out.set_pixel_format(ff::format::Pixel::YUV420P);
        }
        g.output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&spec))
            .map_err(&fail)?;
        g.validate().map_err(&fail)?;
        Ok(g)
    }

    fn pull_filtered(&mut self, mux: &mut Muxer) -> Result<(), MediaError> {
        let Some((g, _)) = self.graph.as_mut() else {
            return Ok(());
        };
        let mut filtered = frame::Video::empty();
        loop {
            let got = match g.get("out") {
                Some(mut out) => out.sink().frame(&mut filtered).is_ok(),
                None => false,
            };
            if !got {
                return Ok(());
            }
            // Let x264 choose the picture type instead of copying the decoder's.
            filtered.set_kind(ff::picture::Type::None);
            self.encoder
                .send_frame(&filtered)
                .map_err(internal("encoding a picture"))?;
            drain_encoder(
                &mut self.encoder,
                mux,
                self.out_index,
                self.in_tb,
                self.out_tb,
            )?;
        }
    }

    fn flush_graph(&mut self, mux: &mut Muxer) -> Result<(), MediaError> {
        if let Some((g, _)) = self.graph.as_mut()
            && let Some(mut src) = g.get("in")
        {
            let _ = src.source().flush();
        }
        self.pull_filtered(mux)
    }

    /// Drains the decoder, the filter graph and the encoder.
    fn finish(&mut self, mux: &mut Muxer) -> Result<(), MediaError> {
        let _ = self.decoder.send_eof();
        self.receive_frames(mux)?;
        self.flush_graph(mux)?;
        self.encoder
            .send_eof()
            .map_err(internal("finishing the picture encoder"))?;
        drain_encoder(
            &mut self.encoder,
            mux,
            self.out_index,
            self.in_tb,
            self.out_tb,
        )
    }
}

/// Quarter-turn rotation of a stream, as the probe reads it.
fn info_rotation(st: &ff::format::stream::Stream) -> i32 {
    crate::probe::stream_rotation(st).unwrap_or(0)
}

/// The sound half: decoder → abuffer → aresample → aformat → abuffersink (AAC frame size) → aac.
struct AudioPipe {
    in_index: usize,
    in_tb: Rational,
    decoder: ff::decoder::Audio,
    graph: Option<(filter::Graph, (u32, ff::format::Sample, u64))>,
    encoder: ff::encoder::Audio,
    rate: u32,
    layout: ff::ChannelLayout,
    out_index: usize,
    enc_tb: Rational,
    out_tb: Rational,
    offset: i64,
    next_pts: Option<i64>,
    frames: u64,
    position_us: i64,
}

impl AudioPipe {
    fn new(
        ictx: &ff::format::context::Input,
        index: usize,
        octx: &mut ff::format::context::Output,
        opts: &ProxyOptions,
        global_header: bool,
        start_us: i64,
    ) -> Result<Self, MediaError> {
        let st = ictx
            .stream(index)
            .ok_or_else(|| MediaError::Unreadable(format!("the file has no stream {index}")))?;
        let in_tb = st.time_base();
        let codec = st.parameters().id();
        let ctx = ff::codec::Context::from_parameters(st.parameters())
            .map_err(|e| decoder_error(codec, e))?;
        let mut dec = ctx.decoder();
        dec.set_packet_time_base(in_tb);
        let decoder = dec.audio().map_err(|e| decoder_error(codec, e))?;

        let aac = ff::encoder::find_by_name("aac").ok_or_else(|| {
            MediaError::Unsupported("this ffmpeg build has no AAC encoder".into())
        })?;
        let aac_audio = aac
            .audio()
            .map_err(internal("looking up the AAC encoder"))?;
        let in_rate = decoder.rate();
        // Keep the sample rate when AAC supports it (8-96 kHz), else 48 kHz.
        let rate = if in_rate > 0
            && aac_audio
                .rates()
                .is_some_and(|mut rates| rates.any(|r| i64::from(r) == i64::from(in_rate)))
        {
            in_rate
        } else {
            48_000
        };
        // Browsers play any layout, but reviewers listen on headphones: more than two channels
        // are mixed down to stereo.
        let layout = if decoder.channels() == 1 {
            ff::ChannelLayout::MONO
        } else {
            ff::ChannelLayout::STEREO
        };

        let mut ost = octx
            .add_stream(aac)
            .map_err(internal("adding the audio stream"))?;
        let out_index = ost.index();
        let mut enc = ff::codec::Context::new_with_codec(aac)
            .encoder()
            .audio()
            .map_err(internal("setting up the AAC encoder"))?;
        enc.set_rate(rate as i32);
        enc.set_channel_layout(layout);
        enc.set_channels(layout.channels());
        enc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Planar));
        enc.set_bit_rate(usize::try_from(opts.audio_bit_rate).unwrap_or(usize::MAX));
        let enc_tb = Rational(1, rate as i32);
        enc.set_time_base(enc_tb);
        if global_header {
            enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        }
        let encoder = enc
            .open_as(aac)
            .map_err(internal("opening the AAC encoder"))?;
        ost.set_parameters(&encoder);
        ost.set_time_base(enc_tb);
        Ok(Self {
            in_index: index,
            in_tb,
            decoder,
            graph: None,
            encoder,
            rate,
            layout,
            out_index,
            enc_tb,
            out_tb: enc_tb,
            offset: start_us.rescale(ff::rescale::TIME_BASE, in_tb),
            next_pts: None,
            frames: 0,
            position_us: 0,
        })
    }

    fn send_packet(&mut self, packet: &ff::Packet, mux: &mut Muxer) -> Result<(), MediaError> {
        let _ = self.decoder.send_packet(packet);
        self.receive_frames(mux)
    }

    fn receive_frames(&mut self, mux: &mut Muxer) -> Result<(), MediaError> {
        let mut frame = frame::Audio::empty();
        loop {
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => self.filter_frame(&mut frame, mux)?,
                Err(ff::Error::Eof) => return Ok(()),
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => return Ok(()),
                Err(_) => return Ok(()),
            }
        }
    }

    fn filter_frame(
        &mut self,
        frame: &mut frame::Audio,
        mux: &mut Muxer,
    ) -> Result<(), MediaError> {
        if frame.samples() == 0 || frame.rate() == 0 {
            return Ok(());
        }
        let pts = match frame.timestamp() {
            Some(p) => p.saturating_sub(self.offset),
            None => self.next_pts.unwrap_or(0),
        };
        let samples = i64::try_from(frame.samples()).unwrap_or(0);
        self.next_pts =
            Some(pts.saturating_add(samples.rescale(Rational(1, frame.rate() as i32), self.in_tb)));
        self.position_us = pts.rescale(self.in_tb, ff::rescale::TIME_BASE);
        frame.set_pts(Some(pts));
        let mut layout = frame.channel_layout();
        if layout.bits() == 0 {
            // WAV and raw formats often leave the layout unset: take the default for the count.
            layout = ff::ChannelLayout::default(i32::from(frame.channels()));
            frame.set_channel_layout(layout);
        }
        let key = (frame.rate(), frame.format(), layout.bits());
        if self.graph.as_ref().is_some_and(|(_, k)| *k != key) {
            self.flush_graph(mux)?;
            self.graph = None;
        }
        if self.graph.is_none() {
            let g = self.build_graph(frame, layout)?;
            self.graph = Some((g, key));
        }
        if let Some((g, _)) = self.graph.as_mut() {
            let mut src = g.get("in").ok_or_else(|| {
                MediaError::Internal("the audio filter graph has no input".into())
            })?;
            src.source()
                .add(frame)
                .map_err(internal("filtering sound"))?;
        }
        self.frames += 1;
        self.pull_filtered(mux)
    }

    fn build_graph(
        &self,
        frame: &frame::Audio,
        layout: ff::ChannelLayout,
    ) -> Result<filter::Graph, MediaError> {
        let fail = internal("building the audio filter graph");
        let args = format!(
            "time_base={}/{}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
            self.in_tb.numerator(),
            self.in_tb.denominator(),
            frame.rate(),
            frame.format().name(),
            layout.bits()
        );
        let layout_name = if self.layout == ff::ChannelLayout::MONO {
            "mono"
        } else {
            "stereo"
        };
        let spec = format!(
            "aresample={rate},aformat=sample_fmts=fltp:sample_rates={rate}:channel_layouts={layout_name}",
            rate = self.rate
        );
        let mut g = filter::Graph::new();
        let abuffer = filter::find("abuffer")
            .ok_or_else(|| MediaError::Internal("no abuffer filter".into()))?;
        let sink = filter::find("abuffersink")
            .ok_or_else(|| MediaError::Internal("no abuffersink filter".into()))?;
        g.add(&abuffer, "in", &args).map_err(&fail)?;
        g.add(&sink, "out", "").map_err(&fail)?;
        g.output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&spec))
            .map_err(&fail)?;
        g.validate().map_err(&fail)?;
        if let Some(mut out) = g.get("out") {
            // The AAC encoder takes exactly `frame_size` (1024) samples per frame.
            out.sink().set_frame_size(self.encoder.frame_size());
        }
        Ok(g)
    }

    fn pull_filtered(&mut self, mux: &mut Muxer) -> Result<(), MediaError> {
        let Some((g, _)) = self.graph.as_mut() else {
            return Ok(());
        };
        let mut filtered = frame::Audio::empty();
        loop {
            let (got, sink_tb) = match g.get("out") {
                Some(mut out) => {
                    let mut sink = out.sink();
                    let got = sink.frame(&mut filtered).is_ok();
                    (got, sink.time_base())
                }
                None => (false, self.enc_tb),
            };
            if !got {
                return Ok(());
            }
            if let Some(p) = filtered.pts() {
                filtered.set_pts(Some(p.rescale(sink_tb, self.enc_tb)));
            }
            self.encoder
                .send_frame(&filtered)
                .map_err(internal("encoding sound"))?;
            drain_encoder(
                &mut self.encoder,
                mux,
                self.out_index,
                self.enc_tb,
                self.out_tb,
            )?;
        }
    }

    fn flush_graph(&mut self, mux: &mut Muxer) -> Result<(), MediaError> {
        if let Some((g, _)) = self.graph.as_mut()
            && let Some(mut src) = g.get("in")
        {
            let _ = src.source().flush();
        }
        self.pull_filtered(mux)
    }

    fn finish(&mut self, mux: &mut Muxer) -> Result<(), MediaError> {
        let _ = self.decoder.send_eof();
        self.receive_frames(mux)?;
        self.flush_graph(mux)?;
        self.encoder
            .send_eof()
            .map_err(internal("finishing the sound encoder"))?;
        drain_encoder(
            &mut self.encoder,
            mux,
            self.out_index,
            self.enc_tb,
            self.out_tb,
        )
    }
}
