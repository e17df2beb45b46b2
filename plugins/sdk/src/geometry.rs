//! Boxes: overlap, non-maximum suppression, and the way back from model-input
//! pixels to source-image pixels.
//!
//! Detectors work in the pixels of the model input (e.g. 640x640, letterboxed);
//! clients want boxes on the photo they sent. `image-prep` records where the
//! photo sits in the input as a [`Placement`]; [`unplace`] inverts it.

use crate::{Bbox, Detection, Frame, Placement, Size, StageError};

/// Intersection over union of two boxes (0 when either has no area).
pub fn iou(a: &Bbox, b: &Bbox) -> f32 {
    let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

fn area(b: &Bbox) -> f32 {
    (b.x2 - b.x1).max(0.0) * (b.y2 - b.y1).max(0.0)
}

/// Sorts detections by score, highest first; equal scores keep their order.
pub fn sort_by_score(dets: &mut [Detection]) {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
}

/// Greedy, class-aware non-maximum suppression.
///
/// Goes through the boxes from the highest score down and keeps a box unless
/// a kept box of the same class overlaps it with IoU above `iou_threshold`.
/// Stops after `max_det` boxes. The result is sorted by score.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32, max_det: usize) -> Vec<Detection> {
    sort_by_score(&mut dets);
    let mut kept: Vec<Detection> = Vec::with_capacity(max_det.min(dets.len()));
    for d in dets {
        if kept.len() >= max_det {
            break;
        }
        // Comparing only with kept boxes is the greedy algorithm: a
        // suppressed box suppresses nothing.
        let clear = kept
            .iter()
            .all(|k| k.class_id != d.class_id || iou(&k.box_, &d.box_) <= iou_threshold);
        if clear {
            kept.push(d);
        }
    }
    kept
}

/// Maps a box from model-input pixels to source pixels
/// (`x_source = (x_input - pad_x) / scale_x`, likewise for y), clamped to
/// the source image: a box may spill into the letterbox padding.
pub fn unplace(b: Bbox, p: &Placement, source: Size) -> Bbox {
    let (w, h) = (source.width as f32, source.height as f32);
    let x = |v: f32| ((v - p.pad_x) / p.scale_x).clamp(0.0, w);
    let y = |v: f32| ((v - p.pad_y) / p.scale_y).clamp(0.0, h);
    Bbox {
        x1: x(b.x1),
        y1: y(b.y1),
        x2: x(b.x2),
        y2: y(b.y2),
    }
}

/// Moves every detection from model-input pixels to source pixels.
pub fn to_source(dets: &mut [Detection], p: &Placement, source: Size) {
    for d in dets {
        d.box_ = unplace(d.box_, p, source);
    }
}

/// The placement and source size a detector needs, which only a stage that
/// prepared the image (e.g. `image-prep`) can have put in the frame.
pub fn require_placement(frame: &Frame) -> Result<(Placement, Size), StageError> {
    match (frame.placement, frame.source) {
        (Some(p), Some(s)) => Ok((p, s)),
        _ => Err(StageError::bad_input(
            "no placement or source size in the frame: put an image-preparing stage \
             (such as image-prep) before this one",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(x1: f32, y1: f32, x2: f32, y2: f32) -> Bbox {
        Bbox { x1, y1, x2, y2 }
    }

    fn det(class_id: u32, score: f32, b: Bbox) -> Detection {
        Detection {
            class_id,
            label: String::new(),
            score,
            box_: b,
            sources: Vec::new(),
        }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = bbox(0.0, 0.0, 10.0, 10.0);
        assert!(close(iou(&a, &a), 1.0));
        // Half of a overlaps b of the same size: 50 / 150.
        assert!(close(iou(&a, &bbox(5.0, 0.0, 15.0, 10.0)), 1.0 / 3.0));
        assert_eq!(iou(&a, &bbox(20.0, 20.0, 30.0, 30.0)), 0.0);
        // Degenerate boxes must not divide by zero.
        assert_eq!(
            iou(&bbox(1.0, 1.0, 1.0, 1.0), &bbox(1.0, 1.0, 1.0, 1.0)),
            0.0
        );
    }

    #[test]
    fn nms_suppresses_overlaps_of_the_same_class_only() {
        let a = bbox(0.0, 0.0, 10.0, 10.0);
        let a_shifted = bbox(1.0, 0.0, 11.0, 10.0); // IoU 0.82 with a
        let far = bbox(50.0, 50.0, 60.0, 60.0);
        let dets = vec![
            det(0, 0.6, a_shifted),
            det(0, 0.9, a),
            det(1, 0.8, a_shifted), // other class: kept despite the overlap
            det(0, 0.7, far),
        ];
        let kept = nms(dets, 0.45, 300);
        let got: Vec<(u32, f32)> = kept.iter().map(|d| (d.class_id, d.score)).collect();
        assert_eq!(got, vec![(0, 0.9), (1, 0.8), (0, 0.7)]);
    }

    #[test]
    fn nms_keeps_overlaps_at_or_below_the_threshold() {
        let dets = vec![
            det(0, 0.9, bbox(0.0, 0.0, 10.0, 10.0)),
            det(0, 0.8, bbox(5.0, 0.0, 15.0, 10.0)), // IoU 1/3
        ];
        assert_eq!(nms(dets.clone(), 0.5, 10).len(), 2);
        assert_eq!(nms(dets, 0.3, 10).len(), 1);
    }

    #[test]
    fn nms_stops_at_max_det() {
        let dets = (0..10)
            .map(|i| {
                det(
                    0,
                    i as f32 / 10.0,
                    bbox(i as f32 * 20.0, 0.0, i as f32 * 20.0 + 10.0, 10.0),
                )
            })
            .collect();
        let kept = nms(dets, 0.45, 3);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.8, 0.7]);
    }

    #[test]
    fn unplace_inverts_a_letterbox_and_clamps() {
        // A 1280x720 photo letterboxed into 640x640: scale 0.5, 140 px bars.
        let p = Placement {
            scale_x: 0.5,
            scale_y: 0.5,
            pad_x: 0.0,
            pad_y: 140.0,
            input: Size {
                width: 640,
                height: 640,
            },
        };
        let source = Size {
            width: 1280,
            height: 720,
        };
        let b = unplace(bbox(100.0, 150.0, 200.0, 300.0), &p, source);
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (200.0, 20.0, 400.0, 320.0));
        // A box reaching into the bars is cut at the photo's edges.
        let b = unplace(bbox(-5.0, 100.0, 700.0, 600.0), &p, source);
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (0.0, 0.0, 1280.0, 720.0));
    }
}
