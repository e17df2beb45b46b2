//! JPEG decoded at a reduced DCT scale, for a photo much larger than the
//! model input it is bound for.
//!
//! libjpeg-turbo (through the `turbojpeg` crate) can run its inverse DCT at
//! 1/2, 1/4 or 1/8 of the size, so a 12 MP phone photo meant for a 640x640
//! letterbox never becomes 36 MB of pixels. Measured on this machine's kind
//! (2 cores, busy; CPU ms per decode of the 4032x3024 test photo, median of
//! 21): zune-jpeg in full 61, libjpeg-turbo at 1/4 21-25 and at 1/8 16-19;
//! the pure-Rust `jpeg-decoder` at 1/4 35-45 and at 1/8 30-37, and it starts
//! three threads per decode. Entropy decoding is the floor: every coefficient
//! is still read, whatever the scale.
//!
//! Memory follows the scaled size: the output buffer is allocated at it, and
//! libjpeg-turbo works through a baseline JPEG one row of blocks at a time. A
//! progressive JPEG keeps all its coefficients (2 bytes a sample at the full
//! size) until its last scan, whatever the scale; so does every decoder.

use image::RgbImage;
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};

use super::ImagingError;

/// The reduced scales libjpeg's DCT offers, smallest first.
const DENOMINATORS: [u32; 3] = [8, 4, 2];

/// The largest reduction (1/8, 1/4, 1/2, else 1) that keeps a `width` x
/// `height` photo at least `min_w` x `min_h`: the resize that follows must
/// only shrink, or the scaled decode would lose detail a full decode keeps.
pub fn denominator(width: u32, height: u32, min_w: u32, min_h: u32) -> u32 {
    DENOMINATORS
        .into_iter()
        .find(|&d| scaled(width, d) >= min_w && scaled(height, d) >= min_h)
        .unwrap_or(1)
}

/// The side libjpeg makes of `side` at 1/`denom` (rounded up: a partial
/// block still gives a pixel).
pub fn scaled(side: u32, denom: u32) -> u32 {
    side.div_ceil(denom)
}

/// Decodes `bytes` at 1/`denom` into RGB, in the orientation stored (EXIF is
/// the caller's). `None` when libjpeg-turbo cannot scale this one (lossless
/// or CMYK JPEGs, rare from cameras): the caller decodes it in full.
pub fn decode_scaled(bytes: &[u8], denom: u32) -> Result<Option<RgbImage>, ImagingError> {
    let failed = |e: turbojpeg::Error| ImagingError::Corrupt(e.to_string());
    let mut decompressor = Decompressor::new().map_err(failed)?;
    let header = decompressor.read_header(bytes).map_err(failed)?;
    if header.is_lossless || matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK) {
        return Ok(None);
    }
    let factor = ScalingFactor::new(1, denom as usize);
    decompressor.set_scaling_factor(factor).map_err(failed)?;
    let size = header.scaled(factor);
    let mut out = Image {
        pixels: vec![0u8; size.width * size.height * 3],
        width: size.width,
        pitch: size.width * 3,
        height: size.height,
        format: PixelFormat::RGB,
    };
    decompressor.decompress(bytes, out.as_deref_mut()).map_err(failed)?;
    let rgb = RgbImage::from_raw(size.width as u32, size.height as u32, out.pixels)
        .ok_or_else(|| ImagingError::Corrupt("scaled decode gave a short buffer".into()))?;
    Ok(Some(rgb))
}

/// Encodes RGB8 pixels as a baseline JPEG with libjpeg-turbo (4:2:0).
pub fn encode(width: u32, height: u32, rgb: &[u8], quality: u8) -> Result<Vec<u8>, ImagingError> {
    let failed = |e: turbojpeg::Error| ImagingError::Corrupt(format!("cannot encode: {e}"));
    let image = Image { pixels: rgb, width: width as usize, pitch: width as usize * 3, height: height as usize, format: PixelFormat::RGB };
    let mut c = turbojpeg::Compressor::new().map_err(failed)?;
    c.set_quality(i32::from(quality.clamp(1, 100))).map_err(failed)?;
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2).map_err(failed)?;
    c.compress_to_vec(image).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phone_photo_for_yolo_is_decoded_at_a_quarter() {
        // 4032x3024 letterboxed into 640x640 lands at 640x480: 1/4 gives
        // 1008x756, 1/8 would give 504x378 (an upscale).
        assert_eq!(denominator(4032, 3024, 640, 480), 4);
    }

    #[test]
    fn a_phone_photo_for_the_small_models_is_decoded_at_an_eighth() {
        // Stretched to 300x300 (SSD) or 280x280 (EfficientNet): 504x378 is enough.
        assert_eq!(denominator(4032, 3024, 300, 300), 8);
        assert_eq!(denominator(4032, 3024, 280, 280), 8);
        // Portrait: the same, turned.
        assert_eq!(denominator(3024, 4032, 300, 300), 8);
    }

    #[test]
    fn never_below_the_placed_size_on_either_axis() {
        // 2400 wide but only 600 high, stretched to 300x300: 1/2 (1200x300);
        // 1/4 would leave 150 rows for 300.
        assert_eq!(denominator(2400, 600, 300, 300), 2);
        // One pixel short at 1/2: stay in full.
        assert_eq!(denominator(1278, 960, 640, 480), 1);
        // Exactly the size at 1/2 is fine; rounding up counts (1281 / 2 -> 641).
        assert_eq!(denominator(1280, 960, 640, 480), 2);
        assert_eq!(denominator(1281, 961, 641, 481), 2);
        // dog.jpg (768x576) into 640: no reduction.
        assert_eq!(denominator(768, 576, 640, 480), 1);
    }

    #[test]
    fn sides_round_up_like_libjpeg() {
        assert_eq!(scaled(4032, 8), 504);
        assert_eq!(scaled(1001, 8), 126);
        assert_eq!(ScalingFactor::new(1, 8).scale(1001), 126);
    }

    #[test]
    fn a_scaled_decode_has_the_scaled_size_and_the_colours() {
        // A 64x48 JPEG, left half red, right half blue, made by the `image` crate.
        let mut img = RgbImage::new(64, 48);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < 32 { image::Rgb([220, 20, 20]) } else { image::Rgb([20, 20, 220]) };
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&img).unwrap();
        let quarter = decode_scaled(&jpeg, 4).unwrap().expect("a YCbCr JPEG scales");
        assert_eq!(quarter.dimensions(), (16, 12));
        let (left, right) = (quarter.get_pixel(2, 6).0, quarter.get_pixel(13, 6).0);
        assert!(left[0] > 180 && left[2] < 60, "left {left:?}");
        assert!(right[2] > 180 && right[0] < 60, "right {right:?}");
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        assert!(matches!(decode_scaled(&[0xff, 0xd8, 0xff, 0xe0, 0, 3, 1], 2), Err(ImagingError::Corrupt(_))));
    }
}
