//! `yolo`: a stage that runs a YOLOv5-style detector and turns its raw head
//! into detections on the source image.
//!
//! The model's first output is FP32 `[1, N, 5 + C]`: per row `cx, cy, w, h`
//! (normalised to the model input), objectness, then `C` class scores. A row
//! scores `objectness x best class score` (class-aware, as YOLOv5 does by
//! default); rows under `conf` are dropped, the rest go through class-aware
//! NMS and back to source pixels.
//!
//! Settings: `{"model": "yolov5s", "conf": 0.25, "iou": 0.45, "max_det": 300,
//! "max_candidates": null}`. `max_candidates` caps the boxes entering NMS
//! (highest scores kept), bounding its cost on crowded images.

use osprey_plugin_sdk::geometry::{nms, require_placement, sort_by_score, to_source};
use osprey_plugin_sdk::labels::label_detections;
use osprey_plugin_sdk::nn::{infer, take_inputs, F32s, Output};
use osprey_plugin_sdk::settings::{check_range, parse, whole, whole_opt};
use osprey_plugin_sdk::{export_stage, Bbox, Detection, Frame, Size, Stage, StageError};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "Settings::default_model")]
    model: String,
    #[serde(default = "Settings::default_conf")]
    conf: f32,
    #[serde(default = "Settings::default_iou")]
    iou: f32,
    #[serde(default = "Settings::default_max_det", deserialize_with = "whole")]
    max_det: usize,
    #[serde(default, deserialize_with = "whole_opt")]
    max_candidates: Option<usize>,
}

impl Settings {
    fn default_model() -> String {
        "yolov5s".into()
    }
    fn default_conf() -> f32 {
        0.25
    }
    fn default_iou() -> f32 {
        0.45
    }
    fn default_max_det() -> usize {
        300
    }

    pub fn parse(json: &str) -> Result<Self, StageError> {
        let s: Settings = parse(json)?;
        check_range("conf", s.conf, 0.0, 1.0)?;
        check_range("iou", s.iou, 0.0, 1.0)?;
        check_range("max_det", s.max_det, 1, 100_000)?;
        if let Some(m) = s.max_candidates {
            check_range("max_candidates", m, 1, usize::MAX)?;
        }
        Ok(s)
    }
}

struct Yolo;

impl Stage for Yolo {
    fn check(settings: &str) -> Result<(), StageError> {
        Settings::parse(settings).map(drop)
    }

    fn run(mut frame: Frame, settings: String) -> Result<Frame, StageError> {
        let s = Settings::parse(&settings)?;
        let (placement, source) = require_placement(&frame)?;
        let outputs = infer(&s.model, take_inputs(&mut frame)?)?;
        let head = Output::read(&s.model, &outputs, 0)?;
        let mut dets = detect(&head, placement.input, &s)?;
        to_source(&mut dets, &placement, source);
        label_detections(&s.model, &mut dets);
        Ok(Frame {
            model: Some(s.model),
            detections: Some(dets),
            ..frame
        })
    }
}

export_stage!(Yolo);

/// Decodes the head and suppresses overlaps: detections in input pixels,
/// sorted by score, without labels.
pub fn detect(head: &Output, input: Size, s: &Settings) -> Result<Vec<Detection>, StageError> {
    let mut dets = decode(head, input, s.conf)?;
    if let Some(cap) = s.max_candidates {
        if dets.len() > cap {
            sort_by_score(&mut dets);
            dets.truncate(cap);
        }
    }
    Ok(nms(dets, s.iou, s.max_det))
}

/// The rows of the head scoring at least `conf`, as boxes in input pixels.
pub fn decode(head: &Output, input: Size, conf: f32) -> Result<Vec<Detection>, StageError> {
    let (rows, width) = match head.dims[..] {
        [1, n, w] if w > 5 => (n as usize, w as usize),
        _ => return Err(head.shape_error("[1, N, 5 + classes]")),
    };
    let data = head.f32s()?;
    let (in_w, in_h) = (input.width as f32, input.height as f32);
    let mut dets = Vec::new();
    for r in 0..rows {
        let row = data.slice(r * width, width);
        // The class scores are at most 1, so a row whose objectness is
        // already under `conf` cannot reach it: most rows end here, before
        // their class scores are read.
        let obj = row.get(4);
        if obj < conf {
            continue;
        }
        let (class_id, class_score) = best_class(row.slice(5, width - 5));
        let score = obj * class_score;
        if score < conf {
            continue;
        }
        let (cx, cy) = (row.get(0) * in_w, row.get(1) * in_h);
        let (hw, hh) = (row.get(2) * in_w / 2.0, row.get(3) * in_h / 2.0);
        let box_ = Bbox {
            x1: cx - hw,
            y1: cy - hh,
            x2: cx + hw,
            y2: cy + hh,
        };
        dets.push(Detection {
            class_id,
            label: String::new(),
            score,
            box_,
            sources: Vec::new(),
        });
    }
    Ok(dets)
}

/// The index and value of the highest class score (the first on ties).
fn best_class(scores: F32s<'_>) -> (u32, f32) {
    let mut best = (0, f32::MIN);
    for (i, v) in scores.iter().enumerate() {
        if v > best.1 {
            best = (i as u32, v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_plugin_sdk::ErrorKind;

    const INPUT: Size = Size {
        width: 640,
        height: 640,
    };

    fn settings(json: &str) -> Settings {
        Settings::parse(json).unwrap()
    }

    /// A head of rows `[cx, cy, w, h, obj, class scores...]` (normalised).
    fn head(rows: &[[f32; 8]]) -> Output {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Output::from_f32(
            "model 'yolo' output 0 (output0)",
            &[1, rows.len() as u32, 8],
            &flat,
        )
        .unwrap()
    }

    fn summary(dets: &[Detection]) -> Vec<(u32, f32, [f32; 4])> {
        let r = |v: f32| (v * 100.0).round() / 100.0;
        dets.iter()
            .map(|d| {
                (
                    d.class_id,
                    r(d.score),
                    [r(d.box_.x1), r(d.box_.y1), r(d.box_.x2), r(d.box_.y2)],
                )
            })
            .collect()
    }

    #[test]
    fn decodes_scores_boxes_and_suppresses_overlaps() {
        let h = head(&[
            // Low objectness: dropped before its classes are read.
            [0.5, 0.5, 0.1, 0.1, 0.1, 1.0, 0.0, 0.0],
            // Class 1 at (320, 320), 64x128 px; score 0.9 * 0.8.
            [0.5, 0.5, 0.1, 0.2, 0.9, 0.1, 0.8, 0.1],
            // Nearly the same box and class, lower score: suppressed.
            [0.505, 0.5, 0.1, 0.2, 0.8, 0.1, 0.7, 0.1],
            // Same place, class 2: kept (class-aware NMS).
            [0.5, 0.5, 0.1, 0.2, 0.6, 0.0, 0.1, 0.9],
            // High objectness, weak classes: 0.9 * 0.2 < conf.
            [0.2, 0.2, 0.1, 0.1, 0.9, 0.2, 0.1, 0.1],
        ]);
        let dets = detect(&h, INPUT, &settings("{}")).unwrap();
        assert_eq!(
            summary(&dets),
            vec![
                (1, 0.72, [288.0, 256.0, 352.0, 384.0]),
                (2, 0.54, [288.0, 256.0, 352.0, 384.0]),
            ]
        );
    }

    #[test]
    fn max_det_and_max_candidates_cap_the_result() {
        let rows: Vec<[f32; 8]> = (0..6)
            .map(|i| {
                [
                    0.1 + 0.15 * i as f32,
                    0.5,
                    0.05,
                    0.05,
                    0.4 + 0.1 * i as f32,
                    1.0,
                    0.0,
                    0.0,
                ]
            })
            .collect();
        let h = head(&rows);
        let dets = detect(&h, INPUT, &settings(r#"{"max_det": 2}"#)).unwrap();
        assert_eq!(
            dets.iter().map(|d| d.score).collect::<Vec<_>>(),
            vec![0.9, 0.8]
        );
        let dets = detect(&h, INPUT, &settings(r#"{"max_candidates": 3}"#)).unwrap();
        assert_eq!(dets.len(), 3);
        assert!((dets[2].score - 0.7).abs() < 1e-6);
    }

    #[test]
    fn a_head_of_the_wrong_shape_is_a_model_error() {
        let h = Output::from_f32("model 'yolo' output 0 (x)", &[1, 2, 4], &[0.0; 8]).unwrap();
        let e = decode(&h, INPUT, 0.25).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ModelFailed);
        assert_eq!(
            e.message,
            "model 'yolo' output 0 (x): shape [1, 2, 4] seen, expected [1, N, 5 + classes]"
        );
    }

    #[test]
    fn settings_are_checked() {
        let e = Settings::parse(r#"{"conf": 2}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadSettings);
        assert!(e.message.contains("`conf`"), "{}", e.message);
        assert!(Settings::parse(r#"{"max_det": 0}"#).is_err());
        assert!(Settings::parse(r#"{"max_candidates": 0}"#).is_err());
        // Whole numbers written as floats are accepted.
        assert_eq!(settings(r#"{"max_det": 50.0}"#).max_det, 50);
        let s = settings(r#"{"model": "yolov5n"}"#);
        assert_eq!(
            (s.model.as_str(), s.conf, s.iou, s.max_det),
            ("yolov5n", 0.25, 0.45, 300)
        );
    }
}
