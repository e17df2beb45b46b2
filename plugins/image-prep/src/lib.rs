//! `image-prep`: the stage that turns an upload into a model input tensor.
//!
//! Decoding, resizing and normalising run natively in the host (`imaging`);
//! this stage only decides how. It records the source size and the
//! placement, so that detectors can map boxes back onto the photo.
//!
//! The image comes from `frame.image` when an earlier stage kept one (so a
//! chain that prepares two inputs decodes the upload once), else from
//! decoding `frame.input`, which stays in the frame. The decoded image is
//! dropped unless `keep_image` is set; without it the host decodes straight
//! into the tensor, and may decode a big JPEG at a reduced scale. The new
//! tensor is appended to `frame.tensors` under `input_name`.
//!
//! Settings (all optional): `{"width": 640, "height": 640, "fit":
//! "letterbox"|"stretch", "pad": 114, "layout": "nhwc"|"nchw", "channels":
//! "rgb"|"bgr", "dtype": "fp32"|"u8", "mean": [], "std": [], "max_pixels":
//! 40000000, "input_name": "input", "keep_image": false}`.

use osprey_plugin_sdk::settings::{check_range, parse, whole};
use osprey_plugin_sdk::{
    export_stage, imaging, take_image, Channels, DecodeLimits, Fit, Frame, Layout, NamedTensor,
    Size, Stage, StageError, TensorSpec, TensorType,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    #[serde(deserialize_with = "whole")]
    width: u32,
    #[serde(deserialize_with = "whole")]
    height: u32,
    fit: FitSetting,
    #[serde(deserialize_with = "whole")]
    pad: u8,
    layout: LayoutSetting,
    channels: ChannelsSetting,
    dtype: DtypeSetting,
    mean: Vec<f32>,
    std: Vec<f32>,
    #[serde(deserialize_with = "whole")]
    max_pixels: u64,
    input_name: String,
    keep_image: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            width: 640,
            height: 640,
            fit: FitSetting::Letterbox,
            pad: 114,
            layout: LayoutSetting::Nhwc,
            channels: ChannelsSetting::Rgb,
            dtype: DtypeSetting::Fp32,
            mean: Vec::new(),
            std: Vec::new(),
            max_pixels: 40_000_000,
            input_name: "input".into(),
            keep_image: false,
        }
    }
}

// Serde mirrors of the WIT enums: the generated types carry no serde derives.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FitSetting {
    Letterbox,
    Stretch,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LayoutSetting {
    Nhwc,
    Nchw,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ChannelsSetting {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum DtypeSetting {
    Fp32,
    U8,
}

impl Settings {
    fn parse(json: &str) -> Result<Self, StageError> {
        let s: Settings = parse(json)?;
        check_range("width", s.width, 1, 16_384)?;
        check_range("height", s.height, 1, 16_384)?;
        check_range("max_pixels", s.max_pixels, 1, u64::MAX)?;
        s.check_normalisation()?;
        Ok(s)
    }

    /// Mean and std are per channel, and only mean something for fp32
    /// tensors: the host would refuse them otherwise, later and less clearly.
    fn check_normalisation(&self) -> Result<(), StageError> {
        if self.dtype == DtypeSetting::U8 && !(self.mean.is_empty() && self.std.is_empty()) {
            return Err(StageError::bad_settings(
                "settings: `mean` and `std` must be empty for `dtype` \"u8\" (pixels are passed as they are)",
            ));
        }
        for (field, values) in [("mean", &self.mean), ("std", &self.std)] {
            if !(values.is_empty() || values.len() == 3) {
                return Err(StageError::bad_settings(format!(
                    "settings: `{field}` has {} values, expected 3 (one per channel) or none",
                    values.len()
                )));
            }
        }
        if self.std.iter().any(|&v| !(v.is_finite() && v != 0.0)) {
            return Err(StageError::bad_settings(
                "settings: `std` values must be finite and non-zero",
            ));
        }
        Ok(())
    }

    fn tensor_spec(&self) -> TensorSpec {
        TensorSpec {
            width: self.width,
            height: self.height,
            fit: match self.fit {
                FitSetting::Letterbox => Fit::Letterbox,
                FitSetting::Stretch => Fit::Stretch,
            },
            pad: self.pad,
            layout: match self.layout {
                LayoutSetting::Nhwc => Layout::Nhwc,
                LayoutSetting::Nchw => Layout::Nchw,
            },
            channels: match self.channels {
                ChannelsSetting::Rgb => Channels::Rgb,
                ChannelsSetting::Bgr => Channels::Bgr,
            },
            ty: match self.dtype {
                DtypeSetting::Fp32 => TensorType::Fp32,
                DtypeSetting::U8 => TensorType::U8,
            },
            mean: self.mean.clone(),
            std: self.std.clone(),
        }
    }
}

struct ImagePrep;

impl Stage for ImagePrep {
    fn check(settings: &str) -> Result<(), StageError> {
        Settings::parse(settings).map(drop)
    }

    fn run(mut frame: Frame, settings: String) -> Result<Frame, StageError> {
        let s = Settings::parse(&settings)?;
        if frame.image.is_none() && !s.keep_image {
            return Self::decode_into_tensor(frame, s);
        }
        // An image kept by an earlier stage is passed on as it came; a
        // decoded upload only with `keep_image` (the upload stays in the frame).
        let (image, from_frame) = take_image(&mut frame, s.max_pixels, "no upload in the frame")?;
        let keep = from_frame || s.keep_image;
        let source = Size {
            width: image.width(),
            height: image.height(),
        };
        let (tensor, placement) = imaging::to_tensor(&image, &s.tensor_spec())?;
        frame.tensors.push(NamedTensor {
            name: s.input_name,
            tensor,
        });
        Ok(Frame {
            image: keep.then_some(image),
            source: Some(source),
            placement: Some(placement),
            ..frame
        })
    }
}

impl ImagePrep {
    /// No pixels are kept, so the host may decode at a reduced scale; the
    /// size and placement it gives back are in the upload's own pixels.
    fn decode_into_tensor(mut frame: Frame, s: Settings) -> Result<Frame, StageError> {
        let blob = frame
            .input
            .as_ref()
            .ok_or_else(|| StageError::bad_input("no upload in the frame"))?;
        let limits = DecodeLimits {
            max_pixels: s.max_pixels,
        };
        let (tensor, placement, source) =
            imaging::decode_to_tensor(blob, limits, &s.tensor_spec())?;
        frame.tensors.push(NamedTensor {
            name: s.input_name,
            tensor,
        });
        Ok(Frame {
            source: Some(source),
            placement: Some(placement),
            ..frame
        })
    }
}

export_stage!(ImagePrep);

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_plugin_sdk::ErrorKind;

    fn error(json: &str) -> StageError {
        Settings::parse(json).unwrap_err()
    }

    #[test]
    fn defaults_make_a_letterboxed_rgb_fp32_640_spec() {
        let s = Settings::parse("{}").unwrap();
        let spec = s.tensor_spec();
        assert_eq!((spec.width, spec.height, spec.pad), (640, 640, 114));
        assert_eq!(
            (spec.fit, spec.layout, spec.channels, spec.ty),
            (
                Fit::Letterbox,
                Layout::Nhwc,
                Channels::Rgb,
                TensorType::Fp32
            )
        );
        assert!(spec.mean.is_empty() && spec.std.is_empty());
        assert_eq!(
            (s.max_pixels, s.input_name.as_str(), s.keep_image),
            (40_000_000, "input", false)
        );
    }

    #[test]
    fn every_setting_reaches_the_spec() {
        let s = Settings::parse(
            r#"{"width": 416, "height": 320, "fit": "stretch", "pad": 0, "layout": "nchw",
                "channels": "bgr", "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395]}"#,
        )
        .unwrap();
        let spec = s.tensor_spec();
        assert_eq!((spec.width, spec.height, spec.pad), (416, 320, 0));
        assert_eq!(
            (spec.fit, spec.layout, spec.channels),
            (Fit::Stretch, Layout::Nchw, Channels::Bgr)
        );
        assert_eq!(spec.std, vec![57.375, 57.12, 58.395]);
        let u8_spec = Settings::parse(r#"{"dtype": "u8"}"#).unwrap().tensor_spec();
        assert_eq!(u8_spec.ty, TensorType::U8);
        // Whole numbers written as floats are accepted.
        assert_eq!(Settings::parse(r#"{"width": 320.0}"#).unwrap().width, 320);
    }

    #[test]
    fn bad_settings_are_refused_with_the_field_named() {
        for (json, field) in [
            (r#"{"fit": "crop"}"#, "`fit`"),
            (r#"{"pad": 300}"#, "`pad`"),
            (r#"{"width": 0}"#, "`width`"),
            (r#"{"mean": [1, 2]}"#, "`mean`"),
            (r#"{"std": [1, 0, 1]}"#, "`std`"),
            (r#"{"dtype": "u8", "std": [255, 255, 255]}"#, "`std`"),
            (r#"{"colour": "rgb"}"#, "`colour`"),
        ] {
            let e = error(json);
            assert_eq!(e.kind, ErrorKind::BadSettings, "{json}");
            assert!(e.message.contains(field), "{json}: {}", e.message);
        }
    }
}
