//! The keyed layout of the mark on one grid: a +-1 chip per cell, and which
//! coded bit each cell carries.
//!
//! Cells are dealt to the coded bits in a keyed random order, round robin, so
//! every bit gets the same number of cells (within one) scattered over the
//! whole image: damage to one region costs every bit a little instead of a
//! few bits everything. The grid size is mixed into the seed, so the
//! patterns of different grids are unrelated.

use crate::ecc::CODED_BITS;

pub struct Pattern {
    chips: Vec<f32>,
    bit_of: Vec<u16>,
}

impl Pattern {
    /// The pattern of `key` on a `grid` x `grid` grid.
    pub fn new(key: u64, grid: u32) -> Self {
        let cells = (grid * grid) as usize;
        let mut rng = SplitMix(key ^ u64::from(grid).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let chips = (0..cells)
            .map(|_| if rng.next() >> 63 == 1 { 1.0 } else { -1.0 })
            .collect();
        // Fisher-Yates shuffle of the cells, then deal them out in that order.
        let mut order: Vec<u32> = (0..cells as u32).collect();
        for i in (1..cells).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut bit_of = vec![0u16; cells];
        for (k, &cell) in order.iter().enumerate() {
            bit_of[cell as usize] = (k % CODED_BITS) as u16;
        }
        Pattern { chips, bit_of }
    }

    /// The +-1 value of every cell carrying `coded`.
    pub fn cells(&self, coded: &[bool]) -> Vec<f32> {
        self.chips
            .iter()
            .zip(&self.bit_of)
            .map(|(&chip, &b)| if coded[usize::from(b)] { chip } else { -chip })
            .collect()
    }

    /// One soft value per coded bit: the correlation of each bit's chips
    /// with `residual` (one value per cell). Positive means 1.
    pub fn soft_bits(&self, residual: &[f32]) -> Vec<f32> {
        assert_eq!(residual.len(), self.chips.len(), "one residual per cell");
        let mut soft = vec![0.0f32; CODED_BITS];
        for ((&r, &chip), &b) in residual.iter().zip(&self.chips).zip(&self.bit_of) {
            soft[usize::from(b)] += r * chip;
        }
        soft
    }
}

/// SplitMix64 (Steele, Lea and Flood): tiny, fast, and statistically good
/// enough for a pattern that only has to look like noise.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bit_gets_its_share_of_cells_and_chips_balance() {
        let p = Pattern::new(1, 96);
        let mut per_bit = vec![0usize; CODED_BITS];
        for &b in &p.bit_of {
            per_bit[usize::from(b)] += 1;
        }
        let (lo, hi) = (per_bit.iter().min().unwrap(), per_bit.iter().max().unwrap());
        assert!(hi - lo <= 1, "cells per bit {lo}..{hi}");
        let sum: f32 = p.chips.iter().sum();
        assert!(sum.abs() < 400.0, "chips should be balanced: sum {sum}");
    }

    #[test]
    fn keys_and_grids_give_unrelated_patterns() {
        let corr = |a: &Pattern, b: &Pattern| {
            let n = a.chips.len().min(b.chips.len());
            a.chips[..n]
                .iter()
                .zip(&b.chips[..n])
                .map(|(x, y)| x * y)
                .sum::<f32>()
                / n as f32
        };
        let base = Pattern::new(7, 96);
        assert_eq!(corr(&base, &Pattern::new(7, 96)), 1.0);
        assert!(corr(&base, &Pattern::new(8, 96)).abs() < 0.05);
        assert!(corr(&base, &Pattern::new(7, 128)).abs() < 0.05);
    }

    #[test]
    fn soft_bits_read_back_the_cells() {
        let p = Pattern::new(3, 64);
        let coded: Vec<bool> = (0..CODED_BITS).map(|i| i % 3 == 0).collect();
        let soft = p.soft_bits(&p.cells(&coded));
        for (s, c) in soft.iter().zip(&coded) {
            assert_eq!(*s > 0.0, *c);
        }
    }
}
