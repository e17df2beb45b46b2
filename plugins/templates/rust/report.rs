//! `{{name}}`: a reporting stage. It leaves the detections as they are and
//! adds a field to the answer: how many there are in all and of each label,
//! above a score, and the photo's size:
//! `"{{name}}": {"total": 2, "labels": {"dog": 1, "truck": 1}, "width": 768, "height": 576}`.
//!
//! Settings (optional): `min_score = 0.5` (default 0: count them all).
//! Put it after a detector (see `route.toml`).

use std::collections::BTreeMap;

use osprey_plugin_sdk::settings::{check_range, parse};
use osprey_plugin_sdk::{export_stage, Frame, Stage, StageError};
use serde::Deserialize;

#[derive(Deserialize)]
// A misspelt setting is then an error naming it, not a silently ignored line.
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    min_score: f32,
}

impl Settings {
    /// The settings, each checked: what `run` works with and what `check` answers.
    fn parse(json: &str) -> Result<Self, StageError> {
        let s: Settings = parse(json)?;
        check_range("min_score", s.min_score, 0.0, 1.0)?;
        Ok(s)
    }
}

struct Plugin;

impl Stage for Plugin {
    // Asked by the host before it serves the route: a wrong setting fails
    // `osprey check` and the reload, with the config's line and column.
    fn check(settings: &str) -> Result<(), StageError> {
        Settings::parse(settings).map(drop)
    }

    fn run(mut frame: Frame, settings: String) -> Result<Frame, StageError> {
        let s = Settings::parse(&settings)?;
        let Some(dets) = &frame.detections else {
            return Err(StageError::bad_input("no detections in the frame: put a detector (yolo, ssd) before {{name}}"));
        };
        let mut per_label = BTreeMap::<&str, u32>::new();
        for d in dets.iter().filter(|d| d.score >= s.min_score) {
            *per_label.entry(&d.label).or_default() += 1;
        }
        let mut answer = serde_json::json!({ "total": per_label.values().sum::<u32>(), "labels": per_label });
        if let Some(size) = frame.source {
            answer["width"] = size.width.into();
            answer["height"] = size.height.into();
        }
        frame.report.push(("{{name}}".into(), answer.to_string()));
        Ok(frame)
    }
}

export_stage!(Plugin);

#[cfg(test)]
mod tests {
    use osprey_plugin_sdk::testing::{labels, report, FrameBuilder};
    use osprey_plugin_sdk::ErrorKind;

    use super::*;

    fn photo() -> Frame {
        FrameBuilder::new()
            .source(768, 576)
            .detection("dog", 0.9, [130.0, 220.0, 310.0, 540.0])
            .detection("dog", 0.3, [20.0, 20.0, 60.0, 60.0])
            .detection("truck", 0.6, [460.0, 70.0, 690.0, 170.0])
            .build()
    }

    #[test]
    fn counts_above_the_score_and_keeps_the_detections() {
        let out = Plugin::run(photo(), r#"{"min_score": 0.5}"#.into()).unwrap();
        let want = serde_json::json!({"total": 2, "labels": {"dog": 1, "truck": 1}, "width": 768, "height": 576});
        assert_eq!(report(&out, "{{name}}").unwrap(), want);
        assert_eq!(labels(&out), ["dog", "dog", "truck"]);
    }

    #[test]
    fn a_score_out_of_range_is_refused_by_name() {
        let e = Plugin::run(photo(), r#"{"min_score": 2}"#.into()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadSettings);
        assert!(e.message.contains("min_score"), "{}", e.message);
    }
}
