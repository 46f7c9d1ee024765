//! Track maths for a recorder's GPS fixes: dropping jitter, simplifying for display, patrol mileage
//! (巡查里程) and stops. Every function takes fixes sorted by time and returns new values; nothing here
//! reads the clock or the store.
//!
//! The usual pipeline is [`filter_jitter`] first (a standing officer's GPS noise would otherwise add
//! tens of metres of phantom mileage an hour), then [`distance_m`] and [`stops`] on what is left, and
//! [`simplify`] only for drawing. Distances are great-circle metres on the mean sphere
//! ([`crate::geo::haversine_m`]).

use crate::geo::{EARTH_RADIUS_M, haversine_m};
use crate::time::Timestamp;
use serde::Serialize;
use std::time::Duration;

/// One GPS fix of a track, in WGS-84.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackPoint {
    /// When the fix was taken.
    pub t: Timestamp,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Horizontal accuracy in metres, if the device reported it.
    pub accuracy_m: Option<f32>,
    /// Ground speed in m/s, if the device reported it.
    pub speed_mps: Option<f32>,
}

/// How [`filter_jitter`] decides which fixes are noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterOptions {
    /// Fixes whose reported horizontal accuracy is worse (larger) than this many metres are dropped.
    /// Fixes without an accuracy are trusted. Default 50 m: a phone or recorder in a street canyon
    /// or indoors reports 30–100 m, and such fixes scatter far enough to invent mileage.
    pub max_accuracy_m: f32,
    /// Fixes less than this many metres from the last kept fix are dropped as the noise of a
    /// standing officer. Default 5 m: the typical open-sky error of consumer GNSS, and less than
    /// three seconds of walking.
    pub min_move_m: f64,
}

impl Default for JitterOptions {
    fn default() -> Self {
        Self {
            max_accuracy_m: 50.0,
            min_move_m: 5.0,
        }
    }
}

/// Drops the fixes that are noise rather than movement: those with a non-finite coordinate, those
/// whose accuracy is worse than [`JitterOptions::max_accuracy_m`], and those that lie less than
/// [`JitterOptions::min_move_m`] from the last fix kept.
///
/// The first and last fixes that pass the accuracy test are always kept, so the result spans the
/// same time as the usable input. A first or last fix with a bad accuracy is dropped like any other:
/// keeping a fix that is 200 m off would add 200 m of mileage that never happened.
pub fn filter_jitter(points: &[TrackPoint], opts: &JitterOptions) -> Vec<TrackPoint> {
    let max_acc = opts.max_accuracy_m;
    let usable = |p: &&TrackPoint| {
        // A NaN accuracy fails `a <= max_acc` and is dropped: no device means it as "exact".
        p.lat.is_finite() && p.lon.is_finite() && p.accuracy_m.is_none_or(|a| a <= max_acc)
    };
    let mut usable_points = points.iter().filter(usable).peekable();
    let mut kept: Vec<TrackPoint> = Vec::new();
    while let Some(&p) = usable_points.next() {
        let is_last = usable_points.peek().is_none();
        match kept.last() {
            None => kept.push(p),
            Some(last) => {
                if is_last || haversine_m(last.lat, last.lon, p.lat, p.lon) >= opts.min_move_m {
                    kept.push(p);
                }
            }
        }
    }
    kept
}

/// Length of the track in metres: the sum of the great-circle legs between consecutive fixes. This is
/// the patrol mileage (巡查里程); run [`filter_jitter`] first, or GPS noise counts as walking.
pub fn distance_m(points: &[TrackPoint]) -> f64 {
    points
        .windows(2)
        .map(|w| haversine_m(w[0].lat, w[0].lon, w[1].lat, w[1].lon))
        .sum()
}

/// Simplifies a track for drawing with the Douglas–Peucker algorithm: the result keeps the first and
/// last fixes and deviates from the input by at most `tolerance_m` metres.
///
/// Distances are measured to the segment (not the infinite line) in a local equirectangular plane
/// centred on each segment being tested, which is accurate to well under 1 % for segments up to
/// hundreds of kilometres away from the poles. The work is kept on an explicit stack, so a track of
/// millions of fixes cannot overflow the call stack. A `tolerance_m` that is not positive returns the
/// input unchanged, as does a track of fewer than three fixes.
pub fn simplify(points: &[TrackPoint], tolerance_m: f64) -> Vec<TrackPoint> {
    if tolerance_m.is_nan() || tolerance_m <= 0.0 || points.len() < 3 {
        return points.to_vec();
    }
    let mut keep = vec![false; points.len()];
    let last = points.len() - 1;
    keep[0] = true;
    keep[last] = true;
    let mut stack = vec![(0, last)];
    while let Some((start, end)) = stack.pop() {
        if end - start < 2 {
            continue;
        }
        let segment = Segment::new(&points[start], &points[end]);
        let mut farthest = (0.0, start);
        for (i, p) in points.iter().enumerate().take(end).skip(start + 1) {
            let d = segment.distance_m(p);
            if d > farthest.0 {
                farthest = (d, i);
            }
        }
        let (d, i) = farthest;
        if d > tolerance_m {
            keep[i] = true;
            stack.push((start, i));
            stack.push((i, end));
        }
    }
    points
        .iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(*p))
        .collect()
}

/// A segment between two fixes in a local plane with the segment's start at the origin, x east and
/// y north, in metres.
struct Segment {
    lat0: f64,
    lon0: f64,
    /// Metres per degree of longitude at the segment's mean latitude.
    m_per_deg_lon: f64,
    /// The end, relative to the start.
    end: (f64, f64),
}

/// Metres per degree of latitude on the mean sphere.
const M_PER_DEG_LAT: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

impl Segment {
    fn new(a: &TrackPoint, b: &TrackPoint) -> Self {
        let mean_lat = (a.lat + b.lat) / 2.0;
        let mut s = Self {
            lat0: a.lat,
            lon0: a.lon,
            m_per_deg_lon: M_PER_DEG_LAT * mean_lat.to_radians().cos(),
            end: (0.0, 0.0),
        };
        s.end = s.project(b);
        s
    }

    /// `p` in the segment's plane. Longitude differences are wrapped into −180..180 so a track across
    /// the antimeridian stays continuous.
    fn project(&self, p: &TrackPoint) -> (f64, f64) {
        let dlon = (p.lon - self.lon0 + 180.0).rem_euclid(360.0) - 180.0;
        (
            dlon * self.m_per_deg_lon,
            (p.lat - self.lat0) * M_PER_DEG_LAT,
        )
    }

    /// Distance in metres from `p` to the nearest point of the segment.
    fn distance_m(&self, p: &TrackPoint) -> f64 {
        let (px, py) = self.project(p);
        let (ex, ey) = self.end;
        let len2 = ex * ex + ey * ey;
        let s = if len2 > 0.0 {
            ((px * ex + py * ey) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (px - s * ex).hypot(py - s * ey)
    }
}

/// What counts as a stop for [`stops`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopOptions {
    /// Every fix of a stop lies within this many metres of the stop's first fix. Default 30 m: wide
    /// enough for GPS noise near buildings, narrow enough that walking a block is not a stop.
    pub radius_m: f64,
    /// A stop lasts at least this long from its first fix to its last. Default 120 s: shorter pauses
    /// (a traffic light, a word with a passer-by) are not worth a line in the patrol record.
    pub min_duration: Duration,
}

impl Default for StopOptions {
    fn default() -> Self {
        Self {
            radius_m: 30.0,
            min_duration: Duration::from_secs(120),
        }
    }
}

/// A period in which the officer stayed in one place.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stop {
    /// Time of the stop's first fix.
    pub start: Timestamp,
    /// Time of the stop's last fix.
    pub end: Timestamp,
    /// Latitude of the centroid of the stop's fixes, degrees.
    pub lat: f64,
    /// Longitude of the centroid of the stop's fixes, degrees.
    pub lon: f64,
    /// How many fixes the stop is made of.
    pub points: usize,
}

/// Finds the stops of a track: maximal runs of consecutive fixes that all lie within
/// [`StopOptions::radius_m`] of the run's first fix and that last at least
/// [`StopOptions::min_duration`].
///
/// The scan is greedy from the start of the track: a fix that opens a stop long enough is taken as
/// its start, and the next stop can only begin after this one ends. So a stop's start can lie up to
/// `radius_m` before the place the officer stood still (the last metres of the approach are within
/// the radius), and a gap in the fixes inside the radius counts as time spent there. Fixes with a
/// non-finite coordinate end any run; run [`filter_jitter`] first to drop them and inaccurate fixes.
pub fn stops(points: &[TrackPoint], opts: &StopOptions) -> Vec<Stop> {
    let min_micros = i128::try_from(opts.min_duration.as_micros()).unwrap_or(i128::MAX);
    let mut found = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let anchor = &points[i];
        // One past the last fix within the radius of the anchor.
        let end = points[i + 1..]
            .iter()
            .position(|p| {
                let d = haversine_m(anchor.lat, anchor.lon, p.lat, p.lon);
                d.is_nan() || d > opts.radius_m
            })
            .map_or(points.len(), |n| i + 1 + n);
        let run = &points[i..end];
        let first = run[0].t;
        let last = run[run.len() - 1].t;
        let duration = i128::from(last.unix_micros()) - i128::from(first.unix_micros());
        if end - i >= 2 && duration >= min_micros {
            let (lat, lon) = centroid(run);
            found.push(Stop {
                start: first,
                end: last,
                lat,
                lon,
                points: run.len(),
            });
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

/// Mean position of a non-empty run of nearby fixes. Longitudes are averaged as offsets from the
/// first fix, so a run on the antimeridian does not average to the other side of the Earth.
fn centroid(run: &[TrackPoint]) -> (f64, f64) {
    let lon0 = run.first().map_or(0.0, |p| p.lon);
    let n = run.len().max(1) as f64;
    let (sum_lat, sum_dlon) = run.iter().fold((0.0, 0.0), |(la, lo), p| {
        (
            la + p.lat,
            lo + (p.lon - lon0 + 180.0).rem_euclid(360.0) - 180.0,
        )
    });
    let lon = (lon0 + sum_dlon / n + 180.0).rem_euclid(360.0) - 180.0;
    (sum_lat / n, lon)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Metres per degree of latitude, for building tracks in metres.
    const M: f64 = M_PER_DEG_LAT;
    /// Origin of the test tracks: the Drum Tower, Hangzhou.
    const LAT0: f64 = 30.2430;
    const LON0: f64 = 120.1700;

    fn m_per_deg_lon() -> f64 {
        M * LAT0.to_radians().cos()
    }

    /// A fix `north_m`/`east_m` metres from the origin at `t_s` seconds.
    fn at(t_s: i64, north_m: f64, east_m: f64) -> TrackPoint {
        TrackPoint {
            t: Timestamp::from_unix_micros(1_795_400_000_000_000 + t_s * 1_000_000),
            lat: LAT0 + north_m / M,
            lon: LON0 + east_m / m_per_deg_lon(),
            accuracy_m: None,
            speed_mps: None,
        }
    }

    /// Deterministic noise in −amp..amp metres (a small LCG, so tests do not need `rand`).
    struct Noise(u64);
    impl Noise {
        fn next(&mut self, amp: f64) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
        }
    }

    #[test]
    fn a_straight_walk_measures_its_length() {
        // 1 km due east at 1.4 m/s, a fix every second.
        let walk: Vec<_> = (0..=714)
            .map(|s| at(s, 0.0, s as f64 * 1000.0 / 714.0))
            .collect();
        let d = distance_m(&walk);
        assert!((d - 1000.0).abs() < 5.0, "{d}");
        let north: Vec<_> = (0..=100).map(|s| at(s, s as f64 * 20.0, 0.0)).collect();
        assert!((distance_m(&north) - 2000.0).abs() < 10.0);
    }

    #[test]
    fn a_standing_officer_s_gps_noise_adds_no_mileage() {
        let mut noise = Noise(7);
        let standing: Vec<_> = (0..3600)
            .map(|s| at(s, noise.next(2.0), noise.next(2.0)))
            .collect();
        assert!(
            distance_m(&standing) > 1000.0,
            "the raw noise adds kilometres"
        );
        let filtered = filter_jitter(&standing, &JitterOptions::default());
        assert!(distance_m(&filtered) < 6.0, "{}", distance_m(&filtered));
        assert_eq!(filtered.first(), standing.first());
        assert_eq!(filtered.last(), standing.last());
    }

    #[test]
    fn jitter_filtering_keeps_a_walk_and_drops_inaccurate_fixes() {
        let mut walk: Vec<_> = (0..=100).map(|s| at(s, 0.0, s as f64 * 1.4)).collect();
        walk[50].lat += 300.0 / M;
        walk[50].accuracy_m = Some(400.0);
        walk[0].accuracy_m = Some(120.0);
        walk[1].accuracy_m = Some(8.0);
        let filtered = filter_jitter(&walk, &JitterOptions::default());
        assert_eq!(filtered.first(), Some(&walk[1]));
        assert_eq!(filtered.last(), walk.last());
        assert!(!filtered.contains(&walk[50]));
        // Every fourth fix (5.6 m) is kept, the rest are within 5 m of the last kept one.
        assert!((25..=27).contains(&filtered.len()), "{}", filtered.len());
        assert!(
            (distance_m(&filtered) - 138.6).abs() < 1.0,
            "{}",
            distance_m(&filtered)
        );
    }

    #[test]
    fn empty_and_single_point_tracks_are_handled() {
        let one = [at(0, 0.0, 0.0)];
        let opts = JitterOptions::default();
        assert!(filter_jitter(&[], &opts).is_empty());
        assert_eq!(filter_jitter(&one, &opts), one);
        assert!(simplify(&[], 10.0).is_empty());
        assert_eq!(simplify(&one, 10.0), one);
        assert_eq!(distance_m(&[]), 0.0);
        assert_eq!(distance_m(&one), 0.0);
        assert!(stops(&[], &StopOptions::default()).is_empty());
        assert!(stops(&one, &StopOptions::default()).is_empty());
    }

    #[test]
    fn simplifying_a_noisy_straight_line_keeps_only_its_ends() {
        let mut noise = Noise(11);
        let line: Vec<_> = (0..=1000)
            .map(|s| at(s, noise.next(3.0), s as f64 * 1.4))
            .collect();
        let simple = simplify(&line, 5.0);
        assert_eq!(simple, vec![line[0], line[1000]]);
    }

    #[test]
    fn simplifying_keeps_a_real_corner() {
        let mut noise = Noise(13);
        // 500 m east, then 500 m north.
        let mut track: Vec<_> = (0..=500)
            .map(|s| at(s, noise.next(2.0), s as f64))
            .collect();
        track.extend((1..=500).map(|s| at(500 + s, s as f64, 500.0 + noise.next(2.0))));
        let simple = simplify(&track, 5.0);
        assert_eq!(simple.len(), 3, "{simple:?}");
        assert_eq!(simple[0], track[0]);
        assert_eq!(simple[2], track[1000]);
        let corner = simple[1];
        assert!((corner.t.unix_micros() - track[500].t.unix_micros()).abs() <= 5_000_000);
    }

    #[test]
    fn simplifying_with_no_tolerance_returns_the_input() {
        let track: Vec<_> = (0..10).map(|s| at(s, (s % 2) as f64, s as f64)).collect();
        assert_eq!(simplify(&track, 0.0), track);
        assert_eq!(simplify(&track, -1.0), track);
        assert_eq!(simplify(&track, f64::NAN), track);
    }

    #[test]
    fn simplifying_never_strays_further_than_the_tolerance() {
        let mut noise = Noise(17);
        let wander: Vec<_> = (0..2000)
            .map(|s| {
                let t = s as f64 / 50.0;
                at(
                    s,
                    200.0 * t.sin() + noise.next(4.0),
                    30.0 * s as f64 / 50.0 + noise.next(4.0),
                )
            })
            .collect();
        let simple = simplify(&wander, 10.0);
        assert!(simple.len() < wander.len() / 4);
        // Every input fix lies within the tolerance of the simplified segment spanning it.
        let mut k = 0;
        for (i, p) in wander.iter().enumerate() {
            while simple[k + 1].t < p.t {
                k += 1;
            }
            let d = Segment::new(&simple[k], &simple[k + 1]).distance_m(p);
            assert!(
                d <= 10.0 + 1e-6,
                "fix {i} is {d} m from the simplified track"
            );
        }
    }

    #[test]
    fn a_million_point_patrol_day_simplifies_to_its_corners() {
        let mut noise = Noise(19);
        // Three legs of a day's patrol at 1 Hz, each with GPS noise below the tolerance.
        let n = 1_000_000;
        let track: Vec<_> = (0..n)
            .map(|s| {
                let along = s as f64 * 0.05;
                let (north, east) = match s {
                    s if s < 400_000 => (0.0, along),
                    s if s < 700_000 => (along - 20_000.0, 20_000.0),
                    _ => (15_000.0, 20_000.0 - (along - 35_000.0)),
                };
                at(s, north + noise.next(2.0), east + noise.next(2.0))
            })
            .collect();
        let simple = simplify(&track, 10.0);
        assert_eq!(simple.len(), 4, "{simple:?}");
        assert_eq!(simple[0], track[0]);
        assert_eq!(simple[3], track[n as usize - 1]);
    }

    #[test]
    fn a_zigzag_that_splits_one_fix_at_a_time_does_not_overflow_a_small_stack() {
        // Each split of a zigzag peels off one fix, so a recursive Douglas–Peucker would nest 4000
        // calls deep; on a 64 KiB stack that overflows, on the explicit stack it does not.
        let zigzag: Vec<_> = (0..4000)
            .map(|s| at(s, if s % 2 == 0 { 20.0 } else { -20.0 }, s as f64 * 10.0))
            .collect();
        let simple = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || simplify(&zigzag, 5.0).len())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(simple, 4000);
    }

    #[test]
    fn a_stop_is_found_with_its_start_and_end() {
        // A patrol car: 20 fixes at 10 m/s every 5 s, 10 minutes parked with 3 m of GPS noise, then
        // 20 fixes driving on. Consecutive moving fixes are 50 m apart, beyond the stop radius.
        let mut noise = Noise(23);
        let mut track: Vec<_> = (0..20)
            .map(|k| at(k * 5, 0.0, k as f64 * 50.0 - 1000.0))
            .collect();
        track.extend((20..=140).map(|k| at(k * 5, noise.next(3.0), noise.next(3.0))));
        track.extend((1..=20).map(|k| at(700 + k * 5, k as f64 * 50.0, 0.0)));
        let found = stops(&track, &StopOptions::default());
        assert_eq!(found.len(), 1, "{found:?}");
        let stop = found[0];
        assert_eq!(stop.start, at(100, 0.0, 0.0).t);
        assert_eq!(stop.end, at(700, 0.0, 0.0).t);
        assert_eq!(stop.points, 121);
        assert!(haversine_m(stop.lat, stop.lon, LAT0, LON0) < 1.5);
    }

    #[test]
    fn a_walking_officer_s_stop_starts_within_the_radius_of_arrival() {
        // Walk 300 m east at 1.4 m/s, stand 5 minutes, walk 300 m north; a fix every second.
        let mut noise = Noise(29);
        let mut track: Vec<_> = (0..214)
            .map(|s| at(s, 0.0, s as f64 * 1.4 - 300.0))
            .collect();
        track.extend((214..=514).map(|s| at(s, noise.next(3.0), noise.next(3.0))));
        track.extend((1..=214).map(|s| at(514 + s, s as f64 * 1.4, 0.0)));
        let found = stops(&track, &StopOptions::default());
        assert_eq!(found.len(), 1, "{found:?}");
        let stop = found[0];
        // Up to 30 m of approach (about 21 s) and of departure can fall within the radius.
        let secs = |t: Timestamp| (t.unix_micros() - track[0].t.unix_micros()) / 1_000_000;
        assert!(
            (214 - 23..=214).contains(&secs(stop.start)),
            "{}",
            secs(stop.start)
        );
        assert!(
            (514..=514 + 45).contains(&secs(stop.end)),
            "{}",
            secs(stop.end)
        );
        assert!(haversine_m(stop.lat, stop.lon, LAT0, LON0) < 5.0);
    }

    #[test]
    fn a_pause_shorter_than_the_minimum_is_not_a_stop() {
        let mut track: Vec<_> = (0..20)
            .map(|k| at(k * 5, 0.0, k as f64 * 50.0 - 1000.0))
            .collect();
        track.extend((20..=40).map(|k| at(k * 5, 0.0, 0.0)));
        track.extend((1..=20).map(|k| at(200 + k * 5, k as f64 * 50.0, 0.0)));
        assert!(stops(&track, &StopOptions::default()).is_empty());
        let short = StopOptions {
            min_duration: Duration::from_secs(60),
            ..StopOptions::default()
        };
        assert_eq!(stops(&track, &short).len(), 1);
    }

    #[test]
    fn a_stop_serializes_as_json_with_rfc3339_times() {
        let stop = Stop {
            start: Timestamp::from_unix_micros(0),
            end: Timestamp::from_unix_micros(120_000_000),
            lat: 30.243,
            lon: 120.17,
            points: 25,
        };
        let v = serde_json::to_value(stop).unwrap();
        assert_eq!(v["points"], 25);
        assert_eq!(v["lat"], 30.243);
        assert!(
            v["start"]
                .as_str()
                .unwrap()
                .starts_with("1970-01-01T00:00:00")
        );
    }
}
