//! Drawing primitives over an 8-bit RGB buffer, and WCAG contrast.
//!
//! A [`Canvas`] borrows the pixels `imaging.pixels` returned (row by row,
//! three bytes a pixel) and clips every shape to the image: coordinates are
//! `i64`, so shapes may start far outside the image, or be empty or
//! inverted, without a check at each call site.

use std::fmt;

use crate::font::{self, ADVANCE, GLYPH_H, GLYPH_W};

/// A colour, `[r, g, b]`.
pub type Rgb = [u8; 3];

pub const BLACK: Rgb = [0, 0, 0];
pub const WHITE: Rgb = [255, 255, 255];

/// A rectangle of pixels: columns `x0..x1`, rows `y0..y1` (ends excluded).
/// Empty when `x1 <= x0` or `y1 <= y0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x0: i64,
    pub y0: i64,
    pub x1: i64,
    pub y1: i64,
}

impl Rect {
    /// The rectangle of `width` x `height` pixels at (`x`, `y`).
    pub fn at(x: i64, y: i64, width: i64, height: i64) -> Self {
        Rect {
            x0: x,
            y0: y,
            x1: x + width,
            y1: y + height,
        }
    }

    /// The rectangle grown by `d` pixels on every side (shrunk if negative).
    pub fn grow(self, d: i64) -> Self {
        Rect {
            x0: self.x0 - d,
            y0: self.y0 - d,
            x1: self.x1 + d,
            y1: self.y1 + d,
        }
    }

    pub fn width(&self) -> i64 {
        self.x1 - self.x0
    }

    pub fn height(&self) -> i64 {
        self.y1 - self.y0
    }
}

/// The pixel buffer does not match the image size it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeMismatch {
    pub len: usize,
    pub width: u32,
    pub height: u32,
}

impl fmt::Display for SizeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes of pixels for a {}x{} RGB image (expected {})",
            self.len,
            self.width,
            self.height,
            self.width as u64 * self.height as u64 * 3
        )
    }
}

/// An RGB image being drawn on.
pub struct Canvas<'a> {
    rgb: &'a mut [u8],
    width: i64,
    height: i64,
}

impl<'a> Canvas<'a> {
    /// A canvas over `rgb`, which must hold exactly `width * height * 3` bytes.
    pub fn new(rgb: &'a mut [u8], width: u32, height: u32) -> Result<Self, SizeMismatch> {
        if rgb.len() as u64 != width as u64 * height as u64 * 3 {
            return Err(SizeMismatch {
                len: rgb.len(),
                width,
                height,
            });
        }
        Ok(Canvas {
            rgb,
            width: width.into(),
            height: height.into(),
        })
    }

    pub fn width(&self) -> u32 {
        self.width as u32
    }

    pub fn height(&self) -> u32 {
        self.height as u32
    }

    /// The part of `r` inside the image, as column and row ranges; `None`
    /// when nothing of it is.
    fn clip(&self, r: Rect) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
        let (x0, x1) = (r.x0.max(0), r.x1.min(self.width));
        let (y0, y1) = (r.y0.max(0), r.y1.min(self.height));
        (x0 < x1 && y0 < y1).then_some((x0 as usize..x1 as usize, y0 as usize..y1 as usize))
    }

    /// Applies `paint` to every pixel of `r` inside the image.
    fn each_pixel(&mut self, r: Rect, mut paint: impl FnMut(&mut [u8])) {
        let Some((cols, rows)) = self.clip(r) else {
            return;
        };
        let stride = self.width as usize * 3;
        for y in rows {
            let row = &mut self.rgb[y * stride + cols.start * 3..y * stride + cols.end * 3];
            row.chunks_exact_mut(3).for_each(&mut paint);
        }
    }

    /// Paints `r` in `colour`.
    pub fn fill(&mut self, r: Rect, colour: Rgb) {
        self.each_pixel(r, |px| px.copy_from_slice(&colour));
    }

    /// Lays `colour` over `r` with opacity `alpha` (0 keeps the image, 255
    /// is [`Canvas::fill`]).
    pub fn blend(&mut self, r: Rect, colour: Rgb, alpha: u8) {
        let (a, keep) = (u16::from(alpha), 255 - u16::from(alpha));
        self.each_pixel(r, |px| {
            for (p, &c) in px.iter_mut().zip(&colour) {
                *p = ((u16::from(*p) * keep + u16::from(c) * a + 127) / 255) as u8;
            }
        });
    }

    /// A frame of `width` pixels along the inside of `r`'s edges.
    pub fn outline(&mut self, r: Rect, width: i64, colour: Rgb) {
        if width <= 0 || r.width() <= 0 || r.height() <= 0 {
            return;
        }
        // Each band is cut at the far edge: a frame wider than half the box
        // fills it, and never spills out.
        let w = width;
        self.fill(
            Rect {
                y1: r.y1.min(r.y0 + w),
                ..r
            },
            colour,
        );
        self.fill(
            Rect {
                y0: r.y0.max(r.y1 - w),
                ..r
            },
            colour,
        );
        let middle = Rect {
            y0: r.y0 + w,
            y1: r.y1 - w,
            ..r
        };
        self.fill(
            Rect {
                x1: r.x1.min(r.x0 + w),
                ..middle
            },
            colour,
        );
        self.fill(
            Rect {
                x0: r.x0.max(r.x1 - w),
                ..middle
            },
            colour,
        );
    }

    /// Writes `text` with its cell's top-left corner at (`x`, `y`), each font
    /// unit a `scale` x `scale` square.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, colour: Rgb) {
        let s = i64::from(scale.max(1));
        let (advance, glyph_h) = (i64::from(ADVANCE) * s, i64::from(GLYPH_H) * s);
        let mut gx = x;
        for c in text.chars() {
            // Characters wholly outside the image cost nothing more.
            if gx >= self.width || y >= self.height {
                break;
            }
            if gx + advance > 0 && y + glyph_h > 0 {
                self.glyph(gx, y, font::glyph(c), s, colour);
            }
            gx += advance;
        }
    }

    fn glyph(&mut self, x: i64, y: i64, glyph: &font::Glyph, s: i64, colour: Rgb) {
        for (row, &bits) in (0..).zip(glyph) {
            let mut col = 0;
            while col < i64::from(GLYPH_W) {
                // A run of set bits is one rectangle, not one per bit.
                let on = |c: i64| c < i64::from(GLYPH_W) && bits & (0x10 >> c) != 0;
                if !on(col) {
                    col += 1;
                    continue;
                }
                let start = col;
                while on(col) {
                    col += 1;
                }
                let run = Rect::at(x + start * s, y + row * s, (col - start) * s, s);
                self.fill(run, colour);
            }
        }
    }

    /// The colour of pixel (`x`, `y`), which must be inside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Rgb {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

/// WCAG 2 relative luminance of an sRGB colour, 0 (black) to 1 (white).
pub fn luminance(c: Rgb) -> f64 {
    let linear = |v: u8| {
        let v = f64::from(v) / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * linear(c[0]) + 0.7152 * linear(c[1]) + 0.0722 * linear(c[2])
}

/// WCAG 2 contrast ratio of two colours: 1 (same) to 21 (black on white).
pub fn contrast(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// Black or white, whichever contrasts more with `background`. One of them
/// always reaches 4.58:1, above WCAG's 4.5:1 for text.
pub fn ink_on(background: Rgb) -> Rgb {
    if contrast(BLACK, background) >= contrast(WHITE, background) {
        BLACK
    } else {
        WHITE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREY: Rgb = [128, 128, 128];
    const RED: Rgb = [255, 0, 0];

    fn image(w: u32, h: u32, colour: Rgb) -> Vec<u8> {
        colour.repeat((w * h) as usize)
    }

    /// The pixels of `canvas` equal to `colour`, as (x, y).
    fn painted(canvas: &Canvas, colour: Rgb) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for y in 0..canvas.height() {
            for x in 0..canvas.width() {
                if canvas.pixel(x, y) == colour {
                    out.push((x, y));
                }
            }
        }
        out
    }

    #[test]
    fn a_buffer_of_the_wrong_size_is_refused() {
        let mut buf = vec![0; 10];
        let e = Canvas::new(&mut buf, 2, 2).err().unwrap();
        assert_eq!(
            e.to_string(),
            "10 bytes of pixels for a 2x2 RGB image (expected 12)"
        );
        assert!(Canvas::new(&mut [], 0, 5).is_ok());
    }

    #[test]
    fn fill_is_clipped_to_the_image() {
        let mut buf = image(4, 3, GREY);
        let mut c = Canvas::new(&mut buf, 4, 3).unwrap();
        c.fill(
            Rect {
                x0: -5,
                y0: 2,
                x1: 2,
                y1: 99,
            },
            RED,
        );
        assert_eq!(painted(&c, RED), [(0, 2), (1, 2)]);
        for r in [
            Rect {
                x0: 4,
                y0: 0,
                x1: 9,
                y1: 3,
            },
            Rect {
                x0: 0,
                y0: -9,
                x1: 4,
                y1: 0,
            },
            Rect {
                x0: 3,
                y0: 2,
                x1: 1,
                y1: 1,
            },
            Rect {
                x0: i64::MIN / 2,
                y0: i64::MIN / 2,
                x1: i64::MIN / 4,
                y1: 0,
            },
        ] {
            c.fill(r, BLACK);
        }
        assert!(painted(&c, BLACK).is_empty());
    }

    #[test]
    fn outline_draws_inside_the_edges() {
        let mut buf = image(10, 8, GREY);
        let mut c = Canvas::new(&mut buf, 10, 8).unwrap();
        c.outline(
            Rect {
                x0: 2,
                y0: 1,
                x1: 8,
                y1: 7,
            },
            2,
            RED,
        );
        let red = painted(&c, RED);
        for (x, y) in [
            (2, 1),
            (7, 1),
            (2, 6),
            (7, 6),
            (3, 2),
            (6, 5),
            (4, 2),
            (2, 4),
        ] {
            assert!(red.contains(&(x, y)), "({x}, {y}) not painted");
        }
        // The hole is 2x2, the outside untouched: 36 - 4 pixels.
        assert_eq!(red.len(), 32);
        assert!(!red.contains(&(4, 3)) && !red.contains(&(5, 4)));
        assert!(red
            .iter()
            .all(|&(x, y)| (2..8).contains(&x) && (1..7).contains(&y)));
    }

    #[test]
    fn an_outline_wider_than_the_box_fills_it() {
        let mut buf = image(6, 6, GREY);
        let mut c = Canvas::new(&mut buf, 6, 6).unwrap();
        c.outline(Rect::at(1, 1, 3, 2), 5, RED);
        assert_eq!(painted(&c, RED).len(), 6);
    }

    #[test]
    fn blend_mixes_by_alpha() {
        let mut buf = image(2, 1, WHITE);
        let mut c = Canvas::new(&mut buf, 2, 1).unwrap();
        c.blend(Rect::at(0, 0, 1, 1), BLACK, 255);
        c.blend(Rect::at(1, 0, 1, 1), [0, 0, 255], 128);
        assert_eq!(c.pixel(0, 0), BLACK);
        assert_eq!(c.pixel(1, 0), [127, 127, 255]);
    }

    #[test]
    fn text_sets_the_glyph_bits_at_scale() {
        let mut buf = image(20, 20, WHITE);
        let mut c = Canvas::new(&mut buf, 20, 20).unwrap();
        // "-" is row 3, columns 0..5: at scale 2 from (1, 1), rows 7..9.
        c.text(1, 1, "-", 2, BLACK);
        let black = painted(&c, BLACK);
        assert_eq!(black.len(), 10 * 2);
        assert!(black
            .iter()
            .all(|&(x, y)| (1..11).contains(&x) && (7..9).contains(&y)));
    }

    #[test]
    fn text_past_the_edges_is_clipped() {
        let mut buf = image(8, 8, WHITE);
        let mut c = Canvas::new(&mut buf, 8, 8).unwrap();
        for (x, y) in [
            (-7, -7),
            (5, 5),
            (-1_000_000, 3),
            (i64::MAX / 4, 0),
            (0, i64::MIN / 4),
        ] {
            c.text(x, y, "WWW gjq", 3, BLACK);
        }
        assert!(!painted(&c, BLACK).is_empty());
    }

    #[test]
    fn contrast_follows_wcag() {
        assert!((contrast(BLACK, WHITE) - 21.0).abs() < 1e-9);
        assert!((contrast(WHITE, BLACK) - 21.0).abs() < 1e-9);
        assert!((contrast(RED, RED) - 1.0).abs() < 1e-9);
        // Known value: #777777 on white is 4.48:1.
        assert!((contrast([0x77; 3], WHITE) - 4.48).abs() < 0.01);
        assert_eq!(ink_on(WHITE), BLACK);
        assert_eq!(ink_on([0, 0, 128]), WHITE);
        assert_eq!(ink_on([255, 255, 0]), BLACK);
    }

    #[test]
    fn ink_always_reaches_text_contrast() {
        for v in (0..=255u8).step_by(5) {
            for c in [
                [v, v, v],
                [v, 0, 0],
                [0, v, 0],
                [0, 0, v],
                [v, 255 - v, 128],
            ] {
                assert!(contrast(ink_on(c), c) >= 4.5, "{c:?}");
            }
        }
    }
}
