//! The pure model of a patrolling officer: where a body-worn recorder is, how fast it moves, what its
//! GPS reports. No clock, no IO: the caller says how much time passed ([`Officer::advance`]) and stamps
//! the fix with the wall clock itself.
//!
//! Officers move on a street grid around a centre: a Manhattan grid whose streets are 150–250 m apart
//! (each spacing drawn from the seed), cut to the intersections within a radius. An officer walks or
//! drives along a street to the next intersection, where they go straight on or turn (a U-turn only at
//! the edge), and now and then stop there for a patrol stop of 30–300 s. Walkers keep their own pace of
//! 1.2–1.6 m/s; drivers pick 8–15 m/s per block. The reported position carries a GPS error of a few
//! metres that wanders slowly (a real receiver's error is correlated from one fix to the next; white
//! noise at 100 fixes per second would look like a recorder jumping at hundreds of m/s), and the
//! reported `acc` is about its size. Course and speed are those of the motion; battery drains slowly and
//! is swapped for a full one when nearly empty.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::f64::consts::PI;

/// Mean Earth radius in metres, the one `custody_core::geo::haversine_m` uses.
const EARTH_RADIUS_M: f64 = custody_core::geo::EARTH_RADIUS_M;
/// Shortest and longest distance between two parallel streets, in metres.
pub const BLOCK_M: (f64, f64) = (150.0, 250.0);
/// The smallest radius the grid accepts: the centre intersection and at least one neighbour.
pub const MIN_RADIUS_M: f64 = 250.0;
/// Walking pace range, m/s (each walker keeps one pace, with a little variation per block).
pub const WALK_MPS: (f64, f64) = (1.2, 1.6);
/// Driving speed range, m/s (drawn per block).
pub const DRIVE_MPS: (f64, f64) = (8.0, 15.0);
/// Length of a patrol stop, seconds.
pub const STOP_S: (f64, f64) = (30.0, 300.0);
/// How long fixes carry `sos: true` after the SOS key was pressed, seconds.
pub const SOS_FLAG_S: f64 = 10.0;
/// The fastest the GPS error wanders, m/s. Together with the fastest driver it keeps consecutive fixes
/// far below the 70 m/s a server takes as a teleport.
const NOISE_DRIFT_MPS: f64 = 0.8;

/// The area officers patrol: the centre, the radius and the street lines, in metres east (`xs`) and
/// north (`ys`) of the centre. Both lists are sorted and hold 0 (streets cross at the centre).
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    center_lat: f64,
    center_lon: f64,
    radius_m: f64,
    xs: Vec<f64>,
    ys: Vec<f64>,
}

/// An intersection, as indices into the grid's street lists.
type Node = (usize, usize);

impl Grid {
    /// Lays out the streets around `center` within `radius_m`. The centre latitude must be within
    /// ±80° (the flat local map does not hold near the poles) and the radius at least
    /// [`MIN_RADIUS_M`] and at most 50 km.
    pub fn new(center_lat: f64, center_lon: f64, radius_m: f64, seed: u64) -> Result<Self, String> {
        if !center_lat.is_finite() || !(-80.0..=80.0).contains(&center_lat) {
            return Err(format!(
                "centre latitude must be between -80 and 80 degrees, got {center_lat}"
            ));
        }
        if !center_lon.is_finite() || !(-180.0..=180.0).contains(&center_lon) {
            return Err(format!(
                "centre longitude must be between -180 and 180 degrees, got {center_lon}"
            ));
        }
        if !radius_m.is_finite() || !(MIN_RADIUS_M..=50_000.0).contains(&radius_m) {
            return Err(format!(
                "radius must be between {MIN_RADIUS_M} m and 50000 m, got {radius_m}"
            ));
        }
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x6772_6964); // "grid"
        let lines = |rng: &mut SmallRng| {
            let mut v = vec![0.0];
            for sign in [-1.0, 1.0] {
                let mut at = 0.0;
                loop {
                    at += rng.random_range(BLOCK_M.0..=BLOCK_M.1);
                    if at > radius_m {
                        break;
                    }
                    v.push(sign * at);
                }
            }
            v.sort_by(f64::total_cmp);
            v
        };
        let xs = lines(&mut rng);
        let ys = lines(&mut rng);
        Ok(Self {
            center_lat,
            center_lon,
            radius_m,
            xs,
            ys,
        })
    }

    /// Street lines running north–south, metres east of the centre.
    pub fn xs(&self) -> &[f64] {
        &self.xs
    }

    /// Street lines running east–west, metres north of the centre.
    pub fn ys(&self) -> &[f64] {
        &self.ys
    }

    pub fn radius_m(&self) -> f64 {
        self.radius_m
    }

    fn point(&self, (i, j): Node) -> (f64, f64) {
        (self.xs[i], self.ys[j])
    }

    fn inside(&self, n: Node) -> bool {
        let (x, y) = self.point(n);
        x.hypot(y) <= self.radius_m
    }

    /// The intersections one block away from `n` that lie inside the radius.
    fn neighbours(&self, (i, j): Node) -> impl Iterator<Item = Node> + '_ {
        let cand = [
            (i.checked_add(1).filter(|&v| v < self.xs.len()), Some(j)),
            (i.checked_sub(1), Some(j)),
            (Some(i), j.checked_add(1).filter(|&v| v < self.ys.len())),
            (Some(i), j.checked_sub(1)),
        ];
        cand.into_iter()
            .filter_map(|(a, b)| Some((a?, b?)))
            .filter(|&n| self.inside(n))
    }

    fn center_node(&self) -> Node {
        let zero = |v: &[f64]| v.iter().position(|&x| x == 0.0).unwrap_or(0);
        (zero(&self.xs), zero(&self.ys))
    }

    /// WGS-84 degrees of a point `x` metres east and `y` metres north of the centre, on the local
    /// tangent plane (exact enough over tens of kilometres).
    pub fn to_lat_lon(&self, x: f64, y: f64) -> (f64, f64) {
        let m_per_deg = EARTH_RADIUS_M * PI / 180.0;
        let lat = self.center_lat + y / m_per_deg;
        let lon = self.center_lon + x / (m_per_deg * self.center_lat.to_radians().cos());
        // Keep the longitude in range across the antimeridian.
        let lon = (lon + 180.0).rem_euclid(360.0) - 180.0;
        (lat.clamp(-90.0, 90.0), lon)
    }

    /// Whether a point lies on a street (within `tol` metres of a street line).
    pub fn is_on_street(&self, x: f64, y: f64, tol: f64) -> bool {
        self.xs.iter().any(|&sx| (sx - x).abs() <= tol)
            || self.ys.iter().any(|&sy| (sy - y).abs() <= tol)
    }
}

/// How an officer gets around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Walking,
    Driving,
}

/// What a recorder's GPS reports (without the time, which the caller stamps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    /// WGS-84 degrees.
    pub lat: f64,
    pub lon: f64,
    /// Metres above sea level.
    pub alt_m: f32,
    /// Ground speed, m/s.
    pub speed_mps: f32,
    /// Course over ground, degrees from north in 0..360.
    pub course_deg: f32,
    /// Horizontal accuracy, metres.
    pub accuracy_m: f32,
    /// Within [`SOS_FLAG_S`] of the SOS key being pressed.
    pub sos: bool,
    /// Percent.
    pub battery_pct: u8,
}

/// The result of [`Officer::advance`]: the new fix, and whether the SOS key was pressed just now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub fix: Fix,
    pub sos_raised: bool,
}

/// The settings officers share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// SOS presses per officer per hour (a Poisson process).
    pub sos_per_hour: f64,
    /// Chance of a patrol stop at an intersection, walking.
    pub walk_stop_chance: f64,
    /// Chance of a patrol stop at an intersection, driving.
    pub drive_stop_chance: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            sos_per_hour: 0.05,
            // A walker crosses an intersection every two minutes or so: a stop every ~20 minutes. A
            // driver crosses one every ~15 s: a stop every ~12 minutes.
            walk_stop_chance: 0.1,
            drive_stop_chance: 0.02,
        }
    }
}

/// One officer with a recorder. Long-lived state of the simulation, advanced fix by fix.
#[derive(Debug, Clone)]
pub struct Officer {
    mode: Mode,
    behaviour: Behaviour,
    /// A walker's own pace, m/s.
    pace: f64,
    /// The intersection the officer left.
    from: Node,
    /// The intersection the officer is heading to (equal to `from` only on a grid of one node).
    to: Node,
    /// Metres covered from `from` towards `to`.
    along: f64,
    /// Speed on the current block, m/s.
    block_speed: f64,
    /// Course of the current block, degrees from north.
    course: f64,
    /// Seconds left of the current patrol stop; 0 when moving.
    stop_left: f64,
    /// The GPS error now, metres east and north.
    noise: (f64, f64),
    /// Where the GPS error is wandering to.
    noise_target: (f64, f64),
    /// Seconds until a new `noise_target` is drawn.
    noise_retarget_in: f64,
    /// The typical size of this receiver's error, metres.
    accuracy: f64,
    /// Height of the ground, metres.
    ground_alt: f64,
    /// Battery percent (fractional) and drain in percent per second.
    battery: f64,
    drain_per_s: f64,
    /// Seconds for which fixes still carry `sos: true`.
    sos_left: f64,
    rng: SmallRng,
}

impl Officer {
    /// Officer number `index` of a fleet made with `seed`: a random intersection, pace, battery and
    /// receiver. The same seed and index give the same officer.
    pub fn new(grid: &Grid, mode: Mode, behaviour: Behaviour, seed: u64, index: u64) -> Self {
        // splitmix-style spreading, so that neighbouring indices get unrelated streams.
        let mut rng = SmallRng::seed_from_u64(
            seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let nodes: Vec<Node> = (0..grid.xs.len())
            .flat_map(|i| (0..grid.ys.len()).map(move |j| (i, j)))
            .filter(|&n| grid.inside(n))
            .collect();
        let from = if nodes.is_empty() {
            grid.center_node()
        } else {
            nodes[rng.random_range(0..nodes.len())]
        };
        let accuracy = rng.random_range(3.0..8.0);
        let mut o = Self {
            mode,
            behaviour,
            pace: rng.random_range(WALK_MPS.0..=WALK_MPS.1),
            from,
            to: from,
            along: 0.0,
            block_speed: 0.0,
            course: 0.0,
            stop_left: 0.0,
            noise: (0.0, 0.0),
            noise_target: (0.0, 0.0),
            noise_retarget_in: 0.0,
            accuracy,
            ground_alt: rng.random_range(5.0..30.0),
            battery: rng.random_range(45.0..100.0),
            // 5–10 % an hour: a shift of 8–10 hours on one battery.
            drain_per_s: rng.random_range(5.0..10.0) / 3600.0,
            sos_left: 0.0,
            rng,
        };
        o.choose_next(grid, None);
        // Start somewhere along the first block, not all on intersections.
        let len = o.block_len(grid);
        o.along = o.rng.random_range(0.0..=len.max(0.0));
        o.noise = o.random_noise_point();
        o.noise_target = o.random_noise_point();
        o.noise_retarget_in = o.rng.random_range(5.0..20.0);
        o
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the officer is on a patrol stop.
    pub fn is_stopped(&self) -> bool {
        self.stop_left > 0.0 || self.from == self.to
    }

    /// Where the officer really is (without GPS error), metres east and north of the centre.
    pub fn true_position_m(&self, grid: &Grid) -> (f64, f64) {
        let (ax, ay) = grid.point(self.from);
        let (bx, by) = grid.point(self.to);
        let len = (bx - ax).hypot(by - ay);
        if len == 0.0 {
            return (ax, ay);
        }
        let f = (self.along / len).clamp(0.0, 1.0);
        (ax + (bx - ax) * f, ay + (by - ay) * f)
    }

    fn block_len(&self, grid: &Grid) -> f64 {
        let (ax, ay) = grid.point(self.from);
        let (bx, by) = grid.point(self.to);
        (bx - ax).hypot(by - ay)
    }

    fn random_noise_point(&mut self) -> (f64, f64) {
        let r = self.accuracy * self.rng.random::<f64>().sqrt();
        let a = self.rng.random_range(0.0..2.0 * PI);
        (r * a.cos(), r * a.sin())
    }

    /// At intersection `self.to` (or at the start): picks the next block. Straight on is likelier
    /// than a turn; a U-turn only where there is no other way.
    fn choose_next(&mut self, grid: &Grid, came_from: Option<Node>) {
        let here = self.to;
        let (hx, hy) = grid.point(here);
        let heading = came_from.map(|c| {
            let (cx, cy) = grid.point(c);
            ((hx - cx).signum(), (hy - cy).signum())
        });
        let options: Vec<(Node, f64)> = grid
            .neighbours(here)
            .filter(|&n| Some(n) != came_from)
            .map(|n| {
                let (nx, ny) = grid.point(n);
                let straight = heading == Some(((nx - hx).signum(), (ny - hy).signum()));
                (n, if straight { 2.0 } else { 1.0 })
            })
            .collect();
        let next = if options.is_empty() {
            came_from.unwrap_or(here)
        } else {
            let total: f64 = options.iter().map(|o| o.1).sum();
            let mut pick = self.rng.random_range(0.0..total);
            let mut chosen = options[0].0;
            for &(n, w) in &options {
                if pick < w {
                    chosen = n;
                    break;
                }
                pick -= w;
            }
            chosen
        };
        self.from = here;
        self.to = next;
        self.along = 0.0;
        self.block_speed = match self.mode {
            Mode::Walking => self.pace * self.rng.random_range(0.95..1.05),
            Mode::Driving => self.rng.random_range(DRIVE_MPS.0..=DRIVE_MPS.1),
        }
        .min(match self.mode {
            Mode::Walking => WALK_MPS.1,
            Mode::Driving => DRIVE_MPS.1,
        });
        let (nx, ny) = grid.point(next);
        if next != here {
            self.course = (nx - hx).atan2(ny - hy).to_degrees().rem_euclid(360.0);
        }
    }

    /// Moves the officer on by `dt` seconds (0 gives the current fix again, with the same position) and
    /// returns the fix the recorder reports at the end of it.
    pub fn advance(&mut self, grid: &Grid, dt: f64) -> Step {
        let dt = if dt.is_finite() { dt.max(0.0) } else { 0.0 };

        // SOS presses arrive as a Poisson process.
        self.sos_left = (self.sos_left - dt).max(0.0);
        let lambda = self.behaviour.sos_per_hour / 3600.0;
        let sos_raised =
            dt > 0.0 && lambda > 0.0 && self.rng.random::<f64>() < 1.0 - (-lambda * dt).exp();
        if sos_raised {
            self.sos_left = SOS_FLAG_S;
        }

        let mut left = dt;
        // Bounded: a block is at least 150 m and a stop at least 30 s, so even hours of dt end soon.
        while left > 0.0 {
            if self.stop_left > 0.0 {
                let t = self.stop_left.min(left);
                self.stop_left -= t;
                left -= t;
                continue;
            }
            let len = self.block_len(grid);
            if len == 0.0 {
                // A grid of one intersection: nowhere to go.
                break;
            }
            let to_go = len - self.along;
            let v = self.block_speed.max(0.1);
            if v * left < to_go {
                self.along += v * left;
                left = 0.0;
            } else {
                left -= to_go / v;
                self.along = len;
                let came_from = self.from;
                self.choose_next(grid, Some(came_from));
                let chance = match self.mode {
                    Mode::Walking => self.behaviour.walk_stop_chance,
                    Mode::Driving => self.behaviour.drive_stop_chance,
                };
                if self.rng.random::<f64>() < chance {
                    self.stop_left = self.rng.random_range(STOP_S.0..=STOP_S.1);
                }
            }
        }

        // The GPS error wanders towards a target at a bounded speed.
        let mut t = dt;
        while t > 0.0 {
            let slice = t.min(self.noise_retarget_in.max(0.0));
            let (dx, dy) = (
                self.noise_target.0 - self.noise.0,
                self.noise_target.1 - self.noise.1,
            );
            let d = dx.hypot(dy);
            let max = NOISE_DRIFT_MPS * slice;
            if d <= max {
                self.noise = self.noise_target;
            } else {
                self.noise.0 += dx / d * max;
                self.noise.1 += dy / d * max;
            }
            t -= slice;
            self.noise_retarget_in -= slice;
            if self.noise_retarget_in <= 0.0 {
                self.noise_target = self.random_noise_point();
                self.noise_retarget_in = self.rng.random_range(5.0..20.0);
            }
        }

        self.battery -= self.drain_per_s * dt;
        if self.battery <= 5.0 {
            // The officer swaps in a charged battery.
            self.battery = 100.0;
        }

        let (x, y) = self.true_position_m(grid);
        let (lat, lon) = grid.to_lat_lon(x + self.noise.0, y + self.noise.1);
        let moving = !self.is_stopped();
        let speed = if moving { self.block_speed } else { 0.0 };
        let acc = self.accuracy * self.rng.random_range(0.8..1.25);
        Step {
            fix: Fix {
                lat,
                lon,
                alt_m: (self.ground_alt + self.noise.1 * 0.3) as f32,
                speed_mps: (speed * 100.0).round() as f32 / 100.0,
                course_deg: (self.course as f32).rem_euclid(360.0),
                accuracy_m: (acc * 10.0).round() as f32 / 10.0,
                sos: self.sos_left > 0.0,
                battery_pct: self.battery.ceil().clamp(0.0, 100.0) as u8,
            },
            sos_raised,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use custody_core::geo::haversine_m;
    use custody_core::position::Limits;
    use custody_core::{DeviceId, Position, Timestamp};

    fn hangzhou(seed: u64) -> Grid {
        Grid::new(30.2741, 120.1551, 3000.0, seed).unwrap()
    }

    fn quiet() -> Behaviour {
        Behaviour {
            sos_per_hour: 0.0,
            ..Behaviour::default()
        }
    }

    #[test]
    fn streets_are_150_to_250_m_apart_cross_at_the_centre_and_stay_inside_the_radius() {
        let g = hangzhou(7);
        for lines in [g.xs(), g.ys()] {
            assert!(lines.contains(&0.0));
            assert!(lines.len() > 20, "{}", lines.len());
            for w in lines.windows(2) {
                let gap = w[1] - w[0];
                assert!((BLOCK_M.0..=BLOCK_M.1).contains(&gap), "{gap}");
            }
            assert!(lines.iter().all(|v| v.abs() <= 3000.0));
        }
        assert!(
            Grid::new(30.0, 120.0, 100.0, 1)
                .unwrap_err()
                .contains("radius")
        );
        assert!(
            Grid::new(85.0, 120.0, 3000.0, 1)
                .unwrap_err()
                .contains("latitude")
        );
    }

    #[test]
    fn consecutive_fixes_are_never_more_than_70_mps_apart_at_any_rate() {
        let g = hangzhou(1);
        for (mode, seed) in [(Mode::Walking, 1), (Mode::Driving, 2), (Mode::Driving, 3)] {
            for dt in [0.01_f64, 0.1, 1.0, 7.3, 120.0] {
                let mut o = Officer::new(&g, mode, Behaviour::default(), seed, 0);
                let mut prev = o.advance(&g, 0.0).fix;
                let steps = (3600.0 / dt).min(20_000.0) as usize;
                for _ in 0..steps {
                    let f = o.advance(&g, dt).fix;
                    let d = haversine_m(prev.lat, prev.lon, f.lat, f.lon);
                    assert!(d / dt < 70.0, "{mode:?} at dt {dt}: {d} m");
                    assert!((-90.0..=90.0).contains(&f.lat) && (-180.0..=180.0).contains(&f.lon));
                    prev = f;
                }
            }
        }
    }

    #[test]
    fn officers_stay_on_streets_inside_the_radius() {
        let g = hangzhou(3);
        for i in 0..20 {
            let mode = if i % 3 == 0 {
                Mode::Driving
            } else {
                Mode::Walking
            };
            let mut o = Officer::new(&g, mode, quiet(), 3, i);
            for _ in 0..2000 {
                o.advance(&g, 5.0);
                let (x, y) = o.true_position_m(&g);
                assert!(g.is_on_street(x, y, 1e-6), "({x}, {y}) is off the streets");
                assert!(x.hypot(y) <= g.radius_m() + 1e-6);
            }
        }
    }

    #[test]
    fn walkers_walk_and_drivers_drive_and_the_reported_speed_is_the_real_one() {
        let g = hangzhou(4);
        for (mode, (lo, hi)) in [(Mode::Walking, WALK_MPS), (Mode::Driving, DRIVE_MPS)] {
            let mut o = Officer::new(&g, mode, quiet(), 4, 1);
            let mut checked = 0;
            for _ in 0..5000 {
                let before = o.true_position_m(&g);
                let was_stopped = o.is_stopped();
                let (course_before, from_before) = (o.course, o.from);
                let f = o.advance(&g, 1.0).fix;
                if o.is_stopped() {
                    assert_eq!(f.speed_mps, 0.0);
                    continue;
                }
                assert!(
                    (lo * 0.95..=hi).contains(&f64::from(f.speed_mps)),
                    "{mode:?}: {}",
                    f.speed_mps
                );
                // On the same block for the whole second: the distance covered is the speed, and the
                // course is the direction of the motion.
                if !was_stopped && o.from == from_before && o.course == course_before {
                    let after = o.true_position_m(&g);
                    let d = (after.0 - before.0).hypot(after.1 - before.1);
                    assert!(
                        (d - f64::from(f.speed_mps)).abs() < 0.02,
                        "{d} vs {}",
                        f.speed_mps
                    );
                    let bearing = (after.0 - before.0)
                        .atan2(after.1 - before.1)
                        .to_degrees()
                        .rem_euclid(360.0);
                    let diff = (bearing - f64::from(f.course_deg)).rem_euclid(360.0);
                    assert!(
                        !(0.01..=359.99).contains(&diff),
                        "bearing {bearing} course {}",
                        f.course_deg
                    );
                    checked += 1;
                }
            }
            assert!(checked > 1000, "{checked}");
        }
    }

    #[test]
    fn officers_turn_at_intersections_and_make_patrol_stops_of_30_to_300_s() {
        let g = hangzhou(5);
        let mut o = Officer::new(&g, Mode::Walking, quiet(), 5, 2);
        let mut courses = std::collections::BTreeSet::new();
        let mut stops = Vec::new();
        let mut stopped_for = 0.0;
        // Ten hours of patrol, fix by fix.
        for _ in 0..36_000 {
            let f = o.advance(&g, 1.0).fix;
            courses.insert(f.course_deg as u32);
            if f.speed_mps == 0.0 {
                stopped_for += 1.0;
            } else if stopped_for > 0.0 {
                stops.push(stopped_for);
                stopped_for = 0.0;
            }
        }
        assert_eq!(courses, [0, 90, 180, 270].into_iter().collect());
        assert!(stops.len() >= 5, "{stops:?}");
        // A stop ends within the second after its length, so the fixes see 30–301 s.
        assert!(
            stops
                .iter()
                .all(|s| (STOP_S.0 - 1.0..=STOP_S.1 + 1.0).contains(s)),
            "{stops:?}"
        );
    }

    #[test]
    fn the_gps_error_is_a_few_metres_and_accuracy_says_about_how_much() {
        let g = hangzhou(6);
        let mut o = Officer::new(&g, Mode::Walking, quiet(), 6, 3);
        for _ in 0..3000 {
            let f = o.advance(&g, 1.0).fix;
            let (x, y) = o.true_position_m(&g);
            let (lat, lon) = g.to_lat_lon(x, y);
            let err = haversine_m(lat, lon, f.lat, f.lon);
            assert!(
                err <= f64::from(f.accuracy_m) * 1.3 + 0.1,
                "{err} vs acc {}",
                f.accuracy_m
            );
            assert!((2.0..=10.0).contains(&f.accuracy_m), "{}", f.accuracy_m);
        }
    }

    #[test]
    fn the_battery_drains_slowly_and_is_swapped_when_nearly_empty() {
        let g = hangzhou(7);
        let mut o = Officer::new(&g, Mode::Walking, quiet(), 7, 4);
        let start = o.advance(&g, 0.0).fix.battery_pct;
        let hour_later = o.advance(&g, 3600.0).fix.battery_pct;
        let drained = i32::from(start) - i32::from(hour_later);
        assert!(
            (4..=11).contains(&drained) || hour_later == 100,
            "{start} -> {hour_later}"
        );
        let mut seen = Vec::new();
        for _ in 0..30 {
            seen.push(o.advance(&g, 3600.0).fix.battery_pct);
        }
        assert!(seen.iter().all(|&b| (5..=100).contains(&b)), "{seen:?}");
    }

    #[test]
    fn sos_comes_at_about_the_configured_rate_and_flags_the_next_10_s_of_fixes() {
        let g = hangzhou(8);
        let b = Behaviour {
            sos_per_hour: 60.0,
            ..Behaviour::default()
        };
        let mut raised = 0;
        let mut flagged_after = Vec::new();
        for i in 0..10 {
            let mut o = Officer::new(&g, Mode::Walking, b, 8, i);
            let mut since: Option<f64> = None;
            for _ in 0..3600 {
                let s = o.advance(&g, 1.0);
                if s.sos_raised {
                    raised += 1;
                    since = Some(0.0);
                    assert!(s.fix.sos);
                } else if let Some(t) = since.as_mut() {
                    *t += 1.0;
                    if s.fix.sos {
                        flagged_after.push(*t);
                    }
                }
            }
        }
        // 10 officer-hours at 60 an hour: 600 expected.
        assert!((500..=700).contains(&raised), "{raised}");
        assert!(
            flagged_after.iter().all(|&t| t < SOS_FLAG_S),
            "{flagged_after:?}"
        );
        let quiet_officer = Officer::new(&g, Mode::Walking, quiet(), 8, 0);
        let mut q = quiet_officer;
        assert!((0..3600).all(|_| !q.advance(&g, 1.0).sos_raised));
    }

    #[test]
    fn the_same_seed_gives_the_same_officers_and_another_seed_others() {
        let g = hangzhou(9);
        let run = |seed| {
            let mut o = Officer::new(&g, Mode::Driving, Behaviour::default(), seed, 5);
            (0..100).map(|_| o.advance(&g, 1.0).fix).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
        assert_eq!(hangzhou(9), hangzhou(9));
        assert_ne!(hangzhou(9).xs(), hangzhou(10).xs());
    }

    #[test]
    fn every_fix_passes_the_server_checks() {
        let g = Grid::new(-33.86, 151.21, 1000.0, 11).unwrap();
        let limits = Limits::default();
        let now = Timestamp::from_unix_micros(1_800_000_000_000_000);
        let mut o = Officer::new(&g, Mode::Driving, Behaviour::default(), 11, 0);
        let mut prev: Option<Position> = None;
        for k in 0..2000_i64 {
            let f = o.advance(&g, 0.5).fix;
            let p = Position {
                device: DeviceId::parse("SIM-1").unwrap(),
                time: Timestamp::from_unix_micros(now.unix_micros() + k * 500_000),
                lat: f.lat,
                lon: f.lon,
                alt_m: Some(f.alt_m),
                speed_mps: Some(f.speed_mps),
                course_deg: Some(f.course_deg),
                accuracy_m: Some(f.accuracy_m),
                sos: f.sos,
                battery_pct: Some(f.battery_pct),
            };
            assert_eq!(limits.check(&p, p.time), Ok(()), "{p:?}");
            if let Some(prev) = &prev {
                assert_eq!(limits.check_move(prev, &p), Ok(()));
            }
            prev = Some(p);
        }
    }

    #[test]
    fn the_grid_crosses_the_antimeridian_without_leaving_the_longitude_range() {
        let g = Grid::new(-16.5, 179.999, 2000.0, 12).unwrap();
        let mut o = Officer::new(&g, Mode::Driving, quiet(), 12, 0);
        for _ in 0..2000 {
            let f = o.advance(&g, 2.0).fix;
            assert!((-180.0..=180.0).contains(&f.lon), "{}", f.lon);
        }
    }
}
