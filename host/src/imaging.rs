//! Native image work behind the `imaging` interface: decode (JPEG, PNG, WebP,
//! EXIF orientation) and resize/letterbox/normalise into a model tensor.
//!
//! Done in the host, with SIMD, because it is the largest cost left beside the
//! model (DESIGN.md: 2.8 ms native vs 5.3 ms in wasm for a 768x576 JPEG); the
//! plugin still decides every parameter.

use std::io::Cursor;

use fast_image_resize as fr;
use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::nn::{Tensor, TensorData};

/// A decoded 8-bit RGB image held by the host.
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImagingError {
    #[error("not a JPEG, PNG or WebP image")]
    Unsupported,
    #[error("image is {width}x{height} = {pixels} pixels, more than the {limit} allowed")]
    TooLarge { width: u32, height: u32, pixels: u64, limit: u64 },
    #[error("cannot decode image: {0}")]
    Corrupt(String),
    #[error("bad tensor spec: {0}")]
    BadSpec(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Letterbox,
    Stretch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Nhwc,
    Nchw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    U8,
}

/// How an image becomes a tensor (see `tensor-spec` in `wit/plugin.wit`).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
    pub pad: u8,
    pub layout: Layout,
    pub bgr: bool,
    pub elem: Elem,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Where the source image landed in the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: u32,
    pub pad_y: u32,
    /// Size of the resized image inside the input.
    pub inner_w: u32,
    pub inner_h: u32,
}

/// Decodes an upload, refusing images over `max_pixels` before decoding any pixel.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Image, ImagingError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImagingError::Corrupt(e.to_string()))?;
    match reader.format() {
        Some(image::ImageFormat::Jpeg | image::ImageFormat::Png | image::ImageFormat::WebP) => {}
        _ => return Err(ImagingError::Unsupported),
    }
    // The size from the header alone, before any decoder allocates for it.
    if let Ok(size) = imagesize::blob_size(bytes) {
        check_pixels(size.width as u32, size.height as u32, max_pixels)?;
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !has_jpeg_end(bytes) {
        return Err(ImagingError::Corrupt("the JPEG is truncated (no end-of-image marker)".into()));
    }
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, max_pixels)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    Ok(Image { width: rgb.width(), height: rgb.height(), rgb: rgb.into_raw() })
}

fn check_pixels(width: u32, height: u32, limit: u64) -> Result<(), ImagingError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limit {
        return Err(ImagingError::TooLarge { width, height, pixels, limit });
    }
    Ok(())
}

/// A whole JPEG ends with the EOI marker (FF D9), give or take trailing
/// padding; the decoder would otherwise fill a cut-off photo with grey and
/// the model would answer on half an image.
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    tail.windows(2).any(|w| w == [0xff, 0xd9])
}

fn corrupt(e: image::ImageError) -> ImagingError {
    match e {
        image::ImageError::Unsupported(_) => ImagingError::Unsupported,
        other => ImagingError::Corrupt(other.to_string()),
    }
}

/// An image from RGB pixels that a plugin made (drew on, marked).
pub fn from_pixels(width: u32, height: u32, rgb: Vec<u8>, max_pixels: u64) -> Result<Image, ImagingError> {
    check_pixels(width, height, max_pixels)?;
    let want = width as usize * height as usize * 3;
    if rgb.len() != want || want == 0 {
        return Err(ImagingError::BadSpec(format!("{width}x{height} RGB needs {want} bytes, got {}", rgb.len())));
    }
    Ok(Image { width, height, rgb })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

/// Encodes an image; `quality` (1..100) applies to JPEG.
pub fn encode(img: &Image, format: Format, quality: u8) -> Result<(Vec<u8>, &'static str), ImagingError> {
    use image::codecs::{jpeg::JpegEncoder, png::PngEncoder};
    use image::ImageEncoder;
    let mut out = Vec::with_capacity(img.rgb.len() / 8);
    let (w, h, rgb) = (img.width, img.height, image::ExtendedColorType::Rgb8);
    let done = match format {
        Format::Jpeg => JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100)).write_image(&img.rgb, w, h, rgb),
        Format::Png => PngEncoder::new(&mut out).write_image(&img.rgb, w, h, rgb),
    };
    done.map_err(|e| ImagingError::Corrupt(format!("cannot encode: {e}")))?;
    Ok((out, if format == Format::Jpeg { "image/jpeg" } else { "image/png" }))
}

/// Computes where an image of `w`x`h` goes inside the model input.
pub fn place(w: u32, h: u32, spec: &TensorSpec) -> Placement {
    match spec.fit {
        Fit::Stretch => Placement {
            scale_x: spec.width as f32 / w as f32,
            scale_y: spec.height as f32 / h as f32,
            pad_x: 0,
            pad_y: 0,
            inner_w: spec.width,
            inner_h: spec.height,
        },
        Fit::Letterbox => {
            let scale = f64::min(spec.width as f64 / w as f64, spec.height as f64 / h as f64);
            let inner_w = ((w as f64 * scale).round() as u32).clamp(1, spec.width);
            let inner_h = ((h as f64 * scale).round() as u32).clamp(1, spec.height);
            Placement {
                scale_x: inner_w as f32 / w as f32,
                scale_y: inner_h as f32 / h as f32,
                pad_x: (spec.width - inner_w) / 2,
                pad_y: (spec.height - inner_h) / 2,
                inner_w,
                inner_h,
            }
        }
    }
}

/// Resizes, places and normalises `img` into a new `[1, ...]` tensor.
pub fn to_tensor(img: &Image, spec: &TensorSpec) -> Result<(Tensor, Placement), ImagingError> {
    if spec.width == 0 || spec.height == 0 || spec.width > 8192 || spec.height > 8192 {
        return Err(ImagingError::BadSpec(format!("input size {}x{} is out of range", spec.width, spec.height)));
    }
    let p = place(img.width, img.height, spec);
    let resized = resize(img, p.inner_w, p.inner_h)?;
    let (w, h) = (spec.width as usize, spec.height as usize);
    let dims = match spec.layout {
        Layout::Nhwc => vec![1, spec.height, spec.width, 3],
        Layout::Nchw => vec![1, 3, spec.height, spec.width],
    };
    // Index of channel c of pixel (x, y) in the output buffer.
    let at = |x: usize, y: usize, c: usize| -> usize {
        let c = if spec.bgr { 2 - c } else { c };
        match spec.layout {
            Layout::Nhwc => (y * w + x) * 3 + c,
            Layout::Nchw => c * w * h + y * w + x,
        }
    };
    let pixel = |x: usize, y: usize| -> [u8; 3] {
        let (ix, iy) = (x.wrapping_sub(p.pad_x as usize), y.wrapping_sub(p.pad_y as usize));
        if ix < p.inner_w as usize && iy < p.inner_h as usize {
            let o = (iy * p.inner_w as usize + ix) * 3;
            [resized[o], resized[o + 1], resized[o + 2]]
        } else {
            [spec.pad; 3]
        }
    };
    let data = match spec.elem {
        Elem::U8 => {
            let mut out = vec![0u8; w * h * 3];
            fill(w, h, &pixel, |x, y, c, v| out[at(x, y, c)] = v);
            TensorData::U8(out)
        }
        Elem::F32 => {
            let mut out = vec![0f32; w * h * 3];
            // A lookup table per channel: 256 divisions instead of one per value.
            let lut: Vec<[f32; 256]> = (0..3)
                .map(|c| std::array::from_fn(|v| (v as f32 - spec.mean[c]) / spec.std[c]))
                .collect();
            fill(w, h, &pixel, |x, y, c, v| out[at(x, y, c)] = lut[c][v as usize]);
            TensorData::F32(out)
        }
    };
    let tensor = Tensor::new(dims, data).map_err(|e| ImagingError::BadSpec(e.to_string()))?;
    Ok((tensor, p))
}

fn fill(w: usize, h: usize, pixel: &impl Fn(usize, usize) -> [u8; 3], mut put: impl FnMut(usize, usize, usize, u8)) {
    for y in 0..h {
        for x in 0..w {
            let px = pixel(x, y);
            for (c, v) in px.into_iter().enumerate() {
                put(x, y, c, v);
            }
        }
    }
}

fn resize(img: &Image, w: u32, h: u32) -> Result<Vec<u8>, ImagingError> {
    if (w, h) == (img.width, img.height) {
        return Ok(img.rgb.clone());
    }
    let bad = |e: &dyn std::fmt::Display| ImagingError::BadSpec(format!("resize: {e}"));
    let src = fr::images::ImageRef::new(img.width, img.height, &img.rgb, fr::PixelType::U8x3).map_err(|e| bad(&e))?;
    let mut dst = fr::images::Image::new(w, h, fr::PixelType::U8x3);
    let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    fr::Resizer::new().resize(&src, &mut dst, &options).map_err(|e| bad(&e))?;
    Ok(dst.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(width: u32, height: u32, fit: Fit) -> TensorSpec {
        TensorSpec {
            width,
            height,
            fit,
            pad: 114,
            layout: Layout::Nhwc,
            bgr: false,
            elem: Elem::U8,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    #[test]
    fn letterbox_of_a_wide_photo_pads_top_and_bottom() {
        // 768x576 (darknet's dog.jpg) into 640x640: scale 5/6, 640x480, 80 rows of pad each side.
        let p = place(768, 576, &spec(640, 640, Fit::Letterbox));
        assert_eq!((p.inner_w, p.inner_h, p.pad_x, p.pad_y), (640, 480, 0, 80));
        assert!((p.scale_x - 640.0 / 768.0).abs() < 1e-6);
        assert!((p.scale_y - 480.0 / 576.0).abs() < 1e-6);
    }

    #[test]
    fn letterbox_of_a_tall_photo_pads_left_and_right() {
        let p = place(300, 600, &spec(300, 300, Fit::Letterbox));
        assert_eq!((p.inner_w, p.inner_h, p.pad_x, p.pad_y), (150, 300, 75, 0));
    }

    #[test]
    fn stretch_scales_axes_independently() {
        let p = place(451, 300, &spec(280, 280, Fit::Stretch));
        assert_eq!((p.pad_x, p.pad_y, p.inner_w, p.inner_h), (0, 0, 280, 280));
        assert!((p.scale_x - 280.0 / 451.0).abs() < 1e-6);
    }

    #[test]
    fn tensor_has_padding_and_normalised_pixels() {
        // A 2x1 white image into a 4x4 letterbox: rows 0 and 3 are padding.
        let img = Image { width: 2, height: 1, rgb: vec![255; 6] };
        let mut s = spec(4, 4, Fit::Letterbox);
        s.elem = Elem::F32;
        s.std = [255.0; 3];
        s.layout = Layout::Nchw;
        let (t, p) = to_tensor(&img, &s).unwrap();
        assert_eq!(t.dims, vec![1, 3, 4, 4]);
        assert_eq!((p.pad_x, p.pad_y, p.inner_w, p.inner_h), (0, 1, 4, 2));
        let TensorData::F32(v) = t.data else { panic!("f32 tensor") };
        assert!((v[0] - 114.0 / 255.0).abs() < 1e-6, "top row is padding");
        assert!((v[4] - 1.0).abs() < 1e-6, "second row is the white image");
    }

    #[test]
    fn bgr_swaps_channels() {
        let img = Image { width: 1, height: 1, rgb: vec![10, 20, 30] };
        let mut s = spec(1, 1, Fit::Stretch);
        s.bgr = true;
        let (t, _) = to_tensor(&img, &s).unwrap();
        assert_eq!(t.data, TensorData::U8(vec![30, 20, 10]));
    }

    #[test]
    fn a_jpeg_without_its_end_marker_is_truncated() {
        assert!(has_jpeg_end(&[0xff, 0xd8, 1, 2, 0xff, 0xd9]));
        assert!(has_jpeg_end(&[0xff, 0xd8, 1, 2, 0xff, 0xd9, 0, 0]));
        assert!(!has_jpeg_end(&[0xff, 0xd8, 1, 2, 3, 4]));
    }

    #[test]
    fn text_is_not_an_image() {
        assert_eq!(decode(b"hello, this is text", 1 << 20).err(), Some(ImagingError::Unsupported));
    }
}
