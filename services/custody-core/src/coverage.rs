//! Recording coverage of enforcement steps (执法全过程记录): which parts of a step's time window each
//! officer present recorded, where the gaps are, whether each gap has been explained, and which unlinked
//! footage could fill them.
//!
//! A case is made of steps; each step is an enforcement action with a half-open time window, the officers
//! present and perhaps a place. Recordings linked to the step cover parts of its window per officer. All
//! times here are true times: a recorder's own clock is corrected with [`corrected_start`] before its
//! recordings reach these functions. Everything is O(n log n) in the number of recordings, so a whole
//! case can be recomputed on every page view.

use crate::geo::haversine_m;
use crate::ids::{BadgeNo, EvidenceId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

// ---------------------------------------------------------------------------------------------------
// Intervals
// ---------------------------------------------------------------------------------------------------

/// Why an interval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interval: end {end} must be after start {start}")]
pub struct IntervalError {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// A non-empty, half-open span of time `[start, end)`.
///
/// Half-open, so that a recording that stops at the instant the next one starts neither overlaps it nor
/// leaves a gap before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawInterval", into = "RawInterval")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Interval {
    start: Timestamp,
    end: Timestamp,
}

/// The unchecked wire form of an [`Interval`].
#[derive(Debug, Serialize, Deserialize)]
struct RawInterval {
    start: Timestamp,
    end: Timestamp,
}

impl Interval {
    /// An interval from `start` up to but not including `end`; refused unless `end` is after `start`.
    pub fn new(start: Timestamp, end: Timestamp) -> Result<Self, IntervalError> {
        if end > start {
            Ok(Self { start, end })
        } else {
            Err(IntervalError { start, end })
        }
    }

    /// The interval of `duration_us` microseconds from `start`, or `None` when the duration is not
    /// positive (or the end would not fit a timestamp).
    pub fn from_start(start: Timestamp, duration_us: i64) -> Option<Self> {
        if duration_us <= 0 {
            return None;
        }
        Self::new(start, start.saturating_add_micros(duration_us)).ok()
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    pub fn end(&self) -> Timestamp {
        self.end
    }

    /// The length in microseconds; always positive.
    pub fn duration_us(&self) -> i64 {
        self.end
            .unix_micros()
            .saturating_sub(self.start.unix_micros())
    }

    /// Whether the instant `t` lies in `[start, end)`.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }

    /// The part both intervals share, or `None` when they share nothing (touching is not sharing).
    pub fn overlap(&self, other: &Interval) -> Option<Interval> {
        Interval::new(self.start.max(other.start), self.end.min(other.end)).ok()
    }
}

impl TryFrom<RawInterval> for Interval {
    type Error = IntervalError;
    fn try_from(raw: RawInterval) -> Result<Self, IntervalError> {
        Self::new(raw.start, raw.end)
    }
}

impl From<Interval> for RawInterval {
    fn from(i: Interval) -> Self {
        RawInterval {
            start: i.start,
            end: i.end,
        }
    }
}

/// Sorts intervals by start and merges those that overlap or touch, so the result is disjoint, sorted,
/// and separated by real gaps.
fn merge(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort_unstable_by_key(|i| i.start);
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for i in intervals {
        match merged.last_mut() {
            Some(last) if i.start <= last.end => last.end = last.end.max(i.end),
            _ => merged.push(i),
        }
    }
    merged
}

/// How many microseconds of `span` the sorted, disjoint `merged` intervals cover.
fn covered_within(merged: &[Interval], span: Interval) -> i64 {
    // Skip every interval that ends at or before the span starts; the rest are scanned only while they
    // start before the span ends, so the cost is a binary search plus the intervals actually hit.
    let first = merged.partition_point(|m| m.end <= span.start);
    merged[first..]
        .iter()
        .take_while(|m| m.start < span.end)
        .filter_map(|m| m.overlap(&span))
        .map(|o| o.duration_us())
        .sum()
}

/// Whether the sorted, disjoint `merged` intervals cover all of `span`. Because touching intervals were
/// merged, a span covered by several of them together is covered by a single merged one.
fn covers_all(merged: &[Interval], span: Interval) -> bool {
    let after = merged.partition_point(|m| m.start <= span.start);
    after > 0 && merged[after - 1].end >= span.end
}

/// The true start of a recording whose recorder clock said `device_time`.
///
/// The docking station measures `offset = recorder clock − true time` (in milliseconds) when the recorder
/// docks, so the true time is the recorder's time minus the offset. Without a measurement the recorder's
/// time is taken as it is.
pub fn corrected_start(device_time: Timestamp, clock_offset_ms: Option<i64>) -> Timestamp {
    match clock_offset_ms {
        Some(offset_ms) => {
            device_time.saturating_add_micros(offset_ms.saturating_mul(1_000).saturating_neg())
        }
        None => device_time,
    }
}

// ---------------------------------------------------------------------------------------------------
// Coverage
// ---------------------------------------------------------------------------------------------------

/// A recording linked to a case, as far as coverage needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub evidence_id: EvidenceId,
    /// The officer whose recorder made it.
    pub officer: BadgeNo,
    /// True start time, already corrected with [`corrected_start`].
    pub start: Timestamp,
    /// Length in microseconds; zero or less for a photo or a file whose length is not yet known.
    pub duration_us: i64,
    /// Where it was made, `(lat, lon)` in WGS-84, when known.
    pub location: Option<(f64, f64)>,
}

impl Recording {
    /// The time it covers, or `None` when it has no positive duration and so covers nothing.
    pub fn interval(&self) -> Option<Interval> {
        Interval::from_start(self.start, self.duration_us)
    }
}

/// A part of a step's window an officer did not record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Gap {
    pub officer: BadgeNo,
    pub interval: Interval,
    /// Whether recorded explanations (a flat battery, a private conversation the law exempts) cover the
    /// whole gap. A gap explained only in part is not explained.
    pub explained: bool,
}

/// How well one officer's recordings cover one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OfficerCoverage {
    pub officer: BadgeNo,
    /// The recorded parts of the window: clipped to it, merged and sorted.
    pub covered: Vec<Interval>,
    /// The total length of `covered`.
    pub covered_us: i64,
    /// The length of the step's window.
    pub window_us: i64,
    /// The unrecorded parts of the window longer than the minimum gap, in time order.
    pub gaps: Vec<Gap>,
    /// The officer's linked recordings that overlap the window (and photos taken within it), by start
    /// time.
    pub recordings: Vec<EvidenceId>,
}

impl OfficerCoverage {
    /// The fraction of the window recorded, from 0 to 1.
    pub fn ratio(&self) -> f64 {
        if self.window_us <= 0 {
            return 0.0;
        }
        // Both are at most a window's length, far inside the 2^53 that an f64 holds exactly.
        self.covered_us as f64 / self.window_us as f64
    }

    /// The gaps no explanation covers.
    pub fn unexplained_gaps(&self) -> impl Iterator<Item = &Gap> {
        self.gaps.iter().filter(|g| !g.explained)
    }
}

/// Why part of a step was not recorded, as written down by an officer or a reviewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The officer it concerns, or `None` for every officer of the step (the whole team's recorders
    /// were, say, turned off at a hospital's request).
    pub officer: Option<BadgeNo>,
    pub interval: Interval,
}

/// Computes, for each officer of a step, which parts of `window` their `recordings` cover and which
/// gaps remain.
///
/// There is one entry per officer, in the order given, with duplicates dropped. Recordings of other
/// officers are ignored. A gap is an uncovered part of the window strictly longer than `min_gap_us`:
/// shorter pauses, such as the moment between two segments a recorder splits a long recording into, are
/// not reported. A gap is explained when the explanations for that officer and those for all officers
/// together cover it entirely.
///
/// Runs in O((n + e) log (n + e)) for n recordings and e explanations.
pub fn step_coverage(
    window: Interval,
    officers: &[BadgeNo],
    recordings: &[Recording],
    min_gap_us: i64,
    explanations: &[Explanation],
) -> Vec<OfficerCoverage> {
    let mut index: HashMap<&BadgeNo, usize> = HashMap::with_capacity(officers.len());
    let mut order: Vec<&BadgeNo> = Vec::with_capacity(officers.len());
    for o in officers {
        if !index.contains_key(o) {
            index.insert(o, order.len());
            order.push(o);
        }
    }

    // One pass sorts recordings and explanations into per-officer buckets, so no officer scans the
    // others' recordings.
    let mut spans: Vec<Vec<Interval>> = vec![Vec::new(); order.len()];
    let mut linked: Vec<Vec<(Timestamp, EvidenceId)>> = vec![Vec::new(); order.len()];
    for r in recordings {
        let Some(&i) = index.get(&r.officer) else {
            continue;
        };
        match r.interval() {
            Some(span) => {
                if let Some(clipped) = span.overlap(&window) {
                    spans[i].push(clipped);
                    linked[i].push((r.start, r.evidence_id));
                }
            }
            // A photo covers no time, but one taken during the step still belongs to it.
            None if window.contains(r.start) => linked[i].push((r.start, r.evidence_id)),
            None => {}
        }
    }
    let mut for_all: Vec<Interval> = Vec::new();
    let mut excuses: Vec<Vec<Interval>> = vec![Vec::new(); order.len()];
    for e in explanations {
        match &e.officer {
            None => for_all.push(e.interval),
            Some(o) => {
                if let Some(&i) = index.get(o) {
                    excuses[i].push(e.interval);
                }
            }
        }
    }

    let min_gap_us = min_gap_us.max(0);
    order
        .into_iter()
        .zip(spans)
        .zip(linked)
        .zip(excuses)
        .map(|(((officer, spans), mut linked), mut excuses)| {
            let covered = merge(spans);
            excuses.extend_from_slice(&for_all);
            let excuses = merge(excuses);

            let mut gaps = Vec::new();
            let mut cursor = window.start;
            let uncovered_ends = covered
                .iter()
                .map(|c| (c.start, c.end))
                .chain(std::iter::once((window.end, window.end)));
            for (next_start, next_end) in uncovered_ends {
                if let Ok(hole) = Interval::new(cursor, next_start)
                    && hole.duration_us() > min_gap_us
                {
                    gaps.push(Gap {
                        officer: officer.clone(),
                        interval: hole,
                        explained: covers_all(&excuses, hole),
                    });
                }
                cursor = cursor.max(next_end);
            }

            linked.sort_unstable();
            let mut seen = HashSet::with_capacity(linked.len());
            let recordings = linked
                .into_iter()
                .filter(|(_, id)| seen.insert(*id))
                .map(|(_, id)| id)
                .collect();

            OfficerCoverage {
                officer: officer.clone(),
                covered_us: covered.iter().map(Interval::duration_us).sum(),
                covered,
                window_us: window.duration_us(),
                gaps,
                recordings,
            }
        })
        .collect()
}

/// Every gap in `coverage` that no explanation covers, officer by officer.
pub fn unexplained(coverage: &[OfficerCoverage]) -> impl Iterator<Item = &Gap> {
    coverage.iter().flat_map(OfficerCoverage::unexplained_gaps)
}

// ---------------------------------------------------------------------------------------------------
// Suggestions
// ---------------------------------------------------------------------------------------------------

/// Why a place was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("place: {field} must be {expected}, got {got}")]
pub struct PlaceError {
    pub field: &'static str,
    pub expected: &'static str,
    pub got: f64,
}

/// Where a step happened: a WGS-84 point and a radius in metres around it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPlace", into = "RawPlace")]
pub struct Place {
    lat: f64,
    lon: f64,
    radius_m: f64,
}

/// The unchecked wire form of a [`Place`].
#[derive(Debug, Serialize, Deserialize)]
struct RawPlace {
    lat: f64,
    lon: f64,
    radius_m: f64,
}

impl Place {
    /// A place at `(lat, lon)` degrees with `radius_m` metres around it. Refuses latitudes outside
    /// -90..=90, longitudes outside -180..=180, and negative or non-finite radii.
    pub fn new(lat: f64, lon: f64, radius_m: f64) -> Result<Self, PlaceError> {
        let err = |field, expected, got| PlaceError {
            field,
            expected,
            got,
        };
        if !(-90.0..=90.0).contains(&lat) {
            return Err(err("lat", "a latitude from -90 to 90 degrees", lat));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(err("lon", "a longitude from -180 to 180 degrees", lon));
        }
        if !(radius_m.is_finite() && radius_m >= 0.0) {
            return Err(err(
                "radius_m",
                "a finite, non-negative number of metres",
                radius_m,
            ));
        }
        Ok(Self { lat, lon, radius_m })
    }

    pub fn lat(&self) -> f64 {
        self.lat
    }

    pub fn lon(&self) -> f64 {
        self.lon
    }

    pub fn radius_m(&self) -> f64 {
        self.radius_m
    }

    /// Great-circle distance in metres from the place's centre to `(lat, lon)`.
    pub fn distance_m(&self, lat: f64, lon: f64) -> f64 {
        haversine_m(self.lat, self.lon, lat, lon)
    }
}

impl TryFrom<RawPlace> for Place {
    type Error = PlaceError;
    fn try_from(raw: RawPlace) -> Result<Self, PlaceError> {
        Self::new(raw.lat, raw.lon, raw.radius_m)
    }
}

impl From<Place> for RawPlace {
    fn from(p: Place) -> Self {
        RawPlace {
            lat: p.lat,
            lon: p.lon,
            radius_m: p.radius_m,
        }
    }
}

/// Footage from the recorder of one of the step's officers that is not linked to the case yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub evidence_id: EvidenceId,
    pub officer: BadgeNo,
    /// True start time, already corrected with [`corrected_start`].
    pub start: Timestamp,
    /// Length in microseconds; zero or less for a photo.
    pub duration_us: i64,
    /// Where it was made, `(lat, lon)` in WGS-84, when known.
    pub location: Option<(f64, f64)>,
}

impl Candidate {
    /// The time it covers, or `None` when it has no positive duration.
    pub fn interval(&self) -> Option<Interval> {
        Interval::from_start(self.start, self.duration_us)
    }

    /// The location, when it is a real coordinate: recorders without a fix sometimes report NaN or
    /// nonsense, which is as good as no location.
    fn known_location(&self) -> Option<(f64, f64)> {
        self.location
            .filter(|&(lat, lon)| (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
    }
}

/// A candidate worth offering for linking to a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Suggestion {
    pub evidence_id: EvidenceId,
    pub officer: BadgeNo,
    /// The candidate's true start time.
    pub start: Timestamp,
    /// How much of the step's window it covers; zero for a photo.
    pub overlap_us: i64,
    /// How much of its officer's gaps it would fill.
    pub fills_gap_us: i64,
    /// Distance from the step's place, when both that place and the candidate's location are known.
    pub distance_m: Option<f64>,
}

/// Picks the candidates worth linking to a step, best first.
///
/// A candidate is kept when its officer is one of `officers`, it overlaps `window` (a photo when it was
/// taken within the window), and, when both `place` and its location are known, it was made within the
/// place's radius. Candidates whose location or the step's place is unknown are kept, with no distance,
/// because a recorder without a GNSS fix still recorded what it recorded. `fills_gap_us` counts the
/// candidate's overlap with the `gaps` of its own officer.
///
/// The order is: most gap filled first, then nearest (unknown distance last), then earliest start, then
/// evidence id, so that equal inputs always give the same list.
pub fn suggest(
    window: Interval,
    officers: &[BadgeNo],
    place: Option<&Place>,
    gaps: &[Gap],
    candidates: &[Candidate],
) -> Vec<Suggestion> {
    let officers: HashSet<&BadgeNo> = officers.iter().collect();
    let mut gaps_by: HashMap<&BadgeNo, Vec<Interval>> = HashMap::new();
    for g in gaps.iter().filter(|g| officers.contains(&g.officer)) {
        gaps_by.entry(&g.officer).or_default().push(g.interval);
    }
    // Merging makes the gaps disjoint, so a candidate is never credited twice for the same time even
    // when the caller passes overlapping gaps.
    let gaps_by: HashMap<&BadgeNo, Vec<Interval>> =
        gaps_by.into_iter().map(|(o, v)| (o, merge(v))).collect();

    let mut out: Vec<Suggestion> = candidates
        .iter()
        .filter(|c| officers.contains(&c.officer))
        .filter_map(|c| {
            let (overlap_us, fills_gap_us) = match c.interval() {
                Some(span) => {
                    let overlap = span.overlap(&window)?;
                    let fills = gaps_by
                        .get(&c.officer)
                        .map_or(0, |g| covered_within(g, span));
                    (overlap.duration_us(), fills)
                }
                None if window.contains(c.start) => (0, 0),
                None => return None,
            };
            let distance_m = match (place, c.known_location()) {
                (Some(p), Some((lat, lon))) => {
                    let d = p.distance_m(lat, lon);
                    if d > p.radius_m {
                        return None;
                    }
                    Some(d)
                }
                _ => None,
            };
            Some(Suggestion {
                evidence_id: c.evidence_id,
                officer: c.officer.clone(),
                start: c.start,
                overlap_us,
                fills_gap_us,
                distance_m,
            })
        })
        .collect();

    out.sort_by(|a, b| {
        b.fills_gap_us
            .cmp(&a.fills_gap_us)
            .then_with(|| nearest_first(a.distance_m, b.distance_m))
            .then_with(|| a.start.cmp(&b.start))
            .then_with(|| a.evidence_id.cmp(&b.evidence_id))
    });
    out
}

/// Orders known distances ascending, with unknown distances after all known ones.
fn nearest_first(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SEC: i64 = 1_000_000;
    /// 2026-11-22T00:00:00Z, a plausible day for a step.
    const DAY: i64 = 1_795_305_600 * SEC;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_micros(DAY + secs * SEC)
    }

    fn iv(start_s: i64, end_s: i64) -> Interval {
        Interval::new(t(start_s), t(end_s)).unwrap()
    }

    fn badge(s: &str) -> BadgeNo {
        BadgeNo::parse(s).unwrap()
    }

    fn eid(n: u32) -> EvidenceId {
        EvidenceId::parse(&format!("01900000-0000-7000-8000-{n:012x}")).unwrap()
    }

    fn rec(n: u32, officer: &str, start_s: i64, secs: i64) -> Recording {
        Recording {
            evidence_id: eid(n),
            officer: badge(officer),
            start: t(start_s),
            duration_us: secs * SEC,
            location: None,
        }
    }

    fn cand(n: u32, officer: &str, start_s: i64, secs: i64, loc: Option<(f64, f64)>) -> Candidate {
        Candidate {
            evidence_id: eid(n),
            officer: badge(officer),
            start: t(start_s),
            duration_us: secs * SEC,
            location: loc,
        }
    }

    fn one(
        window: Interval,
        officer: &str,
        recordings: &[Recording],
        min_gap_s: i64,
        explanations: &[Explanation],
    ) -> OfficerCoverage {
        let mut cov = step_coverage(
            window,
            &[badge(officer)],
            recordings,
            min_gap_s * SEC,
            explanations,
        );
        assert_eq!(cov.len(), 1);
        cov.pop().unwrap()
    }

    fn gap_spans(cov: &OfficerCoverage) -> Vec<(Interval, bool)> {
        cov.gaps.iter().map(|g| (g.interval, g.explained)).collect()
    }

    // --- intervals ---------------------------------------------------------------------------------

    #[test]
    fn an_interval_must_end_after_it_starts() {
        assert!(Interval::new(t(0), t(1)).is_ok());
        let e = Interval::new(t(1), t(1)).unwrap_err();
        assert!(e.to_string().starts_with("interval: end "), "{e}");
        assert!(Interval::new(t(2), t(1)).is_err());
        assert_eq!(iv(0, 90).duration_us(), 90 * SEC);
    }

    #[test]
    fn intervals_that_only_touch_do_not_overlap() {
        assert_eq!(iv(0, 10).overlap(&iv(10, 20)), None);
        assert_eq!(iv(0, 10).overlap(&iv(5, 20)), Some(iv(5, 10)));
        assert_eq!(iv(0, 30).overlap(&iv(5, 20)), Some(iv(5, 20)));
        assert_eq!(iv(0, 10).overlap(&iv(20, 30)), None);
        assert!(iv(0, 10).contains(t(0)));
        assert!(!iv(0, 10).contains(t(10)));
    }

    #[test]
    fn a_reversed_interval_is_refused_when_deserialised() {
        let good = serde_json::to_string(&iv(0, 10)).unwrap();
        assert_eq!(serde_json::from_str::<Interval>(&good).unwrap(), iv(0, 10));
        let bad = serde_json::to_string(&RawInterval {
            start: t(10),
            end: t(0),
        })
        .unwrap();
        let e = serde_json::from_str::<Interval>(&bad).unwrap_err();
        assert!(e.to_string().contains("interval: end"), "{e}");
    }

    #[test]
    fn a_fast_recorder_clock_is_wound_back_by_its_measured_offset() {
        // The recorder's clock ran 2.5 s ahead of true time, so its 08:00:02.5 was really 08:00:00.
        assert_eq!(
            corrected_start(t(2).saturating_add_micros(500_000), Some(2_500)),
            t(0)
        );
        // A slow clock (negative offset) moves the start later.
        assert_eq!(corrected_start(t(0), Some(-3_000)), t(3));
        assert_eq!(corrected_start(t(7), None), t(7));
        assert_eq!(corrected_start(t(7), Some(0)), t(7));
        // Absurd offsets saturate rather than wrap.
        let early = Timestamp::from_unix_micros(-10);
        assert_eq!(
            corrected_start(early, Some(i64::MAX)),
            Timestamp::from_unix_micros(i64::MIN)
        );
    }

    #[test]
    fn a_photo_or_an_unprobed_file_covers_no_time() {
        assert_eq!(rec(1, "A1", 0, 0).interval(), None);
        assert_eq!(rec(1, "A1", 0, -5).interval(), None);
        assert_eq!(rec(1, "A1", 0, 5).interval(), Some(iv(0, 5)));
        let near_the_end = Recording {
            start: Timestamp::from_unix_micros(i64::MAX),
            ..rec(1, "A1", 0, 5)
        };
        assert_eq!(near_the_end.interval(), None);
    }

    // --- coverage ----------------------------------------------------------------------------------

    #[test]
    fn a_recording_that_starts_before_the_window_covers_only_its_overlap() {
        let cov = one(iv(100, 200), "A1", &[rec(1, "A1", 50, 100)], 0, &[]);
        assert_eq!(cov.covered, vec![iv(100, 150)]);
        assert_eq!(cov.covered_us, 50 * SEC);
        assert_eq!(cov.window_us, 100 * SEC);
        assert_eq!(gap_spans(&cov), vec![(iv(150, 200), false)]);
        assert_eq!(cov.recordings, vec![eid(1)]);
        assert!((cov.ratio() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn touching_recordings_merge_and_leave_no_gap() {
        // A recorder splits a long recording into segments that end exactly where the next begins.
        let recs = [
            rec(2, "A1", 40, 30),
            rec(1, "A1", 0, 40),
            rec(3, "A1", 70, 30),
        ];
        let cov = one(iv(0, 100), "A1", &recs, 0, &[]);
        assert_eq!(cov.covered, vec![iv(0, 100)]);
        assert!(cov.gaps.is_empty());
        assert_eq!(cov.ratio(), 1.0);
        assert_eq!(cov.recordings, vec![eid(1), eid(2), eid(3)]);
    }

    #[test]
    fn overlapping_recordings_are_not_counted_twice() {
        // Two recordings of the same officer overlap (say, a body camera and a handheld recorder).
        let recs = [
            rec(1, "A1", 0, 60),
            rec(2, "A1", 30, 50),
            rec(3, "A1", 10, 5),
        ];
        let cov = one(iv(0, 100), "A1", &recs, 0, &[]);
        assert_eq!(cov.covered, vec![iv(0, 80)]);
        assert_eq!(cov.covered_us, 80 * SEC);
        assert_eq!(gap_spans(&cov), vec![(iv(80, 100), false)]);
    }

    #[test]
    fn recordings_outside_the_window_neither_cover_nor_are_listed() {
        let recs = [
            rec(1, "A1", 0, 100),   // ends exactly where the window starts
            rec(2, "A1", 200, 50),  // starts exactly where the window ends
            rec(3, "A1", 500, 50),  // long after
            rec(4, "A1", 120, 10),  // inside
            rec(5, "A1", -100, 10), // long before
        ];
        let cov = one(iv(100, 200), "A1", &recs, 0, &[]);
        assert_eq!(cov.covered, vec![iv(120, 130)]);
        assert_eq!(cov.recordings, vec![eid(4)]);
        assert_eq!(
            gap_spans(&cov),
            vec![(iv(100, 120), false), (iv(130, 200), false)]
        );
    }

    #[test]
    fn a_photo_taken_during_the_step_is_listed_but_covers_nothing() {
        let recs = [
            rec(1, "A1", 150, 0),
            rec(2, "A1", 100, 0),
            rec(3, "A1", 200, 0), // at the window's end, which is outside
            rec(4, "A1", 160, 10),
        ];
        let cov = one(iv(100, 200), "A1", &recs, 0, &[]);
        assert_eq!(cov.covered, vec![iv(160, 170)]);
        assert_eq!(cov.recordings, vec![eid(2), eid(1), eid(4)]);
    }

    #[test]
    fn an_officer_without_recordings_has_the_whole_window_as_one_gap() {
        let cov = one(iv(0, 600), "A1", &[rec(1, "B2", 0, 600)], 5, &[]);
        assert!(cov.covered.is_empty());
        assert_eq!(cov.covered_us, 0);
        assert_eq!(cov.ratio(), 0.0);
        assert!(cov.recordings.is_empty());
        assert_eq!(gap_spans(&cov), vec![(iv(0, 600), false)]);
        assert_eq!(cov.gaps[0].officer, badge("A1"));
    }

    #[test]
    fn a_gap_exactly_as_long_as_the_minimum_is_not_reported() {
        let recs = [rec(1, "A1", 0, 40), rec(2, "A1", 45, 55)];
        assert!(one(iv(0, 100), "A1", &recs, 5, &[]).gaps.is_empty());
        let cov = step_coverage(iv(0, 100), &[badge("A1")], &recs, 5 * SEC - 1, &[]);
        assert_eq!(gap_spans(&cov[0]), vec![(iv(40, 45), false)]);
    }

    #[test]
    fn short_pauses_are_ignored_at_both_edges_of_the_window_too() {
        let recs = [rec(1, "A1", 3, 94)];
        let cov = one(iv(0, 100), "A1", &recs, 3, &[]);
        assert!(cov.gaps.is_empty());
        // The pause still counts against the ratio: it is not reported, not recorded.
        assert_eq!(cov.covered_us, 94 * SEC);
        let cov = one(iv(0, 100), "A1", &recs, 2, &[]);
        assert_eq!(
            gap_spans(&cov),
            vec![(iv(0, 3), false), (iv(97, 100), false)]
        );
    }

    #[test]
    fn a_negative_minimum_gap_reports_every_gap() {
        let cov = step_coverage(iv(0, 10), &[badge("A1")], &[rec(1, "A1", 0, 9)], -5, &[]);
        assert_eq!(gap_spans(&cov[0]), vec![(iv(9, 10), false)]);
    }

    #[test]
    fn officers_are_reported_in_the_given_order_without_duplicates() {
        let officers = [badge("B2"), badge("A1"), badge("B2"), badge("C3")];
        let recs = [rec(1, "A1", 0, 10), rec(2, "B2", 0, 5), rec(3, "Z9", 0, 10)];
        let cov = step_coverage(iv(0, 10), &officers, &recs, 0, &[]);
        let names: Vec<&str> = cov.iter().map(|c| c.officer.as_str()).collect();
        assert_eq!(names, ["B2", "A1", "C3"]);
        assert_eq!(cov[0].covered_us, 5 * SEC);
        assert_eq!(cov[1].covered_us, 10 * SEC);
        assert_eq!(cov[2].covered_us, 0);
        assert!(step_coverage(iv(0, 10), &[], &recs, 0, &[]).is_empty());
    }

    #[test]
    fn the_same_recording_linked_twice_is_listed_once() {
        let recs = [rec(1, "A1", 0, 10), rec(1, "A1", 0, 10)];
        let cov = one(iv(0, 10), "A1", &recs, 0, &[]);
        assert_eq!(cov.recordings, vec![eid(1)]);
        assert_eq!(cov.covered_us, 10 * SEC);
    }

    #[test]
    fn an_explanation_covering_only_part_of_a_gap_leaves_it_unexplained() {
        let ex = [Explanation {
            officer: Some(badge("A1")),
            interval: iv(40, 55),
        }];
        let cov = one(iv(0, 100), "A1", &[rec(1, "A1", 0, 40)], 0, &ex);
        assert_eq!(gap_spans(&cov), vec![(iv(40, 100), false)]);
        assert_eq!(unexplained(std::slice::from_ref(&cov)).count(), 1);
    }

    #[test]
    fn an_explanation_covering_the_whole_gap_explains_it() {
        let ex = [Explanation {
            officer: Some(badge("A1")),
            interval: iv(30, 120),
        }];
        let recs = [rec(1, "A1", 0, 40), rec(2, "A1", 60, 40)];
        let cov = one(iv(0, 100), "A1", &recs, 0, &ex);
        assert_eq!(gap_spans(&cov), vec![(iv(40, 60), true)]);
        assert_eq!(unexplained(std::slice::from_ref(&cov)).count(), 0);
    }

    #[test]
    fn touching_explanations_together_explain_a_gap() {
        let ex = [
            Explanation {
                officer: Some(badge("A1")),
                interval: iv(50, 100),
            },
            Explanation {
                officer: None,
                interval: iv(40, 50),
            },
        ];
        let cov = one(iv(0, 100), "A1", &[rec(1, "A1", 0, 40)], 0, &ex);
        assert_eq!(gap_spans(&cov), vec![(iv(40, 100), true)]);
        // With a hole of one microsecond between them, they no longer do.
        let ex = [
            Explanation {
                officer: Some(badge("A1")),
                interval: Interval::new(t(50).saturating_add_micros(1), t(100)).unwrap(),
            },
            ex[1].clone(),
        ];
        let cov = one(iv(0, 100), "A1", &[rec(1, "A1", 0, 40)], 0, &ex);
        assert_eq!(gap_spans(&cov), vec![(iv(40, 100), false)]);
    }

    #[test]
    fn an_explanation_for_all_officers_explains_each_officers_gap() {
        let ex = [Explanation {
            officer: None,
            interval: iv(20, 80),
        }];
        let recs = [
            rec(1, "A1", 0, 30),
            rec(2, "A1", 70, 30),
            rec(3, "B2", 0, 20),
            rec(4, "B2", 80, 20),
        ];
        let cov = step_coverage(iv(0, 100), &[badge("A1"), badge("B2")], &recs, 0, &ex);
        assert_eq!(gap_spans(&cov[0]), vec![(iv(30, 70), true)]);
        assert_eq!(gap_spans(&cov[1]), vec![(iv(20, 80), true)]);
        assert_eq!(unexplained(&cov).count(), 0);
    }

    #[test]
    fn an_explanation_for_another_officer_explains_nothing() {
        let ex = [Explanation {
            officer: Some(badge("B2")),
            interval: iv(0, 100),
        }];
        let cov = step_coverage(
            iv(0, 100),
            &[badge("A1"), badge("B2")],
            &[rec(1, "A1", 0, 50)],
            0,
            &ex,
        );
        assert_eq!(gap_spans(&cov[0]), vec![(iv(50, 100), false)]);
        assert_eq!(gap_spans(&cov[1]), vec![(iv(0, 100), true)]);
        let left: Vec<&BadgeNo> = unexplained(&cov).map(|g| &g.officer).collect();
        assert_eq!(left, [&badge("A1")]);
    }

    #[test]
    fn coverage_round_trips_through_json() {
        let cov = one(iv(0, 100), "A1", &[rec(1, "A1", 10, 20)], 0, &[]);
        let json = serde_json::to_string(&cov).unwrap();
        assert_eq!(serde_json::from_str::<OfficerCoverage>(&json).unwrap(), cov);
    }

    // --- suggestions -------------------------------------------------------------------------------

    /// The Shenzhen Civic Centre, WGS-84.
    const CIVIC: (f64, f64) = (22.5431, 114.0579);

    fn civic(radius_m: f64) -> Place {
        Place::new(CIVIC.0, CIVIC.1, radius_m).unwrap()
    }

    /// A point about `m` metres north of the civic centre (one degree of latitude is about 111.2 km).
    fn north_of_civic(m: f64) -> (f64, f64) {
        (CIVIC.0 + m / 111_195.0, CIVIC.1)
    }

    fn gap(officer: &str, start_s: i64, end_s: i64) -> Gap {
        Gap {
            officer: badge(officer),
            interval: iv(start_s, end_s),
            explained: false,
        }
    }

    fn ids(s: &[Suggestion]) -> Vec<EvidenceId> {
        s.iter().map(|s| s.evidence_id).collect()
    }

    #[test]
    fn a_place_must_be_a_real_coordinate_with_a_sensible_radius() {
        assert!(Place::new(22.5, 114.0, 0.0).is_ok());
        let e = Place::new(91.0, 114.0, 50.0).unwrap_err();
        assert_eq!(e.field, "lat");
        assert!(e.to_string().starts_with("place: lat must be"), "{e}");
        assert_eq!(Place::new(22.5, 181.0, 50.0).unwrap_err().field, "lon");
        assert_eq!(Place::new(f64::NAN, 114.0, 50.0).unwrap_err().field, "lat");
        for r in [-1.0, f64::INFINITY, f64::NAN] {
            assert_eq!(Place::new(22.5, 114.0, r).unwrap_err().field, "radius_m");
        }
        let json = r#"{"lat":22.5,"lon":114.0,"radius_m":-3.0}"#;
        assert!(serde_json::from_str::<Place>(json).is_err());
        let p = civic(200.0);
        let back: Place = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn candidates_of_other_officers_or_outside_the_window_are_not_suggested() {
        let cands = [
            cand(1, "Z9", 10, 50, None),   // not an officer of the step
            cand(2, "A1", 0, 100, None),   // ends where the window starts
            cand(3, "A1", 200, 10, None),  // starts where the window ends
            cand(4, "A1", 90, 20, None),   // overlaps the start by 10 s
            cand(5, "B2", 150, 100, None), // overlaps the end by 50 s
        ];
        let got = suggest(iv(100, 200), &[badge("A1"), badge("B2")], None, &[], &cands);
        assert_eq!(ids(&got), vec![eid(4), eid(5)]);
        assert_eq!(got[0].overlap_us, 10 * SEC);
        assert_eq!(got[1].overlap_us, 50 * SEC);
        assert!(got.iter().all(|s| s.fills_gap_us == 0));
    }

    #[test]
    fn a_photo_is_suggested_only_when_taken_within_the_window() {
        let cands = [
            cand(1, "A1", 150, 0, None),
            cand(2, "A1", 200, 0, None),
            cand(3, "A1", 99, 0, None),
            cand(4, "A1", 100, 0, None),
        ];
        let got = suggest(
            iv(100, 200),
            &[badge("A1")],
            None,
            &[gap("A1", 100, 200)],
            &cands,
        );
        assert_eq!(ids(&got), vec![eid(4), eid(1)]);
        assert!(got.iter().all(|s| s.overlap_us == 0 && s.fills_gap_us == 0));
    }

    #[test]
    fn a_candidate_fills_only_its_own_officers_gaps() {
        let gaps = [
            gap("A1", 10, 20),
            gap("A1", 40, 60),
            gap("A1", 90, 100),
            gap("B2", 0, 100),
        ];
        // A1's candidate spans 15..50: 5 s of the first gap and 10 s of the second.
        let got = suggest(
            iv(0, 100),
            &[badge("A1"), badge("B2")],
            None,
            &gaps,
            &[cand(1, "A1", 15, 35, None)],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].overlap_us, 35 * SEC);
        assert_eq!(got[0].fills_gap_us, 15 * SEC);
    }

    #[test]
    fn overlapping_gaps_passed_in_are_not_credited_twice() {
        let gaps = [gap("A1", 10, 30), gap("A1", 20, 40)];
        let got = suggest(
            iv(0, 100),
            &[badge("A1")],
            None,
            &gaps,
            &[cand(1, "A1", 0, 100, None)],
        );
        assert_eq!(got[0].fills_gap_us, 30 * SEC);
    }

    #[test]
    fn candidates_far_from_the_place_are_dropped_and_unknown_locations_kept() {
        let cands = [
            cand(1, "A1", 0, 10, Some(north_of_civic(150.0))),
            cand(2, "A1", 0, 10, Some(north_of_civic(5_000.0))),
            cand(3, "A1", 0, 10, None),
            cand(4, "A1", 0, 10, Some((f64::NAN, 114.0))),
            cand(5, "A1", 0, 10, Some(CIVIC)),
        ];
        let place = civic(200.0);
        let got = suggest(iv(0, 100), &[badge("A1")], Some(&place), &[], &cands);
        assert_eq!(ids(&got), vec![eid(5), eid(1), eid(3), eid(4)]);
        assert_eq!(got[0].distance_m, Some(0.0));
        let d = got[1].distance_m.unwrap();
        assert!((d - 150.0).abs() < 1.0, "{d}");
        assert_eq!(got[2].distance_m, None);
        assert_eq!(got[3].distance_m, None);

        // Without a place nothing is dropped and no distance is given.
        let got = suggest(iv(0, 100), &[badge("A1")], None, &[], &cands);
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|s| s.distance_m.is_none()));
    }

    #[test]
    fn suggestions_are_ordered_by_gap_filled_then_distance_then_start_then_id() {
        let gaps = [gap("A1", 0, 100)];
        let near = Some(north_of_civic(10.0));
        let far = Some(north_of_civic(100.0));
        let cands = [
            cand(1, "A1", 0, 10, None),  // fills 10, unknown distance
            cand(2, "A1", 0, 10, far),   // fills 10, far
            cand(3, "A1", 50, 30, None), // fills 30: first despite no distance
            cand(4, "A1", 0, 10, near),  // fills 10, near
            cand(6, "A1", 5, 10, None),  // fills 10, unknown, starts after 1
            cand(5, "A1", 5, 10, None),  // same as 6 but a smaller id
        ];
        let got = suggest(
            iv(0, 100),
            &[badge("A1")],
            Some(&civic(500.0)),
            &gaps,
            &cands,
        );
        assert_eq!(
            ids(&got),
            vec![eid(3), eid(4), eid(2), eid(1), eid(5), eid(6)]
        );
    }

    // --- a whole case ------------------------------------------------------------------------------

    #[test]
    fn a_case_of_fifty_steps_and_five_hundred_recordings_is_covered_step_by_step() {
        // Five officers, fifty ten-minute steps an hour apart. In every step each officer records two
        // segments: the first four minutes, then from a pause of officer-index × 10 s to the step's end.
        // With a 15 s minimum gap, officers 0 and 1 have no reported gap, officers 2 to 4 have one.
        let officers: Vec<BadgeNo> = (0..5).map(|j| badge(&format!("P{j:04}"))).collect();
        let step_window = |k: i64| iv(k * 3_600, k * 3_600 + 600);
        let mut recordings = Vec::new();
        let mut n = 0u32;
        for k in 0..50 {
            let w = step_window(k);
            for (j, officer) in officers.iter().enumerate() {
                let first_end = w.start().saturating_add_micros(240 * SEC);
                let second_start = first_end.saturating_add_micros(j as i64 * 10 * SEC);
                for (start, end) in [(w.start(), first_end), (second_start, w.end())] {
                    n += 1;
                    recordings.push(Recording {
                        evidence_id: eid(n),
                        officer: officer.clone(),
                        start,
                        duration_us: end.unix_micros() - start.unix_micros(),
                        location: None,
                    });
                }
            }
        }
        assert_eq!(recordings.len(), 500);
        // Linking order is arbitrary; reverse it so sorting is exercised.
        recordings.reverse();
        // The team explained the pauses of the first step together.
        let explanations = [Explanation {
            officer: None,
            interval: step_window(0),
        }];

        let mut unexplained_total = 0;
        for k in 0..50 {
            let w = step_window(k);
            let cov = step_coverage(w, &officers, &recordings, 15 * SEC, &explanations);
            assert_eq!(cov.len(), 5);
            for (j, c) in cov.iter().enumerate() {
                assert_eq!(c.officer, officers[j]);
                assert_eq!(c.window_us, 600 * SEC);
                assert_eq!(c.recordings.len(), 2, "step {k} officer {j}");
                let pause = j as i64 * 10 * SEC;
                assert_eq!(c.covered_us, 600 * SEC - pause);
                assert_eq!(c.covered.len(), if j == 0 { 1 } else { 2 });
                if j < 2 {
                    assert!(c.gaps.is_empty(), "step {k} officer {j}");
                } else {
                    assert_eq!(c.gaps.len(), 1);
                    let g = &c.gaps[0];
                    assert_eq!(
                        g.interval.start(),
                        w.start().saturating_add_micros(240 * SEC)
                    );
                    assert_eq!(g.interval.duration_us(), pause);
                    assert_eq!(g.explained, k == 0);
                }
            }
            unexplained_total += unexplained(&cov).count();

            // An unlinked recording of officer 4 that spans its pause is suggested for the step.
            let gaps: Vec<Gap> = unexplained(&cov).cloned().collect();
            let candidate = Candidate {
                evidence_id: eid(10_000 + k as u32),
                officer: officers[4].clone(),
                start: w.start().saturating_add_micros(230 * SEC),
                duration_us: 60 * SEC,
                location: None,
            };
            let got = suggest(w, &officers, None, &gaps, &[candidate]);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].fills_gap_us, if k == 0 { 0 } else { 40 * SEC });
        }
        assert_eq!(unexplained_total, 49 * 3);
    }
}
