//! Weighted Boxes Fusion (Solovyev, Wang, Gabruseva, 2019), computed as
//! `ensemble_boxes.weighted_boxes_fusion` of the pip package
//! `ensemble-boxes` 1.0.9 computes it, so that a route can be checked against
//! the reference implementation (`tests/ensemble_boxes.rs` does, to 1e-5).
//!
//! Boxes are in coordinates normalised to 0..1, as there. In short: boxes
//! under `skip_box_thr` are dropped, the rest are clamped to 0..1 and their
//! scores multiplied by their model's weight; per label, from the highest
//! weighted score down, a box joins the cluster whose fused box overlaps it
//! most if that IoU is above `iou_thr`, or starts a new cluster. A cluster's
//! box is the score-weighted mean of its members; its score is their mean
//! (or max) rescaled by the models' weights.
//!
//! What is copied on purpose, because it changes results:
//! - a fused box is held in `float32` (the reference builds it in a
//!   `np.float32` array), including while later boxes are matched against it;
//!   a cluster of one box keeps its `float64` values;
//! - a box matches only when its IoU is strictly above `iou_thr`, and the
//!   first of equally good clusters wins (`np.argmax`);
//! - swapped corners are put in order, coordinates clamped to 0..1, and boxes
//!   of zero area dropped after clamping.
//!
//! One thing is defined here where the reference leaves it to numpy: boxes of
//! one label with equal weighted scores are taken in input order (model, then
//! box). The reference sorts them with numpy's default, unstable `argsort`,
//! whose order for ties depends on the CPU (AVX-512 or not).

use serde::Deserialize;

/// How a cluster's score is made from its members' weighted scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfType {
    /// Mean of the weighted scores, times `min(models, members) / sum(weights)`.
    Avg,
    /// Highest weighted score, over the highest weight.
    Max,
    /// Mean per box, then rescaled by the weights of the models present.
    BoxAndModelAvg,
    /// Mean that counts the weights of models absent from the cluster.
    AbsentModelAwareAvg,
}

impl ConfType {
    /// The name used in settings and by ensemble-boxes.
    pub fn name(self) -> &'static str {
        match self {
            ConfType::Avg => "avg",
            ConfType::Max => "max",
            ConfType::BoxAndModelAvg => "box_and_model_avg",
            ConfType::AbsentModelAwareAvg => "absent_model_aware_avg",
        }
    }
}

/// The arguments of `weighted_boxes_fusion` other than the boxes and weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    pub iou_thr: f64,
    pub skip_box_thr: f64,
    pub conf_type: ConfType,
    /// With `avg`: let a score exceed 1 when a cluster holds more boxes than
    /// there are models.
    pub allows_overflow: bool,
}

impl Default for Params {
    /// The reference's defaults.
    fn default() -> Self {
        Params {
            iou_thr: 0.55,
            skip_box_thr: 0.0,
            conf_type: ConfType::Avg,
            allows_overflow: false,
        }
    }
}

/// One box of one model: `[x1, y1, x2, y2]` normalised to 0..1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InBox {
    pub label: u32,
    pub score: f64,
    pub coords: [f64; 4],
}

/// Where a fused box's member came from: `models[model][index]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub model: usize,
    pub index: usize,
}

/// A fused box, with the boxes it was made from (highest weighted score
/// first).
#[derive(Clone, Debug, PartialEq)]
pub struct Fused {
    pub label: u32,
    pub score: f64,
    pub coords: [f64; 4],
    pub members: Vec<Member>,
}

/// A box after the prefilter: the reference's row
/// `[label, score * weight, weight, model index, x1, y1, x2, y2]`.
#[derive(Clone, Copy, Debug)]
struct Entry {
    score: f64,
    weight: f64,
    member: Member,
    coords: [f64; 4],
}

/// What matching and rescaling read of a cluster: its member itself while
/// it has one, the `float32` weighted box once it has more.
#[derive(Clone, Copy, Debug)]
struct Summary {
    score: f64,
    weight: f64,
    coords: [f64; 4],
}

struct Cluster {
    members: Vec<Entry>,
    summary: Summary,
}

/// Fuses the boxes of several models; `weights[m]` is model `m`'s weight.
/// The result is sorted by score, highest first.
///
/// # Panics
/// When `weights` and `models` differ in length (the reference then warns
/// and uses weights of 1; callers here always pass one weight per model).
pub fn fuse(models: &[Vec<InBox>], weights: &[f64], p: &Params) -> Vec<Fused> {
    assert_eq!(models.len(), weights.len(), "one weight per model");
    let mut out = Vec::new();
    for (label, entries) in prefilter(models, weights, p.skip_box_thr) {
        let clusters = clusterize(entries, p);
        for c in clusters {
            let score = rescale(&c, weights, p);
            out.push(Fused {
                label,
                score,
                coords: c.summary.coords,
                members: c.members.iter().map(|e| e.member).collect(),
            });
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

/// Drops, fixes and weighs boxes as the reference's `prefilter_boxes` does;
/// groups them by label (in order of first appearance), each group sorted by
/// weighted score, highest first (ties in input order).
fn prefilter(models: &[Vec<InBox>], weights: &[f64], thr: f64) -> Vec<(u32, Vec<Entry>)> {
    let mut groups: Vec<(u32, Vec<Entry>)> = Vec::new();
    for (model, (boxes, &weight)) in models.iter().zip(weights).enumerate() {
        for (index, b) in boxes.iter().enumerate() {
            if b.score < thr {
                continue;
            }
            let [mut x1, mut y1, mut x2, mut y2] = b.coords;
            if x2 < x1 {
                std::mem::swap(&mut x1, &mut x2);
            }
            if y2 < y1 {
                std::mem::swap(&mut y1, &mut y2);
            }
            let coords = [x1, y1, x2, y2].map(|v| v.clamp(0.0, 1.0));
            if (coords[2] - coords[0]) * (coords[3] - coords[1]) == 0.0 {
                continue;
            }
            let entry = Entry {
                score: b.score * weight,
                weight,
                member: Member { model, index },
                coords,
            };
            match groups.iter_mut().find(|(l, _)| *l == b.label) {
                Some((_, g)) => g.push(entry),
                None => groups.push((b.label, vec![entry])),
            }
        }
    }
    for (_, g) in &mut groups {
        // Stable: equal scores stay in input order (see the module header).
        g.sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    groups
}

/// The reference's clustering loop for the boxes of one label.
fn clusterize(entries: Vec<Entry>, p: &Params) -> Vec<Cluster> {
    let mut clusters: Vec<Cluster> = Vec::new();
    for e in entries {
        match best_match(&clusters, &e.coords, p.iou_thr) {
            Some(i) => {
                let c = &mut clusters[i];
                c.members.push(e);
                c.summary = weighted_box(&c.members, p.conf_type);
            }
            None => clusters.push(Cluster {
                members: vec![e],
                summary: Summary {
                    score: e.score,
                    weight: e.weight,
                    coords: e.coords,
                },
            }),
        }
    }
    clusters
}

/// The cluster whose box overlaps `coords` most, if that IoU is above
/// `iou_thr` (`find_matching_box_fast`): the first one on ties.
fn best_match(clusters: &[Cluster], coords: &[f64; 4], iou_thr: f64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in clusters.iter().enumerate() {
        let v = iou(&c.summary.coords, coords);
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.filter(|&(_, v)| v > iou_thr).map(|(i, _)| i)
}

/// IoU with the reference's operations in the reference's order, so that a
/// box exactly at `iou_thr` is decided the same way.
pub fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let xa = a[0].max(b[0]);
    let ya = a[1].max(b[1]);
    let xb = a[2].min(b[2]);
    let yb = a[3].min(b[3]);
    let inter = (xb - xa).max(0.0) * (yb - ya).max(0.0);
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    inter / (area_a + area_b - inter)
}

/// `get_weighted_box`: sums go into a `float32` box, one rounding per step,
/// as numpy does for `box[4:] += score * coords` on a `float32` array.
fn weighted_box(members: &[Entry], conf_type: ConfType) -> Summary {
    let mut acc = [0f32; 4];
    let (mut conf, mut max, mut weight) = (0f64, f64::NEG_INFINITY, 0f64);
    for m in members {
        for (a, c) in acc.iter_mut().zip(m.coords) {
            *a = (f64::from(*a) + m.score * c) as f32;
        }
        conf += m.score;
        max = max.max(m.score);
        weight += m.weight;
    }
    let score = match conf_type {
        ConfType::Max => max,
        _ => conf / members.len() as f64,
    };
    Summary {
        score: f64::from(score as f32),
        weight: f64::from(weight as f32),
        coords: acc.map(|a| f64::from((f64::from(a) / conf) as f32)),
    }
}

/// The cluster's final score: the reference's "rescale confidence" step.
fn rescale(c: &Cluster, weights: &[f64], p: &Params) -> f64 {
    let s = c.summary.score;
    let n = c.members.len() as f64;
    // numpy sums these small arrays left to right, as `sum` does here.
    let total: f64 = weights.iter().sum();
    match p.conf_type {
        ConfType::BoxAndModelAvg => {
            let s = s * n / c.summary.weight;
            let present: f64 = models_present(c, weights.len())
                .iter()
                .zip(weights)
                .filter(|(&here, _)| here)
                .map(|(_, w)| w)
                .sum();
            s * present / total
        }
        ConfType::AbsentModelAwareAvg => {
            let absent: f64 = models_present(c, weights.len())
                .iter()
                .zip(weights)
                .filter(|(&here, _)| !here)
                .map(|(_, w)| w)
                .sum();
            s * n / (c.summary.weight + absent)
        }
        ConfType::Max => s / weights.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ConfType::Avg if p.allows_overflow => s * n / total,
        ConfType::Avg => s * (weights.len() as f64).min(n) / total,
    }
}

/// Which models have a box in the cluster, by model index.
fn models_present(c: &Cluster, models: usize) -> Vec<bool> {
    let mut here = vec![false; models];
    for e in &c.members {
        here[e.member.model] = true;
    }
    here
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(label: u32, score: f64, coords: [f64; 4]) -> InBox {
        InBox {
            label,
            score,
            coords,
        }
    }

    fn params(iou_thr: f64, conf_type: ConfType) -> Params {
        Params {
            iou_thr,
            conf_type,
            ..Params::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    fn close4(a: [f64; 4], b: [f64; 4]) -> bool {
        a.iter().zip(b).all(|(x, y)| close(*x, y))
    }

    /// Two models, one box each, overlapping with IoU 0.6 (see below).
    fn pair() -> Vec<Vec<InBox>> {
        vec![
            vec![b(0, 0.9, [0.1, 0.1, 0.5, 0.5])],
            vec![b(0, 0.6, [0.1, 0.1, 0.5, 0.34])],
        ]
    }

    #[test]
    fn two_overlapping_boxes_are_averaged_by_score() {
        // IoU = (0.4 * 0.24) / (0.16) = 0.6 > 0.55: one cluster.
        let out = fuse(&pair(), &[1.0, 1.0], &Params::default());
        assert_eq!(out.len(), 1);
        let f = &out[0];
        // y2 = (0.9 * 0.5 + 0.6 * 0.34) / 1.5 = 0.436; the rest agree.
        assert!(close4(f.coords, [0.1, 0.1, 0.5, 0.436]), "{:?}", f.coords);
        // avg: (0.9 + 0.6) / 2, times min(2 models, 2 boxes) / 2.
        assert!(close(f.score, 0.75), "{}", f.score);
        assert_eq!(
            f.members,
            vec![Member { model: 0, index: 0 }, Member { model: 1, index: 0 }]
        );
    }

    #[test]
    fn a_box_exactly_at_iou_thr_starts_its_own_cluster() {
        // Exactly representable: inter 0.125, union 0.25, IoU 0.5.
        let models = vec![
            vec![b(0, 0.9, [0.0, 0.0, 0.5, 0.5])],
            vec![b(0, 0.8, [0.0, 0.0, 0.5, 0.25])],
        ];
        assert_eq!(
            fuse(&models, &[1.0, 1.0], &params(0.5, ConfType::Avg)).len(),
            2
        );
        assert_eq!(
            fuse(&models, &[1.0, 1.0], &params(0.49, ConfType::Avg)).len(),
            1
        );
    }

    #[test]
    fn max_takes_the_best_score_and_avg_the_mean() {
        let max = fuse(&pair(), &[1.0, 1.0], &params(0.55, ConfType::Max));
        assert!(close(max[0].score, 0.9), "{}", max[0].score);
        let avg = fuse(&pair(), &[1.0, 1.0], &params(0.55, ConfType::Avg));
        assert!(close(avg[0].score, 0.75));
        // The box is the same either way.
        assert!(close4(max[0].coords, avg[0].coords));
    }

    #[test]
    fn a_lone_box_is_scaled_down_by_the_models_that_missed_it() {
        let models = vec![vec![b(0, 0.8, [0.1, 0.1, 0.2, 0.2])], vec![]];
        let out = fuse(&models, &[1.0, 1.0], &Params::default());
        // avg: 0.8 * min(2, 1) / 2.
        assert!(close(out[0].score, 0.4));
        let out = fuse(&models, &[1.0, 1.0], &params(0.55, ConfType::Max));
        assert!(close(out[0].score, 0.8));
    }

    #[test]
    fn skip_box_thr_drops_weak_boxes_before_fusion() {
        let p = Params {
            skip_box_thr: 0.7,
            ..Params::default()
        };
        let out = fuse(&pair(), &[1.0, 1.0], &p);
        assert_eq!(out.len(), 1);
        // Only the 0.9 box is left: its coordinates, 0.9 * 1 / 2.
        assert!(close4(out[0].coords, [0.1, 0.1, 0.5, 0.5]));
        assert!(close(out[0].score, 0.45));
        assert_eq!(out[0].members, vec![Member { model: 0, index: 0 }]);
        // A box exactly at the threshold stays (the reference drops `< thr`).
        let p = Params {
            skip_box_thr: 0.6,
            ..Params::default()
        };
        assert_eq!(fuse(&pair(), &[1.0, 1.0], &p)[0].members.len(), 2);
    }

    #[test]
    fn weights_scale_scores_and_pull_the_box() {
        // Model 1 weighs 3: weighted scores 0.9 and 1.8, so model 1's box
        // now leads the cluster and counts twice as much in the mean.
        let out = fuse(&pair(), &[1.0, 3.0], &Params::default());
        let f = &out[0];
        // y2 = (1.8 * 0.34 + 0.9 * 0.5) / 2.7 = 0.39333...
        assert!(
            close(f.coords[3], (1.8 * 0.34 + 0.9 * 0.5) / 2.7),
            "{:?}",
            f.coords
        );
        // avg: (0.9 + 1.8) / 2 * 2 / (1 + 3) = 0.675.
        assert!(close(f.score, 0.675), "{}", f.score);
        assert_eq!(f.members[0], Member { model: 1, index: 0 });
        // max: 1.8 / 3.
        let max = fuse(&pair(), &[1.0, 3.0], &params(0.55, ConfType::Max));
        assert!(close(max[0].score, 0.6));
    }

    #[test]
    fn boxes_of_different_labels_are_never_fused() {
        let models = vec![
            vec![b(0, 0.9, [0.1, 0.1, 0.5, 0.5])],
            vec![b(1, 0.8, [0.1, 0.1, 0.5, 0.5])],
        ];
        let out = fuse(&models, &[1.0, 1.0], &Params::default());
        let got: Vec<(u32, f64)> = out.iter().map(|f| (f.label, f.score)).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 0);
        assert!(close(got[0].1, 0.45) && close(got[1].1, 0.4));
    }

    #[test]
    fn a_box_joins_the_cluster_it_overlaps_most() {
        let models = vec![
            vec![
                b(0, 0.9, [0.0, 0.0, 0.4, 0.4]),
                b(0, 0.8, [0.5, 0.0, 0.9, 0.4]),
            ],
            // Overlaps both clusters a little; the second much more.
            vec![b(0, 0.7, [0.3, 0.0, 0.8, 0.4])],
        ];
        let out = fuse(&models, &[1.0, 1.0], &params(0.3, ConfType::Avg));
        assert_eq!(out.len(), 2);
        let second = out.iter().find(|f| f.members.len() == 2).unwrap();
        assert_eq!(second.members[0], Member { model: 0, index: 1 });
    }

    #[test]
    fn corners_are_ordered_clamped_and_empty_boxes_dropped() {
        let models = vec![vec![
            b(0, 0.9, [0.5, 0.6, 0.1, 0.2]),
            b(0, 0.8, [-0.2, 0.7, 0.3, 1.4]),
            b(0, 0.7, [1.2, 0.1, 1.5, 0.3]), // all right of the image
        ]];
        let out = fuse(&models, &[1.0], &Params::default());
        let boxes: Vec<[f64; 4]> = out.iter().map(|f| f.coords).collect();
        assert_eq!(boxes, vec![[0.1, 0.2, 0.5, 0.6], [0.0, 0.7, 0.3, 1.0]]);
    }

    #[test]
    fn conf_types_that_count_models_and_overflow() {
        // Model 0 sees the object twice, model 1 not at all.
        let twice = vec![
            vec![
                b(0, 0.8, [0.1, 0.1, 0.5, 0.5]),
                b(0, 0.6, [0.1, 0.1, 0.5, 0.5]),
            ],
            vec![],
        ];
        let w = [1.0, 1.0];
        let score = |p: Params| fuse(&twice, &w, &p)[0].score;
        // avg: mean 0.7 * min(2 models, 2 boxes) / total weight 2.
        assert!(close(score(params(0.55, ConfType::Avg)), 0.7));
        // box_and_model_avg: 0.7 * 2 boxes / their weights 2, then
        // * weight of the models present 1 / total 2.
        let bm = score(params(0.55, ConfType::BoxAndModelAvg));
        assert!(close(bm, 0.35), "{bm}");
        // absent_model_aware_avg: 0.7 * 2 / (their weights 2 + absent 1).
        let am = score(params(0.55, ConfType::AbsentModelAwareAvg));
        assert!(close(am, 1.4 / 3.0), "{am}");
        // With one model, two boxes exceed it: capped unless overflow.
        let one = &twice[..1];
        assert!(close(fuse(one, &[1.0], &Params::default())[0].score, 0.7));
        let overflow = Params {
            allows_overflow: true,
            ..Params::default()
        };
        assert!(close(fuse(one, &[1.0], &overflow)[0].score, 1.4));
    }
}
