//! `classify`: a stage that runs an image classifier and keeps its top
//! classes.
//!
//! The model's first output is `[1, K]` scores, either U8 (quantised
//! probabilities: `probability = value x scale`) or FP32 (probabilities, or
//! logits when `softmax` is set).
//!
//! Settings: `{"model": "efficientnet_lite3", "top": 5, "scale": 0.00390625,
//! "softmax": false}`.

use osprey_plugin_sdk::labels::label;
use osprey_plugin_sdk::nn::{infer, take_inputs, type_name, Output};
use osprey_plugin_sdk::settings::{check_range, parse, whole};
use osprey_plugin_sdk::{export_stage, ClassScore, Frame, Stage, StageError, TensorType};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "Settings::default_model")]
    pub model: String,
    #[serde(default = "Settings::default_top", deserialize_with = "whole")]
    pub top: usize,
    /// For U8 outputs only.
    #[serde(default = "Settings::default_scale")]
    scale: f32,
    /// For FP32 outputs only: they are logits, not probabilities.
    #[serde(default)]
    softmax: bool,
}

impl Settings {
    fn default_model() -> String {
        "efficientnet_lite3".into()
    }
    fn default_top() -> usize {
        5
    }
    fn default_scale() -> f32 {
        1.0 / 256.0
    }

    pub fn parse(json: &str) -> Result<Self, StageError> {
        let s: Settings = parse(json)?;
        check_range("top", s.top, 1, 100_000)?;
        check_range("scale", s.scale, f32::MIN_POSITIVE, f32::MAX)?;
        Ok(s)
    }
}

struct Classify;

impl Stage for Classify {
    fn check(settings: &str) -> Result<(), StageError> {
        Settings::parse(settings).map(drop)
    }

    fn run(mut frame: Frame, settings: String) -> Result<Frame, StageError> {
        let s = Settings::parse(&settings)?;
        let outputs = infer(&s.model, take_inputs(&mut frame)?)?;
        let probs = probabilities(&Output::read(&s.model, &outputs, 0)?, &s)?;
        let classes = top_k(&probs, s.top)
            .into_iter()
            .map(|(class_id, score)| ClassScore {
                class_id,
                label: label(&s.model, class_id),
                score,
            })
            .collect();
        Ok(Frame {
            model: Some(s.model),
            classes: Some(classes),
            ..frame
        })
    }
}

export_stage!(Classify);

/// The scores of a `[1, K]` (or `[K]`) output as probabilities.
pub fn probabilities(out: &Output, s: &Settings) -> Result<Vec<f32>, StageError> {
    let leading_ones = out.dims.iter().rev().skip(1).all(|&d| d == 1);
    if out.dims.is_empty() || !leading_ones {
        return Err(out.shape_error("[1, classes]"));
    }
    match out.ty {
        TensorType::U8 => Ok(out.u8s()?.iter().map(|&v| v as f32 * s.scale).collect()),
        TensorType::Fp32 => {
            let mut v = out.f32s()?.to_vec();
            if s.softmax {
                softmax(&mut v);
            }
            Ok(v)
        }
        other => Err(StageError::model_failed(format!(
            "{}: type {} seen, expected U8 or FP32",
            out.what,
            type_name(other)
        ))),
    }
}

/// Turns logits into probabilities in place.
fn softmax(v: &mut [f32]) {
    // Subtracting the maximum keeps `exp` from overflowing on large logits.
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// The `k` highest scores with their class ids, highest first; on ties the
/// lower class id comes first.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut ranked: Vec<(u32, f32)> = scores
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    // A stable sort keeps ids ascending among equal scores.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_plugin_sdk::ErrorKind;

    fn settings(json: &str) -> Settings {
        Settings::parse(json).unwrap()
    }

    #[test]
    fn top_k_is_sorted_and_stable_on_ties() {
        let scores = [0.1, 0.5, 0.2, 0.5, 0.05, 0.2];
        assert_eq!(
            top_k(&scores, 4),
            vec![(1, 0.5), (3, 0.5), (2, 0.2), (5, 0.2)]
        );
        assert_eq!(top_k(&scores, 100).len(), 6);
    }

    #[test]
    fn u8_outputs_are_scaled() {
        let out = Output::from_u8("o", &[1, 4], &[0, 128, 255, 64]).unwrap();
        let p = probabilities(&out, &settings("{}")).unwrap();
        assert_eq!(p, vec![0.0, 0.5, 255.0 / 256.0, 0.25]);
    }

    #[test]
    fn fp32_logits_go_through_softmax_when_asked() {
        let out = Output::from_f32("o", &[1, 3], &[1.0, 1.0, 1000.0]).unwrap();
        assert_eq!(
            probabilities(&out, &settings("{}")).unwrap(),
            vec![1.0, 1.0, 1000.0]
        );
        let p = probabilities(&out, &settings(r#"{"softmax": true}"#)).unwrap();
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > 0.999 && p[0] == p[1]);
    }

    #[test]
    fn wrong_shape_or_type_is_a_model_error() {
        let out = Output::from_f32("model 'c' output 0 (p)", &[2, 3], &[0.0; 6]).unwrap();
        let e = probabilities(&out, &settings("{}")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ModelFailed);
        assert_eq!(
            e.message,
            "model 'c' output 0 (p): shape [2, 3] seen, expected [1, classes]"
        );
        let out = Output::new("o".into(), vec![1, 2], TensorType::I32, vec![0; 8]).unwrap();
        let e = probabilities(&out, &settings("{}")).unwrap_err();
        assert_eq!(e.message, "o: type I32 seen, expected U8 or FP32");
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(settings("{}").scale, 0.00390625);
        assert!(Settings::parse(r#"{"top": 0}"#).is_err());
        // Whole numbers written as floats are accepted.
        assert_eq!(settings(r#"{"top": 3.0}"#).top, 3);
        assert!(Settings::parse(r#"{"scale": 0}"#).is_err());
    }
}
