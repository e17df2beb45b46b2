//! Frames for a plugin's native unit tests (`cargo test` on this machine,
//! not in wasm): build the frame a stage would receive, call `run` on it,
//! read what it answered.
//!
//! Only the plain fields can be made here: `blob`, `image` and `tensor` are
//! host resources, and natively there is no host to hold them (calling
//! `imaging` or wasi-nn outside wasm panics). Test a stage's logic on
//! detections, classes, sizes and settings natively; test its pixels and
//! models through `osprey plugin run` on a photo.
//!
//! ```
//! use osprey_plugin_sdk::testing::{labels, report, FrameBuilder};
//!
//! let frame = FrameBuilder::new()
//!     .source(768, 576)
//!     .detection("dog", 0.9, [130.0, 220.0, 310.0, 540.0])
//!     .detection("truck", 0.6, [460.0, 70.0, 690.0, 170.0])
//!     .build();
//! assert_eq!(labels(&frame), ["dog", "truck"]);
//! assert_eq!(report(&frame, "zone"), None);
//! ```

use crate::{Bbox, ClassScore, Detection, Frame, Placement, Size};

/// A detection of `label` with `score` and box `[x1, y1, x2, y2]` (source
/// pixels); class id 0 and no sources: set the fields if a test needs them.
pub fn detection(label: &str, score: f32, [x1, y1, x2, y2]: [f32; 4]) -> Detection {
    Detection {
        class_id: 0,
        label: label.to_string(),
        score,
        box_: Bbox { x1, y1, x2, y2 },
        sources: Vec::new(),
    }
}

/// A frame as a stage would receive it, made field by field.
#[derive(Default)]
pub struct FrameBuilder {
    source: Option<Size>,
    placement: Option<Placement>,
    model: Option<String>,
    detections: Option<Vec<Detection>>,
    classes: Option<Vec<ClassScore>>,
    report: Vec<(String, String)>,
}

impl FrameBuilder {
    /// An empty frame: no upload, no detections (`None`, as before a detector).
    pub fn new() -> Self {
        Self::default()
    }

    /// The size of the source photo.
    pub fn source(mut self, width: u32, height: u32) -> Self {
        self.source = Some(Size { width, height });
        self
    }

    /// Where the photo sits in the model input (as `image-prep` records it).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// The model whose results the frame carries.
    pub fn model(mut self, name: &str) -> Self {
        self.model = Some(name.to_string());
        self
    }

    /// Adds a detection (see [`detection`]); detections are kept in the
    /// order added, so add them highest score first as a detector would.
    pub fn detection(mut self, label: &str, score: f32, bbox: [f32; 4]) -> Self {
        self.detections
            .get_or_insert_with(Vec::new)
            .push(detection(label, score, bbox));
        self
    }

    /// Sets the detections to `dets` (an empty list is "ran, found nothing").
    pub fn detections(mut self, dets: Vec<Detection>) -> Self {
        self.detections = Some(dets);
        self
    }

    /// Adds a class score (class id 0).
    pub fn class(mut self, label: &str, score: f32) -> Self {
        let class = ClassScore {
            class_id: 0,
            label: label.to_string(),
            score,
        };
        self.classes.get_or_insert_with(Vec::new).push(class);
        self
    }

    /// Adds a field an earlier stage put in the answer (`json` is its JSON text).
    pub fn report(mut self, name: &str, json: &str) -> Self {
        self.report.push((name.to_string(), json.to_string()));
        self
    }

    pub fn build(self) -> Frame {
        Frame {
            source: self.source,
            placement: self.placement,
            model: self.model,
            detections: self.detections,
            classes: self.classes,
            report: self.report,
            ..crate::empty_frame()
        }
    }
}

/// The labels of the frame's detections, in order (empty when it has none).
pub fn labels(frame: &Frame) -> Vec<&str> {
    frame
        .detections
        .iter()
        .flatten()
        .map(|d| d.label.as_str())
        .collect()
}

/// The answer field `name` a stage put in `frame.report`, parsed; `None`
/// when there is none. Panics when its text is not JSON: the host would
/// refuse it too (500 naming the field).
pub fn report(frame: &Frame, name: &str) -> Option<serde_json::Value> {
    let (_, text) = frame.report.iter().rev().find(|(n, _)| n == name)?;
    Some(
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("report field `{name}` is not JSON ({e}): {text}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_frame_holds_what_was_added_and_nothing_else() {
        let frame = FrameBuilder::new()
            .source(640, 480)
            .model("yolov5s")
            .detection("dog", 0.9, [1.0, 2.0, 3.0, 4.0])
            .class("tabby", 0.7)
            .report("zone", r#"{"inside": 1}"#)
            .build();
        assert_eq!(
            (frame.source.unwrap().width, frame.source.unwrap().height),
            (640, 480)
        );
        assert_eq!(frame.model.as_deref(), Some("yolov5s"));
        assert_eq!(labels(&frame), ["dog"]);
        let d = &frame.detections.as_ref().unwrap()[0];
        assert_eq!((d.box_.x1, d.box_.y2, d.score), (1.0, 4.0, 0.9));
        assert_eq!(frame.classes.as_ref().unwrap()[0].label, "tabby");
        assert_eq!(report(&frame, "zone").unwrap()["inside"], 1);
        assert!(frame.input.is_none() && frame.image.is_none() && frame.tensors.is_empty());
    }

    #[test]
    fn no_detector_is_none_and_an_empty_list_is_not() {
        assert!(FrameBuilder::new().build().detections.is_none());
        assert_eq!(
            FrameBuilder::new()
                .detections(Vec::new())
                .build()
                .detections
                .map(|d| d.len()),
            Some(0)
        );
        assert_eq!(report(&FrameBuilder::new().build(), "zone"), None);
    }
}
