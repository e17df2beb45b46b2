//! The host side of the `types`, `imaging` and `host` interfaces.

use std::sync::Arc;

use wasmtime::component::{HasData, Resource, ResourceTable};

use super::bindings::osprey::plugin::{host, imaging, types};
use super::{Blob, StageErrorKind};
use crate::imaging::{self as img, Image, ImagingError};
use crate::nn::{Registry, Tensor};

/// Per-store state of these interfaces.
pub struct HostCtx {
    registry: Arc<Registry>,
    request_id: u64,
    /// The plugin running now, to tag its log lines.
    pub plugin: String,
}

impl HostCtx {
    pub fn new(registry: Arc<Registry>, request_id: u64) -> Self {
        HostCtx { registry, request_id, plugin: String::new() }
    }
}

pub struct HostView<'a> {
    pub ctx: &'a mut HostCtx,
    pub table: &'a mut ResourceTable,
}

pub struct HasHost;

impl HasData for HasHost {
    type Data<'a> = HostView<'a>;
}

impl types::Host for HostView<'_> {}

impl types::HostBlob for HostView<'_> {
    fn new(&mut self, content_type: String, data: Vec<u8>) -> wasmtime::Result<Resource<Blob>> {
        Ok(self.table.push(Blob { content_type, bytes: data.into() })?)
    }

    fn content_type(&mut self, b: Resource<Blob>) -> wasmtime::Result<String> {
        Ok(self.table.get(&b)?.content_type.clone())
    }

    fn len(&mut self, b: Resource<Blob>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&b)?.bytes.len() as u64)
    }

    fn read(&mut self, b: Resource<Blob>, offset: u64, len: u64) -> wasmtime::Result<Vec<u8>> {
        let bytes = &self.table.get(&b)?.bytes;
        let start = (offset as usize).min(bytes.len());
        let end = start.saturating_add(len as usize).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }

    fn drop(&mut self, b: Resource<Blob>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl types::HostImage for HostView<'_> {
    fn width(&mut self, i: Resource<Image>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&i)?.width)
    }

    fn height(&mut self, i: Resource<Image>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&i)?.height)
    }

    fn drop(&mut self, i: Resource<Image>) -> wasmtime::Result<()> {
        self.table.delete(i)?;
        Ok(())
    }
}

impl imaging::Host for HostView<'_> {
    fn decode(
        &mut self,
        data: Resource<Blob>,
        limits: imaging::DecodeLimits,
    ) -> wasmtime::Result<Result<Resource<Image>, types::StageError>> {
        let decoded = img::decode(&self.table.get(&data)?.bytes, limits.max_pixels);
        match decoded {
            Ok(image) => Ok(Ok(self.table.push(image)?)),
            Err(e) => Ok(Err(stage_error(&e))),
        }
    }

    fn to_tensor(
        &mut self,
        image: Resource<Image>,
        spec: imaging::TensorSpec,
    ) -> wasmtime::Result<Result<(Resource<Tensor>, types::Placement), types::StageError>> {
        let spec = match tensor_spec(&spec) {
            Ok(s) => s,
            Err(e) => return Ok(Err(stage_error(&e))),
        };
        match img::to_tensor(self.table.get(&image)?, &spec) {
            Ok((tensor, p)) => Ok(Ok((self.table.push(tensor)?, placement(&p, &spec)))),
            Err(e) => Ok(Err(stage_error(&e))),
        }
    }

    fn decode_to_tensor(
        &mut self,
        data: Resource<Blob>,
        limits: imaging::DecodeLimits,
        spec: imaging::TensorSpec,
    ) -> wasmtime::Result<Result<(Resource<Tensor>, types::Placement, types::Size), types::StageError>> {
        let spec = match tensor_spec(&spec) {
            Ok(s) => s,
            Err(e) => return Ok(Err(stage_error(&e))),
        };
        match img::decode_to_tensor(&self.table.get(&data)?.bytes, limits.max_pixels, &spec) {
            Ok((tensor, p, (width, height))) => {
                Ok(Ok((self.table.push(tensor)?, placement(&p, &spec), types::Size { width, height })))
            }
            Err(e) => Ok(Err(stage_error(&e))),
        }
    }

    fn pixels(&mut self, image: Resource<Image>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&image)?.rgb.clone())
    }

    fn from_pixels(&mut self, width: u32, height: u32, rgb: Vec<u8>) -> wasmtime::Result<Result<Resource<Image>, types::StageError>> {
        match img::from_pixels(width, height, rgb, MAX_MADE_PIXELS) {
            Ok(image) => Ok(Ok(self.table.push(image)?)),
            Err(e) => Ok(Err(stage_error(&e))),
        }
    }

    fn encode(
        &mut self,
        image: Resource<Image>,
        format: imaging::ImageFormat,
        quality: u8,
    ) -> wasmtime::Result<Result<Resource<Blob>, types::StageError>> {
        let format = match format {
            imaging::ImageFormat::Jpeg => img::Format::Jpeg,
            imaging::ImageFormat::Png => img::Format::Png,
        };
        match img::encode(self.table.get(&image)?, format, quality) {
            Ok((bytes, content_type)) => Ok(Ok(self.table.push(Blob { content_type: content_type.into(), bytes: bytes.into() })?)),
            Err(e) => Ok(Err(stage_error(&e))),
        }
    }
}

fn placement(p: &img::Placement, spec: &img::TensorSpec) -> types::Placement {
    types::Placement {
        scale_x: p.scale_x,
        scale_y: p.scale_y,
        pad_x: p.pad_x as f32,
        pad_y: p.pad_y as f32,
        input: types::Size { width: spec.width, height: spec.height },
    }
}

/// The largest image a plugin may make from pixels (its memory cap bounds it
/// too: the pixels were in guest memory first).
const MAX_MADE_PIXELS: u64 = 100_000_000;

impl host::Host for HostView<'_> {
    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        let (plugin, request) = (&self.ctx.plugin, self.ctx.request_id);
        match level {
            host::Level::Debug => tracing::debug!(plugin, request, "{message}"),
            host::Level::Info => tracing::info!(plugin, request, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, request, "{message}"),
            host::Level::Error => tracing::error!(plugin, request, "{message}"),
        }
        Ok(())
    }

    fn label(&mut self, model: String, class_id: u32) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.registry.get(&model).and_then(|m| m.label(class_id)).map(str::to_string))
    }
}

fn tensor_spec(s: &imaging::TensorSpec) -> Result<img::TensorSpec, ImagingError> {
    use crate::plugin::bindings::wasi::nn::tensor::TensorType;
    let elem = match s.ty {
        TensorType::Fp32 => img::Elem::F32,
        TensorType::U8 => img::Elem::U8,
        other => return Err(ImagingError::BadSpec(format!("tensor type {other:?}: only fp32 and u8 are supported"))),
    };
    let three = |v: &[f32], default: f32, what: &str| -> Result<[f32; 3], ImagingError> {
        match v {
            [] => Ok([default; 3]),
            [a, b, c] if elem == img::Elem::F32 => Ok([*a, *b, *c]),
            [_, _, _] => Err(ImagingError::BadSpec(format!("{what} applies to fp32 tensors only"))),
            _ => Err(ImagingError::BadSpec(format!("{what} needs 3 values, got {}", v.len()))),
        }
    };
    let std = three(&s.std, 1.0, "std")?;
    if std.contains(&0.0) {
        return Err(ImagingError::BadSpec("std must not be 0".into()));
    }
    Ok(img::TensorSpec {
        width: s.width,
        height: s.height,
        fit: match s.fit {
            imaging::Fit::Letterbox => img::Fit::Letterbox,
            imaging::Fit::Stretch => img::Fit::Stretch,
        },
        pad: s.pad,
        layout: match s.layout {
            imaging::Layout::Nhwc => img::Layout::Nhwc,
            imaging::Layout::Nchw => img::Layout::Nchw,
        },
        bgr: s.channels == imaging::Channels::Bgr,
        elem,
        mean: three(&s.mean, 0.0, "mean")?,
        std,
    })
}

fn stage_error(e: &ImagingError) -> types::StageError {
    let kind = match StageErrorKind::from(e) {
        StageErrorKind::UnsupportedType => types::ErrorKind::UnsupportedType,
        StageErrorKind::TooLarge => types::ErrorKind::TooLarge,
        StageErrorKind::BadSettings => types::ErrorKind::BadSettings,
        _ => types::ErrorKind::BadImage,
    };
    types::StageError { kind, message: e.to_string() }
}
