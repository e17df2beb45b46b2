//! `ssd`: a stage that reads the post-processed outputs of an SSD-style
//! detector (e.g. TFLite's `TFLite_Detection_PostProcess`), whose NMS is done
//! inside the model.
//!
//! Outputs, picked by index in the model's output list (`outputs` setting):
//! boxes FP32 `[1, K, 4]` = ymin, xmin, ymax, xmax normalised to the model
//! input; classes FP32 `[1, K]` (an index into the model's labels, as is);
//! scores FP32 `[1, K]`; count FP32 `[1]`, the number of valid rows.
//!
//! Settings: `{"model": "ssd_mobilenet_v2", "conf": 0.5, "max_det": 100,
//! "outputs": {"boxes": 0, "classes": 1, "scores": 2, "count": 3}}`.

use osprey_plugin_sdk::geometry::{require_placement, sort_by_score, to_source};
use osprey_plugin_sdk::labels::label_detections;
use osprey_plugin_sdk::nn::{infer, take_inputs, Output};
use osprey_plugin_sdk::settings::{check_range, parse, whole};
use osprey_plugin_sdk::{export_stage, Bbox, Detection, Frame, Size, Stage, StageError, Tensor};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "Settings::default_model")]
    pub model: String,
    #[serde(default = "Settings::default_conf")]
    pub conf: f32,
    #[serde(default = "Settings::default_max_det", deserialize_with = "whole")]
    pub max_det: usize,
    #[serde(default)]
    outputs: OutputIndexes,
}

impl Settings {
    fn default_model() -> String {
        "ssd_mobilenet_v2".into()
    }
    fn default_conf() -> f32 {
        0.5
    }
    fn default_max_det() -> usize {
        100
    }

    pub fn parse(json: &str) -> Result<Self, StageError> {
        let s: Settings = parse(json)?;
        check_range("conf", s.conf, 0.0, 1.0)?;
        check_range("max_det", s.max_det, 1, 100_000)?;
        Ok(s)
    }
}

/// Where each of the four results sits in the model's output list: the
/// order depends on how the model was exported, so it is configurable.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OutputIndexes {
    #[serde(deserialize_with = "whole")]
    boxes: usize,
    #[serde(deserialize_with = "whole")]
    classes: usize,
    #[serde(deserialize_with = "whole")]
    scores: usize,
    #[serde(deserialize_with = "whole")]
    count: usize,
}

impl Default for OutputIndexes {
    fn default() -> Self {
        OutputIndexes {
            boxes: 0,
            classes: 1,
            scores: 2,
            count: 3,
        }
    }
}

/// The four outputs, copied into the guest.
pub struct Heads {
    pub boxes: Output,
    pub classes: Output,
    pub scores: Output,
    pub count: Output,
}

impl Heads {
    fn read(
        model: &str,
        outputs: &[(String, Tensor)],
        at: &OutputIndexes,
    ) -> Result<Self, StageError> {
        let read = |field: &str, index: usize| {
            if index >= outputs.len() {
                return Err(StageError::bad_settings(format!(
                    "settings: `outputs.{field}` = {index}, but model '{model}' gave {} outputs",
                    outputs.len()
                )));
            }
            Output::read(model, outputs, index)
        };
        Ok(Heads {
            boxes: read("boxes", at.boxes)?,
            classes: read("classes", at.classes)?,
            scores: read("scores", at.scores)?,
            count: read("count", at.count)?,
        })
    }
}

struct Ssd;

impl Stage for Ssd {
    fn check(settings: &str) -> Result<(), StageError> {
        Settings::parse(settings).map(drop)
    }

    fn run(mut frame: Frame, settings: String) -> Result<Frame, StageError> {
        let s = Settings::parse(&settings)?;
        let (placement, source) = require_placement(&frame)?;
        let outputs = infer(&s.model, take_inputs(&mut frame)?)?;
        let heads = Heads::read(&s.model, &outputs, &s.outputs)?;
        let mut dets = decode(&heads, placement.input, s.conf, s.max_det)?;
        to_source(&mut dets, &placement, source);
        label_detections(&s.model, &mut dets);
        Ok(Frame {
            model: Some(s.model),
            detections: Some(dets),
            ..frame
        })
    }
}

export_stage!(Ssd);

/// The valid rows scoring at least `conf`, as boxes in input pixels, sorted
/// by score and cut at `max_det`.
pub fn decode(h: &Heads, input: Size, conf: f32, max_det: usize) -> Result<Vec<Detection>, StageError> {
    let k = match h.boxes.dims[..] {
        [1, k, 4] => k as usize,
        _ => return Err(h.boxes.shape_error("[1, K, 4]")),
    };
    let per_row = format!("[1, {k}]");
    for out in [&h.classes, &h.scores] {
        if out.dims[..] != [1, k as u32] {
            return Err(out.shape_error(&per_row));
        }
    }
    let count = h.count.f32s()?;
    if count.len() != 1 {
        return Err(h.count.shape_error("[1]"));
    }
    // The count is a float; a bad one must not index past the rows.
    let valid = (count.get(0).max(0.0) as usize).min(k);
    let (boxes, classes, scores) = (h.boxes.f32s()?, h.classes.f32s()?, h.scores.f32s()?);
    let mut dets = Vec::new();
    for i in 0..valid {
        let score = scores.get(i);
        if score < conf {
            continue;
        }
        let b = boxes.slice(i * 4, 4);
        dets.push(Detection {
            class_id: classes.get(i).round().max(0.0) as u32,
            label: String::new(),
            score,
            box_: to_input_pixels([b.get(0), b.get(1), b.get(2), b.get(3)], input),
            sources: Vec::new(),
        });
    }
    sort_by_score(&mut dets);
    dets.truncate(max_det);
    Ok(dets)
}

/// A normalised `[ymin, xmin, ymax, xmax]` box in pixels of the model input.
fn to_input_pixels([ymin, xmin, ymax, xmax]: [f32; 4], input: Size) -> Bbox {
    let (w, h) = (input.width as f32, input.height as f32);
    Bbox {
        x1: xmin * w,
        y1: ymin * h,
        x2: xmax * w,
        y2: ymax * h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_plugin_sdk::geometry::unplace;
    use osprey_plugin_sdk::{ErrorKind, Placement};

    const INPUT: Size = Size {
        width: 300,
        height: 300,
    };

    fn heads(boxes: &[[f32; 4]], classes: &[f32], scores: &[f32], count: f32) -> Heads {
        let k = boxes.len() as u32;
        let flat: Vec<f32> = boxes.iter().flatten().copied().collect();
        Heads {
            boxes: Output::from_f32("boxes", &[1, k, 4], &flat).unwrap(),
            classes: Output::from_f32("classes", &[1, k], classes).unwrap(),
            scores: Output::from_f32("scores", &[1, k], scores).unwrap(),
            count: Output::from_f32("count", &[1], &[count]).unwrap(),
        }
    }

    #[test]
    fn boxes_map_from_normalised_yx_to_input_then_source_pixels() {
        let b = to_input_pixels([0.1, 0.2, 0.5, 0.6], INPUT);
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (60.0, 30.0, 180.0, 150.0));
        // A 600x450 photo stretched onto 300x300.
        let p = Placement {
            scale_x: 0.5,
            scale_y: 300.0 / 450.0,
            pad_x: 0.0,
            pad_y: 0.0,
            input: INPUT,
        };
        let s = unplace(
            b,
            &p,
            Size {
                width: 600,
                height: 450,
            },
        );
        assert_eq!((s.x1, s.x2), (120.0, 360.0));
        assert!(
            (s.y1 - 45.0).abs() < 1e-3 && (s.y2 - 225.0).abs() < 1e-3,
            "{s:?}"
        );
    }

    #[test]
    fn keeps_valid_rows_above_conf_in_score_order() {
        let h = heads(
            &[
                [0.0, 0.0, 0.5, 0.5],
                [0.5, 0.5, 1.0, 1.0],
                [0.1, 0.1, 0.2, 0.2],
                [0.0, 0.0, 1.0, 1.0],
            ],
            &[16.0, 0.0, 2.0, 5.0],
            &[0.6, 0.9, 0.3, 0.95],
            3.0, // the fourth row is padding, whatever its score
        );
        let dets = decode(&h, INPUT, 0.5, 100).unwrap();
        let got: Vec<(u32, f32)> = dets.iter().map(|d| (d.class_id, d.score)).collect();
        assert_eq!(got, vec![(0, 0.9), (16, 0.6)]);
        assert_eq!(dets[1].box_.x2, 150.0);
        assert_eq!(decode(&h, INPUT, 0.5, 1).unwrap().len(), 1);
    }

    #[test]
    fn a_count_beyond_the_rows_is_cut() {
        let h = heads(&[[0.0, 0.0, 1.0, 1.0]], &[1.0], &[0.8], 20.0);
        assert_eq!(decode(&h, INPUT, 0.5, 100).unwrap().len(), 1);
    }

    #[test]
    fn mismatched_shapes_are_model_errors() {
        let mut h = heads(&[[0.0, 0.0, 1.0, 1.0]], &[1.0], &[0.8], 1.0);
        h.scores = Output::from_f32("model 'ssd' output 2 (s)", &[1, 2], &[0.8, 0.1]).unwrap();
        let e = decode(&h, INPUT, 0.5, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ModelFailed);
        assert_eq!(
            e.message,
            "model 'ssd' output 2 (s): shape [1, 2] seen, expected [1, 1]"
        );
    }

    #[test]
    fn output_indexes_default_and_override() {
        let s = Settings::parse(r#"{"outputs": {"count": 0, "boxes": 3}}"#).unwrap();
        assert_eq!(
            (
                s.outputs.boxes,
                s.outputs.classes,
                s.outputs.scores,
                s.outputs.count
            ),
            (3, 1, 2, 0)
        );
        let e = Settings::parse(r#"{"outputs": {"box": 1}}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadSettings);
    }
}
