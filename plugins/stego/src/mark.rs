//! The watermark on RGB8 pixels: embedding, and the blind check.
//!
//! The mark is a keyed pseudo-random pattern on a square grid of cells laid
//! over the image in *relative* coordinates (see [`crate::cells`]), so a
//! rescaled image keeps its grid. Each cell carries +-1: its chip times the
//! coded bit it is dealt ([`Pattern`]). The cells are scaled by a texture
//! mask (louder on busy areas, quieter on flat ones), upsampled bilinearly,
//! and added equally to R, G and B: the mark lives in luminance only, which
//! 4:2:0 video and JPEG keep best.
//!
//! Checking averages the luminance over each cell, predicts every cell from
//! its neighbours and keeps the difference (the image's content cancels, the
//! pattern does not), weighs the differences by their local spread,
//! correlates with each bit's chips, and decodes with soft Viterbi. A mark
//! is found when the CRC matches *and* the soft values agree well with the
//! decoded codeword ([`SCORE_THRESHOLD`]). On unmarked images the two are
//! independent: the CRC passes 2^-16 of random messages, the score guard
//! about 2e-3, so together, over two grids, they fire about 6e-8 of checks.
//!
//! Images whose shorter side is under 480 pixels get a 96 x 96 grid, larger
//! ones 128 x 128 (more cells, more votes per bit, where cells stay large
//! enough to survive compression). The checker does not know which one the
//! embedder chose from the original size, so it tries both.

use crate::cells::{self, Axis};
use crate::ecc;
use crate::pattern::Pattern;

/// The key that seeds the pattern when no other is configured. A mark can
/// only be read with the key it was embedded with; this constant is public
/// (it is in the source), so a deployment that wants its marks unreadable
/// by others sets its own `key`.
pub const DEFAULT_KEY: u64 = 0x4F53_5052_4559_5731; // "OSPREYW1"

/// RMS amplitude of the mark in 8-bit levels, per channel. 2.9 gives a PSNR
/// of about 38.8 dB (20 log10(255 / 2.9) = 38.9, less a little for rounding).
pub const DEFAULT_STRENGTH: f32 = 2.9;

/// Grid sizes (cells per side) the embedder picks from, and the checker tries.
pub const GRIDS: [u32; 2] = [96, 128];

/// A mark is reported only if [`Check::score`] reaches this. On unmarked
/// images the best of the 2^48 codewords fits the noise with a score of 0.54
/// on average, and reaches 0.6 about twice in a thousand (measured on
/// Gaussian noise and on the photos). Marks after JPEG q50, resizing by
/// 20 % or H.264 at 2 Mbit/s for 1080p score 0.8 and up (RESULTS.md).
pub const SCORE_THRESHOLD: f32 = 0.6;

/// Peak-to-RMS ratio of a bilinearly upsampled grid of independent +-1
/// values: their mean square is (2/3)^2.
const BILINEAR_PEAK: f32 = 1.5;

/// Texture masking: a cell's amplitude follows `(activity + MASK_FLOOR) ^
/// MASK_POWER` (activity: mean luminance step, in levels), normalised, and
/// is capped at `MASK_CAP` times the mean.
const MASK_FLOOR: f32 = 4.0;
const MASK_POWER: f32 = 0.75;
const MASK_CAP: f32 = 2.5;

/// What [`embed`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Embedded {
    /// PSNR of the marked pixels against the original, over R, G and B (dB;
    /// infinite when nothing changed).
    pub psnr_db: f64,
    /// Cells per side of the grid used.
    pub grid: u32,
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Check {
    /// A mark with a valid CRC and a score of at least [`SCORE_THRESHOLD`].
    pub found: bool,
    /// The decoded ID, when found.
    pub id: Option<u32>,
    /// Normalised correlation (-1..1) of the soft bits with the codeword the
    /// decoder chose: above 0.9 for a clean mark, about 0.54 for an unmarked
    /// image (the best of 2^48 codewords fits noise that well).
    pub score: f32,
    /// `score` mapped linearly onto 0..1 from the threshold to 0.9.
    pub confidence: f32,
    /// Share of the coded bits whose sign disagrees with the decoded
    /// codeword: an estimate of the raw bit error rate the code corrected.
    /// Meaningless when nothing was found.
    pub bit_errors: f32,
    /// Cells per side of the grid this result was read on.
    pub grid: u32,
}

/// The grid [`embed`] uses for an image of `width` x `height`.
pub fn grid_for(width: u32, height: u32) -> u32 {
    if width.min(height) < 480 {
        GRIDS[0]
    } else {
        GRIDS[1]
    }
}

/// Hides `id` in `rgb` (`width * height * 3` bytes, row by row) with the
/// pattern of `key`, at an RMS amplitude of about `strength` levels.
pub fn embed(
    rgb: &mut [u8],
    width: u32,
    height: u32,
    id: u32,
    strength: f32,
    key: u64,
) -> Embedded {
    let (w, h) = (width as usize, height as usize);
    assert_eq!(
        rgb.len(),
        w * h * 3,
        "rgb must hold width * height * 3 bytes"
    );
    let grid = grid_for(width, height);
    if rgb.is_empty() {
        return Embedded {
            psnr_db: f64::INFINITY,
            grid,
        };
    }
    let g = grid as usize;
    let peak = strength * BILINEAR_PEAK;
    let cells: Vec<f32> = Pattern::new(key, grid)
        .cells(&ecc::encode(id))
        .iter()
        .zip(masking(rgb, w, h, g))
        .map(|(v, m)| v * m * peak)
        .collect();
    let (xs, ys) = (Axis::new(w, g), Axis::new(h, g));
    let mut row = vec![0.0f32; g];
    let mut deltas = vec![0i32; w];
    let mut squared_error = 0u64;
    for (y, line) in rgb.chunks_exact_mut(w * 3).enumerate() {
        // Interpolate down the grid once per row, then along the row.
        let (j0, j1, ty) = ys.at(y);
        for (i, v) in row.iter_mut().enumerate() {
            let (a, b) = (cells[j0 * g + i], cells[j1 * g + i]);
            *v = a + (b - a) * ty;
        }
        for (x, d) in deltas.iter_mut().enumerate() {
            let (i0, i1, tx) = xs.at(x);
            *d = round(row[i0] + (row[i1] - row[i0]) * tx);
        }
        let mut row_error = 0u64;
        for (px, &d) in line.chunks_exact_mut(3).zip(&deltas) {
            for c in px {
                let new = (i32::from(*c) + d).clamp(0, 255);
                let e = (new - i32::from(*c)).unsigned_abs();
                row_error += u64::from(e * e);
                *c = new as u8;
            }
        }
        squared_error += row_error;
    }
    Embedded {
        psnr_db: psnr(squared_error, rgb.len()),
        grid,
    }
}

/// `v` rounded half away from zero. `f32::round` is a library call on
/// x86-64 without SSE4.1; this is an add and a truncating conversion.
fn round(v: f32) -> i32 {
    (v + 0.5f32.copysign(v)) as i32
}

/// How loud the mark may be in each cell: more where the image is busy (the
/// eye does not see noise on texture), less on flat areas such as sky or a
/// white cup. Normalised to a mean square of 1 before the cap, so the mark's
/// energy, and the PSNR, stay about what `strength` says.
fn masking(rgb: &[u8], w: usize, h: usize, g: usize) -> Vec<f32> {
    // Smoothed, so that the amplitude does not jump from cell to cell.
    let activity = cells::box3(&cells::activity(rgb, w, h, g), g);
    let mut mask: Vec<f32> = activity
        .iter()
        .map(|a| (a + MASK_FLOOR).powf(MASK_POWER))
        .collect();
    let mean_square = mask.iter().map(|m| m * m).sum::<f32>() / mask.len() as f32;
    let scale = mean_square.sqrt().recip();
    for m in &mut mask {
        *m = (*m * scale).min(MASK_CAP);
    }
    mask
}

/// PSNR in dB of 8-bit samples, from the summed squared error over `n` samples.
pub fn psnr(squared_error: u64, n: usize) -> f64 {
    if squared_error == 0 {
        return f64::INFINITY;
    }
    let mse = squared_error as f64 / n as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// The image as the detector sees it on one grid: one weighted residual per
/// cell. It does not depend on the key, so one observation serves any
/// number of keys (the false-positive bench tries thousands).
pub struct Observation {
    pub grid: u32,
    pub residual: Vec<f32>,
}

impl Observation {
    pub fn new(rgb: &[u8], width: u32, height: u32, grid: u32) -> Self {
        let (w, h, g) = (width as usize, height as usize, grid as usize);
        assert_eq!(
            rgb.len(),
            w * h * 3,
            "rgb must hold width * height * 3 bytes"
        );
        if rgb.is_empty() {
            // Nothing to see: all-zero residuals score 0, found nowhere.
            return Observation {
                grid,
                residual: vec![0.0; g * g],
            };
        }
        let means = cells::luminance(rgb, w, h, g);
        let residual = cells::normalise(&cells::high_pass(&means, g), g);
        Observation { grid, residual }
    }

    /// The soft coded bits of `key`'s pattern (positive: 1).
    pub fn soft_bits(&self, key: u64) -> Vec<f32> {
        Pattern::new(key, self.grid).soft_bits(&self.residual)
    }

    /// Decodes the mark of `key` on this grid, if there is one.
    pub fn check(&self, key: u64) -> Check {
        judge(&self.soft_bits(key), self.grid)
    }
}

/// The observations of `rgb` on every grid in [`GRIDS`].
pub fn observe(rgb: &[u8], width: u32, height: u32) -> Vec<Observation> {
    GRIDS
        .iter()
        .map(|&g| Observation::new(rgb, width, height, g))
        .collect()
}

/// The best reading of `key` over `observations`: a found mark if any grid
/// has one, else the highest-scoring miss.
pub fn check_observed(observations: &[Observation], key: u64) -> Check {
    observations
        .iter()
        .map(|o| o.check(key))
        .max_by(|a, b| {
            (a.found, a.score)
                .partial_cmp(&(b.found, b.score))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .expect("at least one grid")
}

/// Looks for a mark of `key` in `rgb` (`width * height * 3` bytes).
pub fn check(rgb: &[u8], width: u32, height: u32, key: u64) -> Check {
    check_observed(&observe(rgb, width, height), key)
}

/// Decodes soft coded bits and decides whether they carry a mark.
pub fn judge(soft: &[f32], grid: u32) -> Check {
    let bits = ecc::viterbi(soft);
    let word = bits.iter().fold(0u64, |acc, &b| (acc << 1) | u64::from(b));
    let candidate = (word >> 16) as u32;
    let crc_ok = ecc::crc16(&candidate.to_be_bytes()) == word as u16;
    // The codeword of the decoded path itself, CRC or not: re-encoding the
    // ID would recompute the CRC and, for a wrong one, give a codeword that
    // fits worse, which would make the score depend on the CRC. Taken from
    // the path, the score is independent of it on unmarked images (the code
    // is linear), so the two guards multiply.
    let coded = ecc::encode_message(&bits);
    let (mut dot, mut norm, mut errors) = (0.0f64, 0.0f64, 0usize);
    for (&s, &c) in soft.iter().zip(&coded) {
        let s = f64::from(s);
        dot += if c { s } else { -s };
        norm += s * s;
        errors += usize::from((s > 0.0) != c);
    }
    let score = if norm > 0.0 {
        (dot / (norm * soft.len() as f64).sqrt()) as f32
    } else {
        0.0
    };
    let found = crc_ok && score >= SCORE_THRESHOLD;
    Check {
        found,
        id: found.then_some(candidate),
        score,
        confidence: ((score - SCORE_THRESHOLD) / (0.9 - SCORE_THRESHOLD)).clamp(0.0, 1.0),
        bit_errors: errors as f32 / soft.len() as f32,
        grid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic "photo": smooth gradients plus value noise at several
    /// scales, so it has both flat and busy areas.
    fn scene(w: usize, h: usize, seed: u32) -> Vec<u8> {
        let hash = |x: usize, y: usize, s: u32| {
            let mut v =
                (x as u32).wrapping_mul(0x9E37_79B1) ^ (y as u32).wrapping_mul(0x85EB_CA77) ^ s;
            v ^= v >> 15;
            v = v.wrapping_mul(0x2C1B_3C6D);
            v ^= v >> 12;
            (v & 0xFF) as f32 - 128.0
        };
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let base = 60.0 + 120.0 * x as f32 / w as f32 + 40.0 * (y as f32 / 37.0).sin();
                let busy = if x > w / 2 {
                    0.25 * hash(x / 3, y / 3, seed)
                } else {
                    0.0
                };
                let fine = 0.04 * hash(x, y, seed + 1);
                let l = base + busy + fine;
                for tint in [1.0, 0.9, 0.8] {
                    rgb.push((l * tint).clamp(0.0, 255.0) as u8);
                }
            }
        }
        rgb
    }

    #[test]
    fn round_trip_on_both_grids_within_the_psnr_budget() {
        for (w, h) in [(400, 300), (800, 600)] {
            let mut rgb = scene(w, h, 1);
            let done = embed(
                &mut rgb,
                w as u32,
                h as u32,
                0xDEAD_BEEF,
                DEFAULT_STRENGTH,
                DEFAULT_KEY,
            );
            assert_eq!(done.grid, grid_for(w as u32, h as u32));
            assert!(done.psnr_db >= 38.0, "{w}x{h}: PSNR {:.2}", done.psnr_db);
            let c = check(&rgb, w as u32, h as u32, DEFAULT_KEY);
            assert!(c.found, "{w}x{h}: {c:?}");
            assert_eq!(c.id, Some(0xDEAD_BEEF));
            assert_eq!(c.grid, done.grid);
            assert!(
                c.score > 0.85 && c.confidence > 0.8 && c.bit_errors < 0.05,
                "{c:?}"
            );
        }
    }

    #[test]
    fn the_wrong_key_finds_nothing() {
        let (w, h) = (400, 300);
        let mut rgb = scene(w, h, 2);
        embed(&mut rgb, w as u32, h as u32, 77, DEFAULT_STRENGTH, 1);
        assert_eq!(check(&rgb, w as u32, h as u32, 1).id, Some(77));
        let other = check(&rgb, w as u32, h as u32, 2);
        assert!(!other.found && other.id.is_none(), "{other:?}");
        assert!(other.score < SCORE_THRESHOLD, "{other:?}");
    }

    #[test]
    fn unmarked_and_flat_images_find_nothing() {
        let (w, h) = (400, 300);
        for rgb in [scene(w, h, 3), vec![128; w * h * 3], vec![255; w * h * 3]] {
            let c = check(&rgb, w as u32, h as u32, DEFAULT_KEY);
            assert!(!c.found && c.id.is_none(), "{c:?}");
        }
    }

    #[test]
    fn flat_areas_get_less_mark_than_busy_ones() {
        // The scene's left half is smooth, its right half busy.
        let (w, h) = (400, 300);
        let original = scene(w, h, 4);
        let mut rgb = original.clone();
        embed(
            &mut rgb,
            w as u32,
            h as u32,
            5,
            DEFAULT_STRENGTH,
            DEFAULT_KEY,
        );
        let energy = |x0: usize, x1: usize| {
            let mut sum = 0.0f64;
            for y in 0..h {
                for i in (y * w + x0) * 3..(y * w + x1) * 3 {
                    sum += (f64::from(rgb[i]) - f64::from(original[i])).powi(2);
                }
            }
            sum
        };
        let (flat, busy) = (energy(0, w / 2 - 20), energy(w / 2 + 20, w));
        assert!(busy > 2.0 * flat, "busy {busy:.0} vs flat {flat:.0}");
    }

    #[test]
    fn empty_and_tiny_images_are_handled() {
        let mut none: Vec<u8> = Vec::new();
        assert_eq!(
            embed(&mut none, 0, 0, 1, DEFAULT_STRENGTH, 1).psnr_db,
            f64::INFINITY
        );
        assert!(!check(&none, 0, 7, 1).found);
        // Fewer pixels than cells: some cells are empty, nothing breaks.
        let mut tiny = scene(5, 3, 9);
        embed(&mut tiny, 5, 3, 1, DEFAULT_STRENGTH, 1);
        assert!(!check(&tiny, 5, 3, 2).found);
    }

    #[test]
    fn psnr_of_known_errors() {
        assert_eq!(psnr(0, 3), f64::INFINITY);
        // One level of error everywhere: 20 log10(255) = 48.13 dB.
        assert!((psnr(300, 300) - 48.13).abs() < 0.01);
    }
}
