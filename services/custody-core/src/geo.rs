//! Geodesy for tracks, fences and maps: great-circle distance, the Chinese map datums (GCJ-02, the
//! "Mars" offset AMap and Tencent base maps use, and Baidu's BD-09), point-in-polygon tests for
//! geofences, and unit vectors on the sphere for exact nearest-neighbour ordering in an R-tree.
//!
//! Everything here works on plain `f64` degrees, latitude first, and is pure. Positions are stored in
//! WGS-84; the other datums exist only to draw them on Chinese base maps and to read back what a user
//! clicked on such a map. Distances use a sphere of mean radius [`EARTH_RADIUS_M`], which is within
//! about 0.5 % of the ellipsoid: good for patrol mileage and fences, not for surveying.

use std::f64::consts::PI;

/// Mean Earth radius in metres (IUGG).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance in metres between two WGS-84 points (haversine on the mean sphere).
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

// ---------------------------------------------------------------------------------------------------
// GCJ-02 and BD-09
// ---------------------------------------------------------------------------------------------------

/// Semi-major axis of the Krasovsky 1940 ellipsoid, which the GCJ-02 offset is defined on.
const KRASOVSKY_A: f64 = 6_378_245.0;
/// First eccentricity squared of the Krasovsky 1940 ellipsoid.
#[allow(clippy::excessive_precision)]
const KRASOVSKY_EE: f64 = 0.006_693_421_622_965_943_23;

/// An inverse is refined until a step moves it less than this many degrees (about 10 µm).
const INVERSE_EPS_DEG: f64 = 1e-10;
/// The offsets vary so slowly that the fixed-point inverse gains several digits per step; this cap
/// only guards against non-finite input.
const INVERSE_MAX_STEPS: usize = 30;

/// Whether a point lies in the rough rectangle (longitude 72.004..=137.8347, latitude
/// 0.8293..=55.8271) that the usual open-source converters treat as "China".
///
/// It is a rectangle, not the border: it also covers Mongolia, the Korean peninsula, much of Japan
/// and South-East Asia, where a GCJ-02 shift would be wrong, and points there are shifted anyway.
/// Every widespread converter uses this same box, so using it keeps our output comparable to theirs.
/// Non-finite coordinates are outside.
pub fn in_china_rough_box(lat: f64, lon: f64) -> bool {
    (72.004..=137.8347).contains(&lon) && (0.8293..=55.8271).contains(&lat)
}

/// The GCJ-02 offset (Δlat, Δlon) in degrees at a WGS-84 point, ignoring the China box.
fn gcj02_delta(lat: f64, lon: f64) -> (f64, f64) {
    let x = lon - 105.0;
    let y = lat - 35.0;
    let common = (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    let mut dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    dlat += common;
    dlat += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    dlat += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y / 30.0 * PI).sin()) * 2.0 / 3.0;
    let mut dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    dlon += common;
    dlon += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    dlon += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;

    let rad_lat = lat.to_radians();
    let magic = 1.0 - KRASOVSKY_EE * rad_lat.sin().powi(2);
    let sqrt_magic = magic.sqrt();
    let dlat = (dlat * 180.0) / ((KRASOVSKY_A * (1.0 - KRASOVSKY_EE)) / (magic * sqrt_magic) * PI);
    let dlon = (dlon * 180.0) / (KRASOVSKY_A / sqrt_magic * rad_lat.cos() * PI);
    (dlat, dlon)
}

/// Inverts `forward` near `(lat, lon)` by fixed-point iteration: `x ← x − (forward(x) − target)`.
///
/// This converges because the datum shifts change by far less than a degree per degree (their
/// Jacobian is close to the identity), so every step shrinks the error by orders of magnitude.
fn invert(lat: f64, lon: f64, forward: impl Fn(f64, f64) -> (f64, f64)) -> (f64, f64) {
    let (mut x_lat, mut x_lon) = (lat, lon);
    for _ in 0..INVERSE_MAX_STEPS {
        let (f_lat, f_lon) = forward(x_lat, x_lon);
        let (e_lat, e_lon) = (f_lat - lat, f_lon - lon);
        x_lat -= e_lat;
        x_lon -= e_lon;
        let converged = e_lat.abs() < INVERSE_EPS_DEG && e_lon.abs() < INVERSE_EPS_DEG;
        if converged || !(e_lat.is_finite() && e_lon.is_finite()) {
            break;
        }
    }
    (x_lat, x_lon)
}

/// Converts a WGS-84 point (as GNSS gives it) to GCJ-02 (as AMap and Tencent maps draw it), using the
/// standard published formula on the Krasovsky ellipsoid. Points outside [`in_china_rough_box`] are
/// returned unchanged. Returns `(lat, lon)`.
pub fn wgs84_to_gcj02(lat: f64, lon: f64) -> (f64, f64) {
    if !in_china_rough_box(lat, lon) {
        return (lat, lon);
    }
    let (dlat, dlon) = gcj02_delta(lat, lon);
    (lat + dlat, lon + dlon)
}

/// Converts a GCJ-02 point back to WGS-84: the exact inverse of [`wgs84_to_gcj02`], found by
/// iteration to about 10 µm rather than by the common one-step approximation, which is off by up to
/// a couple of metres. Points outside [`in_china_rough_box`] are returned unchanged. Returns
/// `(lat, lon)`.
///
/// Within a few metres of the box's edge the two directions can disagree on which side a point is;
/// nothing of ours lies there.
pub fn gcj02_to_wgs84(lat: f64, lon: f64) -> (f64, f64) {
    if !in_china_rough_box(lat, lon) {
        return (lat, lon);
    }
    invert(lat, lon, |la, lo| {
        let (dlat, dlon) = gcj02_delta(la, lo);
        (la + dlat, lo + dlon)
    })
}

/// The constant of Baidu's BD-09 shift, π·3000/180.
const BD_X_PI: f64 = PI * 3000.0 / 180.0;

/// Converts a GCJ-02 point to BD-09 (Baidu Maps), using the published formula. Unlike GCJ-02 it is
/// applied everywhere, as Baidu does. Returns `(lat, lon)`.
pub fn gcj02_to_bd09(lat: f64, lon: f64) -> (f64, f64) {
    let z = lon.hypot(lat) + 0.00002 * (lat * BD_X_PI).sin();
    let theta = lat.atan2(lon) + 0.000003 * (lon * BD_X_PI).cos();
    (z * theta.sin() + 0.006, z * theta.cos() + 0.0065)
}

/// Converts a BD-09 point back to GCJ-02: the exact inverse of [`gcj02_to_bd09`], found by iteration.
/// Returns `(lat, lon)`.
pub fn bd09_to_gcj02(lat: f64, lon: f64) -> (f64, f64) {
    invert(lat, lon, gcj02_to_bd09)
}

// ---------------------------------------------------------------------------------------------------
// Fences
// ---------------------------------------------------------------------------------------------------

/// Whether `(lat, lon)` lies inside the polygon `ring` of `(lat, lon)` vertices, by the even-odd rule
/// (ray casting).
///
/// The ring may be closed (last vertex equal to the first) or not. It is treated as planar in
/// degrees, which is accurate for city-sized fences but wrong for rings that cross the
/// antimeridian or contain a pole. A point exactly on an edge or vertex may be reported inside or
/// outside. Rings of fewer than three vertices contain nothing, and a non-finite point is outside.
pub fn point_in_polygon(lat: f64, lon: f64, ring: &[(f64, f64)]) -> bool {
    if ring.len() < 3 || !lat.is_finite() || !lon.is_finite() {
        return false;
    }
    let mut inside = false;
    let mut j = ring.len() - 1;
    for (i, &(lat_i, lon_i)) in ring.iter().enumerate() {
        let (lat_j, lon_j) = ring[j];
        // The edge straddles the point's latitude (half-open, so a vertex is counted once), and the
        // crossing of the ray towards +lon lies east of the point. A closing vertex equal to the
        // first makes a zero-length edge, which never straddles, so closed rings need no care.
        if (lat_i > lat) != (lat_j > lat) {
            let cross_lon = lon_i + (lat - lat_i) / (lat_j - lat_i) * (lon_j - lon_i);
            if lon < cross_lon {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

/// A latitude/longitude rectangle, in degrees, edges included. It does not wrap around the
/// antimeridian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    /// Southern edge.
    pub min_lat: f64,
    /// Western edge.
    pub min_lon: f64,
    /// Northern edge.
    pub max_lat: f64,
    /// Eastern edge.
    pub max_lon: f64,
}

impl BBox {
    /// The smallest box holding every `(lat, lon)` vertex of `ring`: a quick reject before
    /// [`point_in_polygon`]. `None` for an empty ring or one with a non-finite coordinate.
    pub fn of_ring(ring: &[(f64, f64)]) -> Option<BBox> {
        let mut vertices = ring.iter();
        let &(lat0, lon0) = vertices.next()?;
        let mut b = BBox {
            min_lat: lat0,
            min_lon: lon0,
            max_lat: lat0,
            max_lon: lon0,
        };
        for &(lat, lon) in vertices {
            b.min_lat = b.min_lat.min(lat);
            b.min_lon = b.min_lon.min(lon);
            b.max_lat = b.max_lat.max(lat);
            b.max_lon = b.max_lon.max(lon);
        }
        // min/max skip NaN silently, so check every vertex rather than just the result.
        ring.iter()
            .all(|&(lat, lon)| lat.is_finite() && lon.is_finite())
            .then_some(b)
    }

    /// Whether `(lat, lon)` lies in the box, edges included.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        (self.min_lat..=self.max_lat).contains(&lat) && (self.min_lon..=self.max_lon).contains(&lon)
    }
}

// ---------------------------------------------------------------------------------------------------
// The unit sphere
// ---------------------------------------------------------------------------------------------------

/// The point `(lat, lon)` (degrees) as a vector on the unit sphere: x towards (0°, 0°), y towards
/// (0°, 90° E), z towards the North Pole.
///
/// Straight-line (chord) distance between two such vectors grows strictly with great-circle
/// distance, so an R-tree over them in 3-D orders neighbours exactly, with no seam at the
/// antimeridian or the poles. [`chord_to_m`] turns a chord back into metres.
pub fn unit_vector(lat: f64, lon: f64) -> [f64; 3] {
    let (sin_lat, cos_lat) = lat.to_radians().sin_cos();
    let (sin_lon, cos_lon) = lon.to_radians().sin_cos();
    [cos_lat * cos_lon, cos_lat * sin_lon, sin_lat]
}

/// Great-circle distance in metres on the mean sphere for a chord of length `chord` between two
/// [`unit_vector`]s. Chords longer than the diameter (2) are taken as antipodal.
pub fn chord_to_m(chord: f64) -> f64 {
    2.0 * (chord / 2.0).clamp(0.0, 1.0).asin() * EARTH_RADIUS_M
}

/// The chord between two [`unit_vector`]s that lie `metres` apart along a great circle: the inverse
/// of [`chord_to_m`], for turning a search radius into an R-tree query. Distances beyond half the
/// circumference give the diameter, 2.
pub fn m_to_chord(metres: f64) -> f64 {
    2.0 * (metres.max(0.0) / EARTH_RADIUS_M / 2.0).min(PI / 2.0).sin()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// WGS-84 and GCJ-02 pairs `(wgs_lat, wgs_lon, gcj_lat, gcj_lon)`, copied from the test suite of
    /// googollee/eviltransform, `matlab/test/testSuite.m` (also in `go/transform_test.go` and
    /// `javascript/test.js`), where they are checked to an absolute 1e-6 degrees.
    const EVILTRANSFORM_WGS_GCJ: [(f64, f64, f64, f64); 3] = [
        (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215), // Shanghai
        (22.543847, 113.912316, 22.540796131694766, 113.9171764808363), // Shenzhen
        (39.911954, 116.377817, 39.91334545536069, 116.38404722455657), // Beijing
    ];

    /// Points outside the box, from the same file's "edge cases" (Denver, Brisbane, Rio de Janeiro):
    /// both conversions must leave them as they are.
    const EVILTRANSFORM_OUTSIDE: [(f64, f64); 3] = [
        (39.7392, -104.9903),
        (-27.4698, 153.0251),
        (-22.9068, -43.1729),
    ];

    /// A BD-09 and GCJ-02 pair `(bd_lat, bd_lon, gcj_lat, gcj_lon)` in Beijing from the same file
    /// (`gcj2bdTest`, `bd2gcjTest`), given to five decimals and checked to 5e-5 degrees.
    const EVILTRANSFORM_BD_GCJ: (f64, f64, f64, f64) = (39.90851, 116.43351, 39.90245, 116.42703);

    fn assert_close(got: (f64, f64), want: (f64, f64), tol_deg: f64) {
        assert!(
            (got.0 - want.0).abs() < tol_deg && (got.1 - want.1).abs() < tol_deg,
            "got {got:?}, want {want:?} within {tol_deg}"
        );
    }

    #[test]
    fn wgs84_points_in_chinese_cities_shift_to_the_published_gcj02_coordinates() {
        for (wlat, wlon, glat, glon) in EVILTRANSFORM_WGS_GCJ {
            assert_close(wgs84_to_gcj02(wlat, wlon), (glat, glon), 1e-6);
        }
    }

    #[test]
    fn published_gcj02_coordinates_convert_back_to_their_wgs84_points() {
        for (wlat, wlon, glat, glon) in EVILTRANSFORM_WGS_GCJ {
            let (lat, lon) = gcj02_to_wgs84(glat, glon);
            assert_close((lat, lon), (wlat, wlon), 1e-6);
            assert!(haversine_m(lat, lon, wlat, wlon) < 0.01);
        }
    }

    #[test]
    fn a_round_trip_through_gcj02_comes_back_within_a_centimetre() {
        // A grid over eastern China, Xinjiang and Hainan, away from the box's edges.
        for i in 0..=40 {
            for j in 0..=40 {
                let lat = 18.0 + f64::from(i) * 0.8;
                let lon = 75.0 + f64::from(j) * 1.5;
                let (glat, glon) = wgs84_to_gcj02(lat, lon);
                let (wlat, wlon) = gcj02_to_wgs84(glat, glon);
                let d = haversine_m(lat, lon, wlat, wlon);
                assert!(d < 0.01, "({lat}, {lon}) came back {d} m away");
            }
        }
    }

    #[test]
    fn points_outside_china_are_not_shifted() {
        for (lat, lon) in EVILTRANSFORM_OUTSIDE {
            assert_eq!(wgs84_to_gcj02(lat, lon), (lat, lon));
            assert_eq!(gcj02_to_wgs84(lat, lon), (lat, lon));
        }
        assert!(!in_china_rough_box(f64::NAN, 116.0));
    }

    #[test]
    fn gcj02_and_bd09_convert_to_the_published_pair_and_back() {
        let (blat, blon, glat, glon) = EVILTRANSFORM_BD_GCJ;
        assert_close(gcj02_to_bd09(glat, glon), (blat, blon), 5e-5);
        assert_close(bd09_to_gcj02(blat, blon), (glat, glon), 5e-5);
        let (back_lat, back_lon) =
            bd09_to_gcj02(gcj02_to_bd09(glat, glon).0, gcj02_to_bd09(glat, glon).1);
        assert!(haversine_m(glat, glon, back_lat, back_lon) < 0.01);
    }

    #[test]
    fn haversine_gives_a_degree_of_meridian_as_about_111_km() {
        let d = haversine_m(30.0, 120.0, 31.0, 120.0);
        assert!((d - 111_195.0).abs() < 1.0, "{d}");
        assert_eq!(haversine_m(30.0, 120.0, 30.0, 120.0), 0.0);
    }

    /// A square fence around West Lake, Hangzhou, as (lat, lon).
    const SQUARE: [(f64, f64); 4] = [
        (30.23, 120.13),
        (30.23, 120.16),
        (30.26, 120.16),
        (30.26, 120.13),
    ];

    #[test]
    fn a_point_inside_a_fence_is_inside_whether_or_not_the_ring_is_closed() {
        let mut closed = SQUARE.to_vec();
        closed.push(SQUARE[0]);
        for ring in [&SQUARE[..], &closed[..]] {
            assert!(point_in_polygon(30.245, 120.145, ring));
            assert!(!point_in_polygon(30.245, 120.17, ring));
            assert!(!point_in_polygon(30.27, 120.145, ring));
        }
    }

    #[test]
    fn the_notch_of_a_concave_fence_is_outside() {
        // A U shape: the notch (30.25, 120.145) is outside, the arms are inside.
        let u = [
            (30.23, 120.13),
            (30.23, 120.16),
            (30.26, 120.16),
            (30.26, 120.15),
            (30.24, 120.15),
            (30.24, 120.14),
            (30.26, 120.14),
            (30.26, 120.13),
        ];
        assert!(!point_in_polygon(30.25, 120.145, &u));
        assert!(point_in_polygon(30.25, 120.135, &u));
        assert!(point_in_polygon(30.25, 120.155, &u));
        assert!(point_in_polygon(30.235, 120.145, &u));
    }

    #[test]
    fn degenerate_fences_contain_nothing() {
        assert!(!point_in_polygon(30.0, 120.0, &[]));
        assert!(!point_in_polygon(
            30.0,
            120.0,
            &[(29.0, 119.0), (31.0, 121.0)]
        ));
        assert!(!point_in_polygon(f64::NAN, 120.145, &SQUARE));
    }

    #[test]
    fn a_bounding_box_holds_every_vertex_of_its_ring() {
        let b = BBox::of_ring(&SQUARE).unwrap();
        assert_eq!(
            b,
            BBox {
                min_lat: 30.23,
                min_lon: 120.13,
                max_lat: 30.26,
                max_lon: 120.16
            }
        );
        assert!(SQUARE.iter().all(|&(lat, lon)| b.contains(lat, lon)));
        assert!(b.contains(30.245, 120.145));
        assert!(!b.contains(30.27, 120.145));
        assert!(!b.contains(f64::NAN, 120.145));
    }

    #[test]
    fn an_empty_or_non_finite_ring_has_no_bounding_box() {
        assert_eq!(BBox::of_ring(&[]), None);
        assert_eq!(BBox::of_ring(&[(30.0, 120.0), (f64::NAN, 121.0)]), None);
    }

    fn chord(a: [f64; 3], b: [f64; 3]) -> f64 {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
    }

    #[test]
    fn chord_length_between_unit_vectors_gives_back_the_haversine_distance() {
        let pairs = [
            ((30.2741, 120.1551), (30.2750, 120.1560)),
            ((31.2304, 121.4737), (39.9042, 116.4074)),
            ((10.0, 179.9), (10.0, -179.9)),
            ((0.0, 0.0), (0.0, 180.0)),
        ];
        for ((lat1, lon1), (lat2, lon2)) in pairs {
            let c = chord(unit_vector(lat1, lon1), unit_vector(lat2, lon2));
            let h = haversine_m(lat1, lon1, lat2, lon2);
            assert!(
                (chord_to_m(c) - h).abs() < 1e-6 * h.max(1.0),
                "{c} -> {} vs {h}",
                chord_to_m(c)
            );
            assert!((m_to_chord(h) - c).abs() < 1e-9);
        }
        let v = unit_vector(30.0, 120.0);
        assert!((chord(v, [0.0; 3]) - 1.0).abs() < 1e-12);
    }
}
