//! Just enough of the ISO base media file format (MP4, MOV) to answer what ffmpeg does not.
//!
//! ffmpeg's `nb_frames` for an MP4 track is the sample count of its `stsz` box, and 0 both when the
//! track is really empty and when the file is fragmented (samples listed in `moof` boxes, as
//! crash-safe recorders write). Telling those apart matters: an empty video track makes a recording
//! "not playable", a fragmented one is perfectly fine. So this module counts samples itself, from
//! `stsz`/`stz2` in `moov` and `trun` in every `moof`, per track ID (which ffmpeg's mov demuxer
//! reports as the stream id). It also lists the top-level boxes, which says why a file ffmpeg
//! refuses is broken (an MP4 cut off before its `moov` index was written).
//!
//! Parsing never panics and never trusts a size field: every read is bounded by the file and by the
//! enclosing box, and box counts and in-memory sizes are capped.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};

/// A box read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BoxHeader {
    pub kind: [u8; 4],
    /// Offset of the box (its header) in the file.
    pub offset: u64,
    /// Size of the whole box, header included.
    pub size: u64,
    /// Length of the header (8, or 16 with a 64-bit size).
    pub header_len: u64,
}

/// Walking stops after this many top-level boxes: a fragmented hour-long recording has a few
/// thousand, a corrupt file could claim millions of tiny ones.
const MAX_TOP_LEVEL_BOXES: usize = 200_000;
/// `moov` and `moof` boxes are read whole; larger ones (hours of samples in one index are ~10 MiB)
/// are skipped rather than buffered.
const MAX_INDEX_BOX: u64 = 64 << 20;

/// Reads the header of the box at `offset`, `None` at the end of the file or when the header is not
/// a plausible box (size smaller than its header, or past the end of the file is allowed: a
/// truncated last box is still listed, with its claimed size).
fn read_header<R: Read + Seek>(r: &mut R, offset: u64, file_len: u64) -> Option<BoxHeader> {
    if offset.checked_add(8)? > file_len {
        return None;
    }
    r.seek(SeekFrom::Start(offset)).ok()?;
    let mut h = [0u8; 8];
    r.read_exact(&mut h).ok()?;
    let size32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let kind = [h[4], h[5], h[6], h[7]];
    if !kind
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == 0xa9)
    {
        return None;
    }
    let (size, header_len) = match size32 {
        0 => (file_len - offset, 8),
        1 => {
            let mut l = [0u8; 8];
            r.read_exact(&mut l).ok()?;
            (u64::from_be_bytes(l), 16)
        }
        n => (u64::from(n), 8),
    };
    if size < header_len {
        return None;
    }
    Some(BoxHeader {
        kind,
        offset,
        size,
        header_len,
    })
}

/// The top-level boxes of a file, in order, as far as they can be followed.
pub(crate) fn top_level_boxes<R: Read + Seek>(r: &mut R, file_len: u64) -> Vec<BoxHeader> {
    let mut boxes = Vec::new();
    let mut offset = 0u64;
    while boxes.len() < MAX_TOP_LEVEL_BOXES {
        let Some(b) = read_header(r, offset, file_len) else {
            break;
        };
        boxes.push(b);
        match offset.checked_add(b.size) {
            Some(next) => offset = next,
            None => break,
        }
    }
    boxes
}

/// Whether the boxes look like an ISO base media file at all (an `ftyp` first, as every MP4 and
/// modern MOV has, or a `moov`/`mdat`/`wide` first as old QuickTime files do).
pub(crate) fn looks_like_mp4(boxes: &[BoxHeader]) -> bool {
    boxes
        .first()
        .is_some_and(|b| matches!(&b.kind, b"ftyp" | b"moov" | b"mdat" | b"wide" | b"free"))
}

/// The children of a box held in memory (`data` is the box's payload).
fn children(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let rest = data.get(pos..)?;
        let head = rest.get(..8)?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = [head[4], head[5], head[6], head[7]];
        let (size, header_len) = match size32 {
            0 => (rest.len() as u64, 8u64),
            1 => {
                let l = rest.get(8..16)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(l);
                (u64::from_be_bytes(b), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < header_len || size > rest.len() as u64 {
            return None;
        }
        let (size, header_len) = (
            usize::try_from(size).ok()?,
            usize::try_from(header_len).ok()?,
        );
        pos += size;
        Some((kind, rest.get(header_len..size)?))
    })
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Track ID from a `tkhd` payload (version 0: 32-bit times; version 1: 64-bit times).
fn tkhd_track_id(tkhd: &[u8]) -> Option<u32> {
    match tkhd.first()? {
        0 => be_u32(tkhd, 12),
        1 => be_u32(tkhd, 20),
        _ => None,
    }
}

/// Sample count from the `stbl` of a track: `stsz` (or its compact twin `stz2`).
fn stbl_sample_count(stbl: &[u8]) -> Option<u64> {
    children(stbl).find_map(|(kind, payload)| match &kind {
        b"stsz" | b"stz2" => be_u32(payload, 8).map(u64::from),
        _ => None,
    })
}

fn find_child<'a>(data: &'a [u8], want: &[u8; 4]) -> Option<&'a [u8]> {
    children(data).find_map(|(k, p)| (&k == want).then_some(p))
}

/// Adds the sample counts of every `trak` in a `moov` payload.
fn count_moov(moov: &[u8], counts: &mut HashMap<u32, u64>) {
    for (kind, trak) in children(moov) {
        if &kind != b"trak" {
            continue;
        }
        let Some(id) = find_child(trak, b"tkhd").and_then(tkhd_track_id) else {
            continue;
        };
        let samples = find_child(trak, b"mdia")
            .and_then(|m| find_child(m, b"minf"))
            .and_then(|m| find_child(m, b"stbl"))
            .and_then(stbl_sample_count)
            .unwrap_or(0);
        *counts.entry(id).or_insert(0) += samples;
    }
}

/// Adds the sample counts of every `traf` in a `moof` payload.
fn count_moof(moof: &[u8], counts: &mut HashMap<u32, u64>) {
    for (kind, traf) in children(moof) {
        if &kind != b"traf" {
            continue;
        }
        let Some(id) = find_child(traf, b"tfhd").and_then(|t| be_u32(t, 4)) else {
            continue;
        };
        let samples: u64 = children(traf)
            .filter(|(k, _)| k == b"trun")
            .filter_map(|(_, trun)| be_u32(trun, 4).map(u64::from))
            .sum();
        *counts.entry(id).or_insert(0) += samples;
    }
}

fn read_payload<R: Read + Seek>(r: &mut R, b: &BoxHeader, file_len: u64) -> Option<Vec<u8>> {
    let start = b.offset.checked_add(b.header_len)?;
    let end = b.offset.checked_add(b.size)?.min(file_len);
    let len = end.checked_sub(start)?;
    if len > MAX_INDEX_BOX {
        return None;
    }
    r.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    r.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Samples per track ID, counted from the `moov` index and every `moof` fragment. `None` when the
/// file has no readable `moov` (then nothing can be said).
pub(crate) fn sample_counts<R: Read + Seek>(
    r: &mut R,
    boxes: &[BoxHeader],
    file_len: u64,
) -> Option<HashMap<u32, u64>> {
    let mut counts = HashMap::new();
    let mut saw_moov = false;
    for b in boxes {
        match &b.kind {
            b"moov" => {
                let payload = read_payload(r, b, file_len)?;
                count_moov(&payload, &mut counts);
                saw_moov = true;
            }
            b"moof" => {
                if let Some(payload) = read_payload(r, b, file_len) {
                    count_moof(&payload, &mut counts);
                }
            }
            _ => {}
        }
    }
    saw_moov.then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    fn trak(id: u32, samples: u32) -> Vec<u8> {
        let mut tkhd = vec![0u8; 12];
        tkhd.extend_from_slice(&id.to_be_bytes());
        tkhd.extend_from_slice(&[0u8; 64]);
        let mut stsz = vec![0u8; 8];
        stsz.extend_from_slice(&samples.to_be_bytes());
        let stbl = boxed(b"stbl", &boxed(b"stsz", &stsz));
        let mdia = boxed(b"mdia", &boxed(b"minf", &stbl));
        boxed(b"trak", &[boxed(b"tkhd", &tkhd), mdia].concat())
    }

    fn moof(id: u32, samples: u32) -> Vec<u8> {
        let mut tfhd = vec![0u8; 4];
        tfhd.extend_from_slice(&id.to_be_bytes());
        let mut trun = vec![0u8; 4];
        trun.extend_from_slice(&samples.to_be_bytes());
        boxed(
            b"moof",
            &boxed(
                b"traf",
                &[boxed(b"tfhd", &tfhd), boxed(b"trun", &trun)].concat(),
            ),
        )
    }

    fn counts(file: &[u8]) -> Option<HashMap<u32, u64>> {
        let mut c = Cursor::new(file);
        let boxes = top_level_boxes(&mut c, file.len() as u64);
        sample_counts(&mut c, &boxes, file.len() as u64)
    }

    #[test]
    fn samples_are_counted_per_track_from_the_index_and_the_fragments() {
        let file = [
            boxed(b"ftyp", b"isom"),
            boxed(b"moov", &[trak(1, 0), trak(2, 10)].concat()),
            moof(2, 5),
            boxed(b"mdat", &[0u8; 20]),
            moof(2, 7),
        ]
        .concat();
        let c = counts(&file).unwrap();
        assert_eq!(c.get(&1), Some(&0));
        assert_eq!(c.get(&2), Some(&22));
    }

    #[test]
    fn a_file_without_moov_has_no_counts_and_top_level_boxes_say_so() {
        let file = [boxed(b"ftyp", b"isom"), boxed(b"mdat", &[0u8; 100])].concat();
        let mut c = Cursor::new(&file[..60]);
        let boxes = top_level_boxes(&mut c, 60);
        assert!(looks_like_mp4(&boxes));
        assert_eq!(
            boxes.iter().map(|b| b.kind).collect::<Vec<_>>(),
            vec![*b"ftyp", *b"mdat"]
        );
        assert!(counts(&file).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x1234_5678u32;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = counts(&bytes);
            // Plausible headers with absurd sizes.
            let mut evil = boxed(b"moov", &bytes);
            evil[0..4].copy_from_slice(&1u32.to_be_bytes());
            let _ = counts(&evil);
            let _ = children(&bytes).count();
        }
    }
}
