//! `render`: the last stage of a route asked for a picture instead of JSON
//! (`Accept: image/jpeg`, `image/png`, or `?render=jpeg|png`). It draws the
//! results onto the source image and returns it, encoded, in `frame.output`.
//!
//! - [`annotate`]: what goes on the picture (boxes, label tags, the class
//!   panel) and how it scales with the image; pure functions over RGB8;
//! - [`draw`]: a clipped canvas over an RGB buffer, and WCAG contrast;
//! - [`font`]: the 5x9 bitmap font the text is written in.
//!
//! The image is `frame.image` when an earlier stage kept it (it is passed on
//! as it came), else the upload in `frame.input`, decoded again. Pixels come
//! from the host (`imaging.pixels`), are drawn on here and go back through
//! `imaging.from-pixels` and `imaging.encode`; every other field of the frame
//! is passed on.
//!
//! Settings (all optional): `{"format": "jpeg"|"png", "quality": 90,
//! "labels": true, "scores": true, "line_width": 0, "max_pixels": 40000000,
//! "top_k": 5}`. `format` is set by the host from the request; `quality`
//! (1..=100) is for JPEG only; `labels` false draws boxes without text (and
//! no class panel); `line_width` 0 scales the outline with the image;
//! `top_k` is how many classes the panel lists.

pub mod annotate;
pub mod draw;
pub mod font;

use osprey_plugin_sdk::settings::{check_range, parse, whole};
use osprey_plugin_sdk::{export_stage, imaging, take_image, Frame, ImageFormat, Stage, StageError};
use serde::Deserialize;

pub use annotate::{annotate, class_panel, Style};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    format: FormatSetting,
    #[serde(deserialize_with = "whole")]
    quality: u8,
    labels: bool,
    scores: bool,
    #[serde(deserialize_with = "whole")]
    line_width: u32,
    #[serde(deserialize_with = "whole")]
    max_pixels: u64,
    #[serde(deserialize_with = "whole")]
    top_k: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let style = Style::default();
        Settings {
            format: FormatSetting::Jpeg,
            quality: 90,
            labels: style.labels,
            scores: style.scores,
            line_width: style.line_width,
            max_pixels: 40_000_000,
            top_k: style.top_k,
        }
    }
}

// Serde mirror of the WIT enum: the generated type carries no serde derives.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum FormatSetting {
    Jpeg,
    Png,
}

impl Settings {
    fn parse(json: &str) -> Result<Self, StageError> {
        let s: Settings = parse(json)?;
        check_range("quality", s.quality, 1, 100)?;
        // Wider than this is no outline any more but a fill.
        check_range("line_width", s.line_width, 0, 1_000)?;
        check_range("max_pixels", s.max_pixels, 1, u64::MAX)?;
        check_range("top_k", s.top_k, 1, 100)?;
        Ok(s)
    }

    fn style(&self) -> Style {
        Style {
            labels: self.labels,
            scores: self.scores,
            line_width: self.line_width,
            top_k: self.top_k,
        }
    }

    fn image_format(&self) -> ImageFormat {
        match self.format {
            FormatSetting::Jpeg => ImageFormat::Jpeg,
            FormatSetting::Png => ImageFormat::Png,
        }
    }
}

struct Render;

impl Stage for Render {
    fn check(settings: &str) -> Result<(), StageError> {
        Settings::parse(settings).map(drop)
    }

    fn run(mut frame: Frame, settings: String) -> Result<Frame, StageError> {
        let s = Settings::parse(&settings)?;
        let missing = "render: no image to draw on: the frame has neither `image` nor `input` \
                       (did an earlier stage of the route consume the upload?)";
        let (image, kept) = take_image(&mut frame, s.max_pixels, missing)?;
        let (width, height) = (image.width(), image.height());
        let mut rgb = imaging::pixels(&image);
        draw_results(&mut rgb, width, height, &frame, &s.style())?;
        let annotated = imaging::from_pixels(width, height, &rgb)?;
        let output = imaging::encode(&annotated, s.image_format(), s.quality)?;
        Ok(Frame {
            image: kept.then_some(image),
            output: Some(output),
            ..frame
        })
    }
}

export_stage!(Render);

/// Draws the frame's detections and classes, whichever it has.
fn draw_results(
    rgb: &mut [u8],
    width: u32,
    height: u32,
    frame: &Frame,
    style: &Style,
) -> Result<(), StageError> {
    // The host hands back exactly width * height * 3 bytes; a mismatch is
    // its bug, not the client's.
    let internal =
        |e: draw::SizeMismatch| StageError::internal(format!("render: imaging.pixels gave {e}"));
    if let Some(dets) = &frame.detections {
        annotate(rgb, width, height, dets, style).map_err(internal)?;
    }
    if let Some(classes) = &frame.classes {
        class_panel(rgb, width, height, classes, style).map_err(internal)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_plugin_sdk::ErrorKind;

    #[test]
    fn defaults_draw_labelled_boxes_into_a_jpeg() {
        let s = Settings::parse("").unwrap();
        assert_eq!(s.image_format(), ImageFormat::Jpeg);
        assert_eq!((s.quality, s.max_pixels), (90, 40_000_000));
        assert_eq!(s.style(), Style::default());
        assert_eq!(
            Style::default(),
            Style {
                labels: true,
                scores: true,
                line_width: 0,
                top_k: 5
            }
        );
    }

    #[test]
    fn every_setting_is_read() {
        let s = Settings::parse(
            r#"{"format": "png", "quality": 75.0, "labels": false, "scores": false,
                "line_width": 4, "max_pixels": 1000, "top_k": 3}"#,
        )
        .unwrap();
        assert_eq!(s.image_format(), ImageFormat::Png);
        assert_eq!((s.quality, s.max_pixels), (75, 1000));
        assert_eq!(
            s.style(),
            Style {
                labels: false,
                scores: false,
                line_width: 4,
                top_k: 3
            }
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_field_named() {
        for (json, field) in [
            (r#"{"format": "webp"}"#, "`format`"),
            (r#"{"quality": 0}"#, "`quality`"),
            (r#"{"quality": 101}"#, "`quality`"),
            (r#"{"quality": 300}"#, "`quality`"),
            (r#"{"line_width": -1}"#, "`line_width`"),
            (r#"{"line_width": 5000}"#, "`line_width`"),
            (r#"{"max_pixels": 0}"#, "`max_pixels`"),
            (r#"{"top_k": 0}"#, "`top_k`"),
            (r#"{"labels": "yes"}"#, "`labels`"),
            (r#"{"colour": "red"}"#, "`colour`"),
        ] {
            let e = Settings::parse(json).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadSettings, "{json}");
            assert!(e.message.contains(field), "{json}: {}", e.message);
        }
    }

    #[test]
    fn a_pixel_buffer_of_the_wrong_size_is_an_internal_error() {
        let frame = Frame {
            detections: Some(Vec::new()),
            ..osprey_plugin_sdk::empty_frame()
        };
        let e = draw_results(&mut [0; 10], 2, 2, &frame, &Style::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert_eq!(
            e.message,
            "render: imaging.pixels gave 10 bytes of pixels for a 2x2 RGB image (expected 12)"
        );
    }
}
