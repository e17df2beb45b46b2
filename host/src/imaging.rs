//! Native image work behind the `imaging` interface: decode (JPEG, PNG, WebP,
//! EXIF orientation) and resize/letterbox/normalise into a model tensor.
//!
//! Done in the host, with SIMD, because it is the largest cost left beside the
//! model (DESIGN.md: 2.8 ms native vs 5.3 ms in wasm for a 768x576 JPEG); the
//! plugin still decides every parameter.
//!
//! [`decode_to_tensor`] is for a stage that keeps no pixels: knowing the
//! model input, it may decode a large JPEG at a reduced scale (`jpeg`), and
//! still reports the source size and a placement in the client's pixels.

use std::io::Cursor;

use fast_image_resize as fr;
use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::nn::{Tensor, TensorData};

mod jpeg;
mod scans;
pub mod mjpeg;

/// A stream's RGB frame as a JPEG for a route (libjpeg-turbo, 4:2:0).
pub fn encode_frame(width: u32, height: u32, rgb: &[u8], quality: u8) -> Result<Vec<u8>, ImagingError> {
    jpeg::encode(width, height, rgb, quality)
}

/// A JPEG frame of a stream decoded to RGB at 1/`denom` of its size
/// (1, 2, 4 or 8), in the orientation stored: frames from ffmpeg carry no EXIF.
pub fn decode_frame(bytes: &[u8], denom: u32) -> Result<Image, ImagingError> {
    let rgb = jpeg::decode_scaled(bytes, denom)?.ok_or(ImagingError::Unsupported)?;
    let (width, height) = rgb.dimensions();
    Ok(Image { width, height, rgb: rgb.into_raw() })
}

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
    decode_at(bytes, max_pixels, |_, _| 1).map(|(image, _)| image)
}

/// Decodes an upload straight into a model input: a JPEG much larger than
/// the place it gets in the input is decoded at 1/2, 1/4 or 1/8 (never below
/// that place's size). Returns the tensor, the placement and the source size
/// (after EXIF orientation), both in the pixels the client sent, as
/// [`decode`] then [`to_tensor`] would.
pub fn decode_to_tensor(bytes: &[u8], max_pixels: u64, spec: &TensorSpec) -> Result<(Tensor, Placement, (u32, u32)), ImagingError> {
    check_spec(spec)?;
    let (image, source) = decode_at(bytes, max_pixels, |w, h| {
        let p = place(w, h, spec);
        jpeg::denominator(w, h, p.inner_w, p.inner_h)
    })?;
    // Placed by the full size, so boxes map back onto the client's pixels.
    let p = place(source.0, source.1, spec);
    Ok((fill_tensor(&image, spec, &p)?, p, source))
}

/// Decodes an upload at 1/`denominator(w, h)` of its size when it is a JPEG
/// (w x h: the size after EXIF orientation); also returns that full size.
fn decode_at(
    bytes: &[u8],
    max_pixels: u64,
    denominator: impl FnOnce(u32, u32) -> u32,
) -> Result<(Image, (u32, u32)), ImagingError> {
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
    if reader.format() == Some(image::ImageFormat::Jpeg) && scans::count(bytes, scans::MAX_SCANS + 1) > scans::MAX_SCANS {
        return Err(ImagingError::Corrupt(format!("the JPEG has more than {} scans; encoders write at most about 20", scans::MAX_SCANS)));
    }
    let is_jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let (decoder, width, height, orientation) = caught(|| {
        let mut decoder = reader.into_decoder().map_err(corrupt)?;
        let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
        let (width, height) = decoder.dimensions();
        Ok((decoder, width, height, orientation))
    })
    .unwrap_or_else(|()| Err(ImagingError::Corrupt("the decoder failed on its header".into())))?;
    // The limit is on the declared size, whatever scale the pixels come at.
    check_pixels(width, height, max_pixels)?;
    let source = oriented(width, height, orientation);
    let denom = if is_jpeg { denominator(source.0, source.1) } else { 1 };
    // libjpeg-turbo stops at damage that zune-jpeg decodes through (it fails
    // on warnings): the full decoder then has the last word, as before.
    let scaled = if denom > 1 { jpeg::decode_scaled(bytes, denom).ok().flatten() } else { None };
    let mut img = match scaled {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => match caught(|| DynamicImage::from_decoder(decoder)) {
            Ok(decoded) => decoded.map_err(corrupt)?,
            // A JPEG zune-jpeg panics on: libjpeg-turbo decodes the valid ones.
            Err(()) if is_jpeg => jpeg::decode_scaled(bytes, denom)?
                .map(DynamicImage::ImageRgb8)
                .ok_or_else(|| ImagingError::Corrupt("the JPEG decoder failed on it".into()))?,
            Err(()) => return Err(ImagingError::Corrupt("the decoder failed on it".into())),
        },
    };
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    Ok((Image { width: rgb.width(), height: rgb.height(), rgb: rgb.into_raw() }, source))
}

/// Runs a step of the `image` crate's decoders so that a panic inside one
/// fails this image, not the request's task: zune-jpeg 0.5.15, its JPEG
/// decoder, panics (an unwrap in its AVX2 IDCT) on some JPEGs, valid ones
/// among them that libjpeg-turbo decodes (one scan per component, a chroma
/// sampled finer than luma), as `make fuzz` found. `Err` when it panicked;
/// the panic's own message still goes to stderr.
fn caught<T>(step: impl FnOnce() -> T) -> Result<T, ()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step))
        .map_err(|_| tracing::warn!("an image decoder panicked on an upload (a bug of the decoder, caught)"))
}

/// The size an image shows at once its EXIF orientation is applied.
fn oriented(width: u32, height: u32, orientation: image::metadata::Orientation) -> (u32, u32) {
    use image::metadata::Orientation::*;
    match orientation {
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH => (height, width),
        NoTransforms | Rotate180 | FlipHorizontal | FlipVertical => (width, height),
    }
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
    check_spec(spec)?;
    let p = place(img.width, img.height, spec);
    Ok((fill_tensor(img, spec, &p)?, p))
}

fn check_spec(spec: &TensorSpec) -> Result<(), ImagingError> {
    if spec.width == 0 || spec.height == 0 || spec.width > 8192 || spec.height > 8192 {
        return Err(ImagingError::BadSpec(format!("input size {}x{} is out of range", spec.width, spec.height)));
    }
    Ok(())
}

/// Resizes `img` to the placement's inner size and writes it, padded and
/// normalised, into a new tensor. `p` may have been computed for the full
/// size of a photo that `img` holds at a reduced scale.
fn fill_tensor(img: &Image, spec: &TensorSpec, p: &Placement) -> Result<Tensor, ImagingError> {
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
    Tensor::new(dims, data).map_err(|e| ImagingError::BadSpec(e.to_string()))
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

    /// A `w`x`h` JPEG, black with a white rectangle over `rect` (x0, y0, x1, y1),
    /// carrying an EXIF orientation tag when `orientation` is set.
    fn jpeg(w: u32, h: u32, rect: (u32, u32, u32, u32), orientation: Option<u16>) -> Vec<u8> {
        use image::ImageEncoder;
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let inside = (rect.0..rect.2).contains(&x) && (rect.1..rect.3).contains(&y);
            image::Rgb(if inside { [255; 3] } else { [0; 3] })
        });
        let mut out = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
        if let Some(o) = orientation {
            // A big-endian TIFF header and one IFD entry: 0x0112 Orientation, SHORT, 1 value.
            let mut exif = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
            exif.extend_from_slice(&[(o >> 8) as u8, o as u8, 0, 0, 0, 0, 0, 0]);
            encoder.set_exif_metadata(exif).unwrap();
        }
        encoder.write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8).unwrap();
        out
    }

    /// The u8 value of channel 0 at input pixel (x, y) of an NHWC tensor `w` wide.
    fn at(t: &Tensor, w: u32, x: u32, y: u32) -> u8 {
        let TensorData::U8(v) = &t.data else { panic!("u8 tensor") };
        v[((y * w + x) * 3) as usize]
    }

    #[test]
    fn a_big_jpeg_for_a_small_input_is_placed_in_the_clients_pixels() {
        // 2000x1500 into a 300x300 letterbox: decoded at 1/4 (500x375), but the
        // size and placement are those of the full photo.
        let bytes = jpeg(2000, 1500, (1000, 300, 1400, 700), None);
        let s = spec(300, 300, Fit::Letterbox);
        let (scaled, p, source) = decode_to_tensor(&bytes, 1 << 30, &s).unwrap();
        assert_eq!(source, (2000, 1500));
        assert_eq!((p.inner_w, p.inner_h, p.pad_x, p.pad_y), (300, 225, 0, 37));
        assert!((p.scale_x - 0.15).abs() < 1e-6 && (p.scale_y - 0.15).abs() < 1e-6);
        // The rectangle's centre (1200, 500) lands at 1200 * 0.15, 500 * 0.15 + 37.
        assert!(at(&scaled, 300, 180, 112) > 240, "inside the rectangle");
        assert!(at(&scaled, 300, 60, 112) < 15, "left of it");
        assert_eq!(at(&scaled, 300, 150, 10), 114, "padding");
        // Against a full decode: the same tensor, give or take the filters.
        let (full, full_p) = to_tensor(&decode(&bytes, 1 << 30).unwrap(), &s).unwrap();
        assert_eq!(full_p, p);
        let (TensorData::U8(a), TensorData::U8(b)) = (&scaled.data, &full.data) else { panic!("u8") };
        let mean_diff = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as f64).sum::<f64>() / a.len() as f64;
        assert!(mean_diff < 2.0, "mean difference {mean_diff} levels");
    }

    #[test]
    fn exif_orientation_holds_on_a_scaled_decode() {
        // Stored 1500 wide, 2000 high, tagged 6 (turn 90 degrees clockwise to
        // show): shown 2000x1500. Stored (x, y) shows at (1999 - y, x), so
        // the stored rectangle x 300..700, y 1000..1400 shows at x 600..1000, y 300..700.
        let bytes = jpeg(1500, 2000, (300, 1000, 700, 1400), Some(6));
        let s = spec(300, 300, Fit::Letterbox);
        let (t, p, source) = decode_to_tensor(&bytes, 1 << 30, &s).unwrap();
        assert_eq!(source, (2000, 1500));
        assert_eq!((p.inner_w, p.inner_h, p.pad_y), (300, 225, 37));
        // Its centre (800, 500) lands at 800 * 0.15, 500 * 0.15 + 37.
        assert!(at(&t, 300, 120, 112) > 240, "the rectangle, turned");
        assert!(at(&t, 300, 200, 112) < 15 && at(&t, 300, 120, 200) < 15, "around it");
        // The same as the full decode, which `decode` applies the tag to as well.
        let full = decode(&bytes, 1 << 30).unwrap();
        assert_eq!((full.width, full.height), (2000, 1500));
    }

    #[test]
    fn the_pixel_limit_is_on_the_declared_size_not_the_scaled_one() {
        // 4000x3000 = 12 MP would decode at 1/8 to 500x375 for a 300x300 input;
        // a 10 MP limit still refuses it.
        let bytes = jpeg(4000, 3000, (0, 0, 1, 1), None);
        let err = decode_to_tensor(&bytes, 10_000_000, &spec(300, 300, Fit::Stretch)).unwrap_err();
        assert!(matches!(err, ImagingError::TooLarge { width: 4000, height: 3000, .. }), "{err}");
    }

    #[test]
    fn small_photos_and_pngs_decode_in_full() {
        // 768x576 into 640x640 (dog.jpg and YOLO): the same tensor both ways.
        let bytes = jpeg(768, 576, (100, 100, 300, 300), None);
        let s = spec(640, 640, Fit::Letterbox);
        let (t, p, source) = decode_to_tensor(&bytes, 1 << 30, &s).unwrap();
        let (full, full_p) = to_tensor(&decode(&bytes, 1 << 30).unwrap(), &s).unwrap();
        assert_eq!((source, p), ((768, 576), full_p));
        assert_eq!(t.data, full.data);
    }

    /// One baseline scan per component, chroma (Cr) sampled 4x1 against luma's
    /// 1x1: valid (libjpeg-turbo's `djpeg` decodes it; made by `cjpeg -sample
    /// 1x1,1x1,4x1` with a scan script of `0;1;2;` from a 48x32 gradient
    /// whose pixel (x, y) is (5x, 7y, 3(x + y))), but zune-jpeg panics on it.
    const ZUNE_PANICS_ON: &[u8] = include_bytes!("../fuzz/regressions/image/zune-jpeg-idct-panic-separate-scans-chroma-4x1.jpg");

    #[test]
    fn zune_jpeg_idct_panic_on_a_valid_jpeg_decodes_with_libjpeg_turbo() {
        let img = decode(ZUNE_PANICS_ON, 1 << 20).unwrap();
        assert_eq!((img.width, img.height), (48, 32));
        let mut diff = 0u64;
        for (i, px) in img.rgb.chunks(3).enumerate() {
            let (x, y) = (i as u32 % 48, i as u32 / 48);
            let want = [5 * x, 7 * y, 3 * (x + y)];
            diff += px.iter().zip(want).map(|(&got, w)| u64::from(got).abs_diff(u64::from(w))).sum::<u64>();
        }
        let mean = diff as f64 / img.rgb.len() as f64;
        assert!(mean < 6.0, "mean difference {mean} levels from the gradient");
        let (t, _, source) = decode_to_tensor(ZUNE_PANICS_ON, 1 << 20, &spec(32, 32, Fit::Letterbox)).unwrap();
        assert_eq!((source, t.dims.clone()), ((48, 32), vec![1, 32, 32, 3]));
    }

    #[test]
    fn zune_jpeg_idct_panic_on_a_damaged_jpeg_is_refused() {
        // What the fuzzer found: two frame headers, the first with that
        // sampling, and a damaged table; libjpeg-turbo refuses it too.
        let bytes = include_bytes!("../fuzz/regressions/image/zune-jpeg-idct-panic-two-frame-headers.jpg");
        assert!(matches!(decode(bytes, 1 << 20), Err(ImagingError::Corrupt(_))));
    }

    #[test]
    fn text_is_not_an_image() {
        assert_eq!(decode(b"hello, this is text", 1 << 20).err(), Some(ImagingError::Unsupported));
    }
}
