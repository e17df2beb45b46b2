//! The fusion rule of seed 002 ("Multi_Fusion"): the primary source's boxes
//! are the answer, and another source only adds what the primary missed.
//!
//! Every box of the primary branch is kept as it is. A box of another branch
//! is added when its best IoU with the primary boxes is at most `iou_thr`
//! (the seed: `if Infra_red_iou[m] > 0.75: continue`, else add); otherwise
//! the primary box it overlaps most has confirmed it, and lists its source.
//!
//! Choices made from the seed:
//! - Other boxes are compared with the primary boxes only, never with boxes
//!   added from another branch (the seed computes every infrared IoU before
//!   it appends anything).
//! - The IoU ignores classes by default (`class_aware: false`): the seed
//!   compares boxes whatever their class, its visible list holding persons
//!   only and its infrared detector finding nothing else. With
//!   `class_aware`, a box is compared with primary boxes of its class only.
//! - Boxes are continuous coordinates, so the IoU is the plain one of
//!   [`osprey_plugin_sdk::geometry::iou`], not the seed's `+1` pixel variant
//!   (which counts corners as whole pixels and so overlaps a little more).

use osprey_plugin_sdk::geometry::{iou, sort_by_score};
use osprey_plugin_sdk::Detection;

/// The rule's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// A box overlapping every primary box at most this much is added.
    pub iou_thr: f32,
    /// Compare boxes with primary boxes of the same class only.
    pub class_aware: bool,
}

impl Default for Params {
    /// The seed's threshold, class-blind as the seed is.
    fn default() -> Self {
        Params {
            iou_thr: 0.75,
            class_aware: false,
        }
    }
}

/// One source's detections, already in the primary source's pixels.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub name: &'a str,
    pub detections: &'a [Detection],
}

/// Fuses `inputs` around `inputs[primary]`. Each result lists its sources;
/// the result is sorted by score, highest first.
pub fn fuse(inputs: &[Input<'_>], primary: usize, p: &Params) -> Vec<Detection> {
    let base = inputs[primary];
    let mut out: Vec<Detection> = base
        .detections
        .iter()
        .map(|d| with_sources(d, vec![base.name.to_owned()]))
        .collect();
    let mut added = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        if i == primary {
            continue;
        }
        for d in input.detections {
            match best_overlap(base.detections, d, p.class_aware) {
                Some((k, v)) if v > p.iou_thr => {
                    let sources = &mut out[k].sources;
                    if !sources.iter().any(|s| s == input.name) {
                        sources.push(input.name.to_owned());
                    }
                }
                _ => added.push(with_sources(d, vec![input.name.to_owned()])),
            }
        }
    }
    out.extend(added);
    sort_by_score(&mut out);
    out
}

/// The primary box that `d` overlaps most, and that IoU (the first on ties);
/// `None` when no primary box is comparable.
fn best_overlap(primary: &[Detection], d: &Detection, class_aware: bool) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for (k, q) in primary.iter().enumerate() {
        if class_aware && q.class_id != d.class_id {
            continue;
        }
        let v = iou(&q.box_, &d.box_);
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((k, v));
        }
    }
    best
}

fn with_sources(d: &Detection, sources: Vec<String>) -> Detection {
    Detection {
        sources,
        ..d.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_plugin_sdk::Bbox;

    fn det(class_id: u32, score: f32, [x1, y1, x2, y2]: [f32; 4]) -> Detection {
        Detection {
            class_id,
            label: format!("class{class_id}"),
            score,
            box_: Bbox { x1, y1, x2, y2 },
            sources: Vec::new(),
        }
    }

    /// `(score, sources)` of each result, in order.
    fn summary(dets: &[Detection]) -> Vec<(f32, Vec<&str>)> {
        dets.iter()
            .map(|d| (d.score, d.sources.iter().map(String::as_str).collect()))
            .collect()
    }

    fn two<'a>(visible: &'a [Detection], infrared: &'a [Detection]) -> [Input<'a>; 2] {
        [
            Input {
                name: "visible",
                detections: visible,
            },
            Input {
                name: "infrared",
                detections: infrared,
            },
        ]
    }

    #[test]
    fn an_overlap_of_exactly_iou_thr_is_added() {
        let visible = [det(0, 0.9, [0.0, 0.0, 100.0, 100.0])];
        // Inter 7500, union 10000: IoU 0.75 exactly, so "at most" holds.
        let at = [det(0, 0.5, [0.0, 0.0, 100.0, 75.0])];
        let out = fuse(&two(&visible, &at), 0, &Params::default());
        assert_eq!(
            summary(&out),
            vec![(0.9, vec!["visible"]), (0.5, vec!["infrared"])]
        );
        // IoU 0.76: the visible box already has it.
        let over = [det(0, 0.5, [0.0, 0.0, 100.0, 76.0])];
        let out = fuse(&two(&visible, &over), 0, &Params::default());
        assert_eq!(summary(&out), vec![(0.9, vec!["visible", "infrared"])]);
        let corners = |b: Bbox| [b.x1, b.y1, b.x2, b.y2];
        assert_eq!(corners(out[0].box_), [0.0, 0.0, 100.0, 100.0], "kept as is");
    }

    #[test]
    fn disjoint_boxes_are_added_and_all_primary_boxes_kept() {
        let visible = [
            det(0, 0.4, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.8, [20.0, 0.0, 30.0, 10.0]),
        ];
        let infrared = [
            det(0, 0.9, [50.0, 50.0, 60.0, 60.0]),
            det(0, 0.6, [21.0, 0.0, 31.0, 10.0]), // IoU 0.82 with the 0.8 box
        ];
        let out = fuse(&two(&visible, &infrared), 0, &Params::default());
        assert_eq!(
            summary(&out),
            vec![
                (0.9, vec!["infrared"]),
                (0.8, vec!["visible", "infrared"]),
                (0.4, vec!["visible"]),
            ]
        );
    }

    #[test]
    fn with_no_primary_boxes_everything_is_added() {
        let infrared = [det(0, 0.6, [0.0, 0.0, 10.0, 10.0])];
        let out = fuse(&two(&[], &infrared), 0, &Params::default());
        assert_eq!(summary(&out), vec![(0.6, vec!["infrared"])]);
    }

    #[test]
    fn classes_count_only_when_class_aware() {
        let visible = [det(0, 0.9, [0.0, 0.0, 10.0, 10.0])];
        let infrared = [det(1, 0.7, [0.0, 0.0, 10.0, 10.0])];
        let blind = fuse(&two(&visible, &infrared), 0, &Params::default());
        assert_eq!(blind.len(), 1, "the seed ignores classes");
        let aware = Params {
            class_aware: true,
            ..Params::default()
        };
        let out = fuse(&two(&visible, &infrared), 0, &aware);
        assert_eq!(
            summary(&out),
            vec![(0.9, vec!["visible"]), (0.7, vec!["infrared"])]
        );
        assert_eq!(out[1].class_id, 1);
    }

    #[test]
    fn the_primary_may_be_any_branch_and_added_boxes_do_not_suppress() {
        let a = [det(0, 0.5, [0.0, 0.0, 10.0, 10.0])];
        let b = [det(0, 0.6, [100.0, 0.0, 110.0, 10.0])];
        // The third branch repeats a's box: compared with the primary (b)
        // only, it is added too, as the seed would.
        let c = [det(0, 0.7, [0.0, 0.0, 10.0, 10.0])];
        let inputs = [
            Input {
                name: "a",
                detections: &a,
            },
            Input {
                name: "b",
                detections: &b,
            },
            Input {
                name: "c",
                detections: &c,
            },
        ];
        let out = fuse(&inputs, 1, &Params::default());
        assert_eq!(
            summary(&out),
            vec![(0.7, vec!["c"]), (0.6, vec!["b"]), (0.5, vec!["a"])]
        );
    }
}
