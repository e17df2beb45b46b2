//! `{{name}}`: a post-processing stage. It keeps the detections whose box
//! centre lies inside a zone of the photo and puts in the answer how many of
//! each label it kept: `"{{name}}": {"kept": 1, "labels": {"dog": 1}}`.
//!
//! Settings (each optional): `zone = [x1, y1, x2, y2]` in the photo's pixels
//! (default: the whole photo), `labels = ["dog", ...]` (default: every label).
//! Put it after a detector (see `route.toml`).

use std::collections::BTreeMap;

use osprey_plugin_sdk::settings::parse;
use osprey_plugin_sdk::{export_stage, Detection, Frame, Stage, StageError};
use serde::Deserialize;

#[derive(Deserialize)]
// A misspelt setting is then an error naming it, not a silently ignored line.
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    zone: Option<[f32; 4]>,
    #[serde(default)]
    labels: Vec<String>,
}

impl Settings {
    /// The settings, each checked: what `run` works with and what `check` answers.
    fn parse(json: &str) -> Result<Self, StageError> {
        let s: Settings = parse(json)?;
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
        let Some(mut dets) = frame.detections.take() else {
            return Err(StageError::bad_input("no detections in the frame: put a detector (yolo, ssd) before {{name}}"));
        };
        dets.retain(|d| s.zone.is_none_or(|zone| centre_inside(d, zone)) && (s.labels.is_empty() || s.labels.contains(&d.label)));
        let mut per_label = BTreeMap::<&str, u32>::new();
        for d in &dets {
            *per_label.entry(&d.label).or_default() += 1;
        }
        let answer = serde_json::json!({ "kept": dets.len(), "labels": per_label });
        frame.report.push(("{{name}}".into(), answer.to_string()));
        // Everything else (model, source, the upload...) goes on as it came.
        Ok(Frame { detections: Some(dets), ..frame })
    }
}

fn centre_inside(d: &Detection, [x1, y1, x2, y2]: [f32; 4]) -> bool {
    let (cx, cy) = ((d.box_.x1 + d.box_.x2) / 2.0, (d.box_.y1 + d.box_.y2) / 2.0);
    (x1..=x2).contains(&cx) && (y1..=y2).contains(&cy)
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
            .detection("truck", 0.6, [460.0, 70.0, 690.0, 170.0])
            .build()
    }

    #[test]
    fn keeps_what_lies_in_the_zone_and_counts_it() {
        let out = Plugin::run(photo(), r#"{"zone": [0, 0, 384, 576]}"#.into()).unwrap();
        assert_eq!(labels(&out), ["dog"]);
        assert_eq!(report(&out, "{{name}}").unwrap(), serde_json::json!({"kept": 1, "labels": {"dog": 1}}));
    }

    #[test]
    fn without_settings_it_keeps_everything() {
        let out = Plugin::run(photo(), String::new()).unwrap();
        assert_eq!(labels(&out), ["dog", "truck"]);
    }

    #[test]
    fn a_misspelt_setting_is_refused_by_name() {
        let e = Plugin::run(photo(), r#"{"zones": [0, 0, 1, 1]}"#.into()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadSettings);
        assert!(e.message.contains("zones"), "{}", e.message);
    }

    #[test]
    fn without_a_detector_before_it_says_so() {
        let e = Plugin::run(FrameBuilder::new().build(), String::new()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
    }
}
