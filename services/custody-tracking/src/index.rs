//! The latest position of every device, indexed for "who is nearest" questions. Points live on the
//! unit sphere in 3-D, so the R-tree's Euclidean (chord) order is exactly great-circle order: no
//! distortion near the poles or across the antimeridian.

use custody_core::geo::{BBox, chord_to_m, unit_vector};
use custody_core::{DeviceId, Position, Timestamp};
use rstar::RTree;
use rstar::primitives::GeomWithData;
use serde::Serialize;
use std::collections::HashMap;

type Entry = GeomWithData<[f64; 3], DeviceId>;

/// A device near a point.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nearby {
    /// Great-circle distance in metres.
    pub distance_m: f64,
    pub position: Position,
}

/// Latest positions by device, with an R-tree over them.
#[derive(Debug, Default)]
pub struct LatestIndex {
    by_device: HashMap<DeviceId, Position>,
    tree: RTree<Entry>,
}

impl LatestIndex {
    pub fn new(positions: Vec<Position>) -> Self {
        let entries = positions
            .iter()
            .map(|p| Entry::new(unit_vector(p.lat, p.lon), p.device.clone()))
            .collect();
        Self {
            by_device: positions
                .into_iter()
                .map(|p| (p.device.clone(), p))
                .collect(),
            tree: RTree::bulk_load(entries),
        }
    }

    /// Takes `p` if it is newer than the device's current latest. Returns whether it did.
    pub fn update(&mut self, p: &Position) -> bool {
        if let Some(old) = self.by_device.get(&p.device) {
            if old.time >= p.time {
                return false;
            }
            self.tree
                .remove(&Entry::new(unit_vector(old.lat, old.lon), p.device.clone()));
        }
        self.tree
            .insert(Entry::new(unit_vector(p.lat, p.lon), p.device.clone()));
        self.by_device.insert(p.device.clone(), p.clone());
        true
    }

    pub fn get(&self, device: &DeviceId) -> Option<&Position> {
        self.by_device.get(device)
    }

    pub fn len(&self) -> usize {
        self.by_device.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_device.is_empty()
    }

    /// The `n` devices nearest to (lat, lon), nearest first, skipping fixes older than `since`.
    pub fn nearest(&self, lat: f64, lon: f64, n: usize, since: Option<Timestamp>) -> Vec<Nearby> {
        let q = unit_vector(lat, lon);
        self.tree
            .nearest_neighbor_iter(&q)
            .filter_map(|e| self.by_device.get(&e.data))
            .filter(|p| since.is_none_or(|s| p.time >= s))
            .take(n)
            .map(|p| {
                let v = unit_vector(p.lat, p.lon);
                let chord =
                    ((v[0] - q[0]).powi(2) + (v[1] - q[1]).powi(2) + (v[2] - q[2]).powi(2)).sqrt();
                Nearby {
                    distance_m: chord_to_m(chord),
                    position: p.clone(),
                }
            })
            .collect()
    }

    /// Every latest fix inside `bbox` (all when `None`) and not older than `since`, by device id.
    pub fn all(&self, bbox: Option<&BBox>, since: Option<Timestamp>) -> Vec<Position> {
        let mut v: Vec<Position> = self
            .by_device
            .values()
            .filter(|p| bbox.is_none_or(|b| b.contains(p.lat, p.lon)))
            .filter(|p| since.is_none_or(|s| p.time >= s))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.device.cmp(&b.device));
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(d: &str, t: i64, lat: f64, lon: f64) -> Position {
        Position {
            device: DeviceId::parse(d).unwrap(),
            time: Timestamp::from_unix_micros(t),
            lat,
            lon,
            alt_m: None,
            speed_mps: None,
            course_deg: None,
            accuracy_m: None,
            sos: false,
            battery_pct: None,
        }
    }

    #[test]
    fn the_nearest_devices_come_in_great_circle_order_with_their_distance() {
        let mut idx = LatestIndex::new(vec![
            p("FAR", 1, 30.30, 120.15),
            p("NEAR", 1, 30.2750, 120.1551),
            p("MID", 1, 30.28, 120.16),
        ]);
        let got = idx.nearest(30.2741, 120.1551, 2, None);
        let ids: Vec<&str> = got.iter().map(|n| n.position.device.as_str()).collect();
        assert_eq!(ids, ["NEAR", "MID"]);
        let expected = custody_core::geo::haversine_m(30.2741, 120.1551, 30.2750, 120.1551);
        assert!((got[0].distance_m - expected).abs() < 0.01, "{got:?}");
        // NEAR walks away; FAR comes close.
        assert!(idx.update(&p("NEAR", 2, 31.0, 121.0)));
        assert!(idx.update(&p("FAR", 2, 30.2742, 120.1551)));
        assert!(
            !idx.update(&p("FAR", 1, 10.0, 10.0)),
            "an older fix does not move it"
        );
        let ids: Vec<String> = idx
            .nearest(30.2741, 120.1551, 3, None)
            .into_iter()
            .map(|n| n.position.device.to_string())
            .collect();
        assert_eq!(ids, ["FAR", "MID", "NEAR"]);
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn stale_fixes_are_skipped_and_boxes_filter() {
        let idx = LatestIndex::new(vec![p("OLD", 1, 30.0, 120.0), p("NEW", 100, 30.1, 120.1)]);
        let got = idx.nearest(30.0, 120.0, 5, Some(Timestamp::from_unix_micros(50)));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].position.device.as_str(), "NEW");
        let b = BBox {
            min_lat: 29.9,
            min_lon: 119.9,
            max_lat: 30.05,
            max_lon: 120.05,
        };
        let inside = idx.all(Some(&b), None);
        assert_eq!(inside.len(), 1);
        assert_eq!(inside[0].device.as_str(), "OLD");
    }
}
