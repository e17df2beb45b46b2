//! The similar-frame gate: is this frame nearly the one last processed?
//!
//! A frame is reduced to the mean luma of each cell of a 16 x 9 grid, from
//! every fourth pixel of every fourth row of its RGB (`cargo bench -p
//! osprey-tests --bench gate` has the cost per frame size). Two frames are *the same* when the
//! mean difference of the cells and the largest difference of one cell are
//! both within the thresholds: the mean catches a change of light, the
//! largest cell a small object moving in a still scene. The comparison is
//! always against the last frame the route ran on, never the previous one,
//! so a slow drift adds up until it is seen.

use crate::config::GateThresholds;

pub const GRID_W: usize = 16;
pub const GRID_H: usize = 9;
/// Every STEP-th pixel of every STEP-th row is looked at.
const STEP: usize = 4;

/// A frame as the gate sees it: the mean luma of each cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cells(Vec<f32>);

/// How far one frame is from another, in luma levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diff {
    pub mean: f64,
    pub max: f64,
}

impl Cells {
    /// The cells of an RGB8 frame: BT.601 luma of every fourth pixel of
    /// every fourth row, averaged per cell (a cell of a 640x360 frame still
    /// averages 100 samples; a moved object of a cell's size moves them all).
    pub fn of_rgb(width: usize, height: usize, rgb: &[u8]) -> Cells {
        let mut sum = vec![0u32; GRID_W * GRID_H];
        let mut count = vec![0u32; GRID_W * GRID_H];
        for y in (0..height).step_by(STEP) {
            let cy = y * GRID_H / height.max(1);
            let row = &rgb[y * width * 3..(y + 1) * width * 3];
            for (x, p) in row.chunks_exact(3).enumerate().step_by(STEP) {
                let cell = cy * GRID_W + x * GRID_W / width.max(1);
                // Integer BT.601 weights (77, 150, 29) / 256.
                sum[cell] += (77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2])) >> 8;
                count[cell] += 1;
            }
        }
        Cells(sum.iter().zip(&count).map(|(s, c)| if *c == 0 { 0.0 } else { *s as f32 / *c as f32 }).collect())
    }

    pub fn diff(&self, other: &Cells) -> Diff {
        let (mut total, mut max) = (0f64, 0f64);
        for (a, b) in self.0.iter().zip(&other.0) {
            let d = f64::from((a - b).abs());
            total += d;
            max = max.max(d);
        }
        Diff { mean: total / self.0.len().max(1) as f64, max }
    }
}

/// Whether a frame `d` away from the last processed one may reuse its
/// result. Thresholds of 0 turn the gate off (no frame is ever the same).
pub fn same(d: Diff, t: GateThresholds) -> bool {
    t.mean > 0.0 && t.cell > 0.0 && d.mean <= t.mean && d.max <= t.cell
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(w: usize, h: usize, v: u8) -> Vec<u8> {
        vec![v; w * h * 3]
    }

    #[test]
    fn the_same_picture_is_the_same_and_a_small_moving_object_is_not() {
        let (w, h) = (160, 90);
        let a = flat(w, h, 100);
        let t = crate::config::DEFAULT_GATE;
        let d = Cells::of_rgb(w, h, &a).diff(&Cells::of_rgb(w, h, &a));
        assert!(same(d, t));
        // A 10x10 white square in one cell: small on the mean, large on that cell.
        let mut b = a.clone();
        for y in 20..30 {
            for x in 40..50 {
                b[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let d = Cells::of_rgb(w, h, &a).diff(&Cells::of_rgb(w, h, &b));
        assert!(d.mean < t.mean, "{d:?}");
        assert!(d.max > t.cell, "{d:?}");
        assert!(!same(d, t));
    }

    #[test]
    fn a_change_of_light_is_seen_on_the_mean_and_zero_turns_the_gate_off() {
        let (w, h) = (160, 90);
        let d = Cells::of_rgb(w, h, &flat(w, h, 100)).diff(&Cells::of_rgb(w, h, &flat(w, h, 104)));
        assert!((d.mean - 4.0).abs() < 0.01 && (d.max - 4.0).abs() < 0.01, "{d:?}");
        assert!(!same(d, crate::config::DEFAULT_GATE));
        assert!(same(d, GateThresholds { mean: 5.0, cell: 5.0 }));
        let zero = Cells::of_rgb(w, h, &flat(w, h, 1)).diff(&Cells::of_rgb(w, h, &flat(w, h, 1)));
        assert!(!same(zero, GateThresholds { mean: 0.0, cell: 0.0 }));
    }
}
