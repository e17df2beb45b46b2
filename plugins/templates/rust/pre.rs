//! `{{name}}`: a preparing stage. It decodes the upload (natively, in the
//! host), letterboxes it into the model's input tensor and records where the
//! photo landed, so the detector after it can map its boxes back.
//!
//! Settings (each optional): `width`, `height` (default 640x640), `pad`
//! (gray of the bars, default 114), `max_pixels` (larger photos are refused
//! with 413, default 40 million). The defaults fit `yolov5s`: FP32, NHWC,
//! RGB, pixels / 255. Put it before a detector (see `route.toml`).

use osprey_plugin_sdk::settings::{check_range, parse, whole};
use osprey_plugin_sdk::{
    export_stage, imaging, take_image, Channels, Fit, Frame, Layout, NamedTensor, Size, Stage, StageError, TensorSpec, TensorType,
};
use serde::Deserialize;

#[derive(Deserialize)]
// A misspelt setting is then an error naming it, not a silently ignored line.
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "side", deserialize_with = "whole")]
    width: u32,
    #[serde(default = "side", deserialize_with = "whole")]
    height: u32,
    #[serde(default = "gray", deserialize_with = "whole")]
    pad: u8,
    #[serde(default = "max_pixels", deserialize_with = "whole")]
    max_pixels: u64,
}

fn side() -> u32 {
    640
}
fn gray() -> u8 {
    114
}
fn max_pixels() -> u64 {
    40_000_000
}

impl Settings {
    /// The settings, each checked: what `run` works with and what `check` answers.
    fn parse(json: &str) -> Result<Self, StageError> {
        let s: Settings = parse(json)?;
        check_range("width", s.width, 1, 4096)?;
        check_range("height", s.height, 1, 4096)?;
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
        let (image, kept) = take_image(&mut frame, s.max_pixels, "no upload in the frame: {{name}} reads the request body, put it first")?;
        let spec = TensorSpec {
            width: s.width,
            height: s.height,
            fit: Fit::Letterbox,
            pad: s.pad,
            layout: Layout::Nhwc,
            channels: Channels::Rgb,
            ty: TensorType::Fp32,
            mean: Vec::new(),
            std: vec![255.0; 3],
        };
        let (tensor, placement) = imaging::to_tensor(&image, &spec)?;
        frame.source = Some(Size { width: image.width(), height: image.height() });
        frame.placement = Some(placement);
        frame.tensors.push(NamedTensor { name: "input".into(), tensor });
        // An image an earlier stage kept goes back for the stages after this one.
        if kept {
            frame.image = Some(image);
        }
        Ok(frame)
    }
}

export_stage!(Plugin);

// Decoding and tensors are the host's (`imaging`), which a native test does
// not have: these tests stop before them. `osprey plugin run` tries the rest.
#[cfg(test)]
mod tests {
    use osprey_plugin_sdk::testing::FrameBuilder;
    use osprey_plugin_sdk::ErrorKind;

    use super::*;

    #[test]
    fn without_an_upload_it_says_so() {
        let e = Plugin::run(FrameBuilder::new().build(), String::new()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
        assert!(e.message.contains("no upload"), "{}", e.message);
    }

    #[test]
    fn a_bad_setting_is_refused_by_name() {
        for (settings, name) in [(r#"{"widht": 320}"#, "widht"), (r#"{"width": 0}"#, "width"), (r#"{"pad": 300}"#, "pad")] {
            let e = Plugin::run(FrameBuilder::new().build(), settings.into()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadSettings, "{settings}");
            assert!(e.message.contains(name), "{settings}: {}", e.message);
            // The host's check before serving says the same.
            assert_eq!(Plugin::check(settings).unwrap_err().message, e.message);
        }
    }
}
