//! The image seen on the mark's grid: per-cell luminance and texture, the
//! content-removing high-pass, and the bilinear map from cells to pixels.
//!
//! Cells are in relative coordinates: cell `(i, j)` of a `g` x `g` grid
//! covers `x / width` in `[i / g, (i + 1) / g)`, likewise for y, so a
//! rescaled image keeps its grid. A pixel belongs to the cell its centre
//! falls in.

/// The cell (along one axis) that pixel `p` of `n` falls in. In u64: on
/// wasm32 a usize product would overflow for axes over 16 M pixels.
fn cell_of(p: usize, n: usize, g: usize) -> usize {
    let cell = (2 * p as u64 + 1) * g as u64 / (2 * n as u64);
    (cell as usize).min(g - 1)
}

/// BT.601 luma of an RGB pixel, times 256.
fn luma256(px: &[u8]) -> u32 {
    77 * u32::from(px[0]) + 150 * u32::from(px[1]) + 29 * u32::from(px[2])
}

/// Where the cells start along an axis of `n` pixels: cell `i` holds the
/// pixels `starts[i]..starts[i + 1]` (possibly none, for tiny images).
fn cell_starts(n: usize, g: usize) -> Vec<usize> {
    let mut starts = vec![n; g + 1];
    for p in (0..n).rev() {
        starts[cell_of(p, n, g)] = p;
    }
    // Empty cells start where the next non-empty one does.
    for i in (0..g).rev() {
        starts[i] = starts[i].min(starts[i + 1]);
    }
    starts
}

/// Sums a per-pixel quantity over each cell and divides by the pixel count.
/// `row_values(y, out)` writes row `y`'s values, one per pixel, into `out`.
fn cell_average(
    w: usize,
    h: usize,
    g: usize,
    mut row_values: impl FnMut(usize, &mut [u32]),
) -> Vec<f32> {
    let xs = cell_starts(w, g);
    let ys = cell_starts(h, g);
    let mut out = vec![0.0f32; g * g];
    let mut values = vec![0u32; w];
    let mut sums = vec![0u64; g];
    for (j, cells) in out.chunks_exact_mut(g).enumerate() {
        sums.fill(0);
        for y in ys[j]..ys[j + 1] {
            row_values(y, &mut values);
            for (i, sum) in sums.iter_mut().enumerate() {
                // In u64: a run of a very wide image (40 Mpx in one row)
                // would overflow u32.
                *sum += values[xs[i]..xs[i + 1]]
                    .iter()
                    .map(|&v| u64::from(v))
                    .sum::<u64>();
            }
        }
        for (i, cell) in cells.iter_mut().enumerate() {
            let n = (xs[i + 1] - xs[i]) * (ys[j + 1] - ys[j]);
            *cell = if n == 0 {
                0.0
            } else {
                sums[i] as f32 / n as f32
            };
        }
    }
    out
}

/// Mean luminance (0..255) of every cell of a `g` x `g` grid.
pub fn luminance(rgb: &[u8], w: usize, h: usize, g: usize) -> Vec<f32> {
    let means = cell_average(w, h, g, |y, out| {
        let line = &rgb[y * w * 3..(y + 1) * w * 3];
        for (o, px) in out.iter_mut().zip(line.chunks_exact(3)) {
            *o = luma256(px);
        }
    });
    means.into_iter().map(|m| m / 256.0).collect()
}

/// Texture of every cell: the mean absolute luminance step to the right and
/// downwards (in 8-bit levels).
pub fn activity(rgb: &[u8], w: usize, h: usize, g: usize) -> Vec<f32> {
    let luma_row = |y: usize, out: &mut [i32]| {
        let line = &rgb[y * w * 3..(y + 1) * w * 3];
        for (o, px) in out.iter_mut().zip(line.chunks_exact(3)) {
            *o = luma256(px) as i32;
        }
    };
    // Rows `y` and `y + 1` (the last row repeats), each converted once.
    let (mut here, mut below) = (vec![0i32; w], vec![0i32; w]);
    luma_row(0, &mut below);
    let means = cell_average(w, h, g, |y, out| {
        std::mem::swap(&mut here, &mut below);
        if y + 1 < h {
            luma_row(y + 1, &mut below);
        } else {
            below.copy_from_slice(&here);
        }
        for x in 0..w {
            let right = here[(x + 1).min(w - 1)];
            out[x] = here[x].abs_diff(right) + here[x].abs_diff(below[x]);
        }
    });
    means.into_iter().map(|m| m / 256.0).collect()
}

/// The mean of each cell's 3 x 3 neighbourhood (itself included).
pub fn box3(v: &[f32], g: usize) -> Vec<f32> {
    neighbourhood(v, g, 1, |sum, n| sum / n as f32)
}

/// Each cell minus a prediction from its neighbours: the four beside it
/// weigh 1, the four diagonal ones -1/4. Smooth content (exactly: planes and
/// saddles `xy`; nearly: gentle curvature) cancels, while the cell-to-cell
/// pattern, which no neighbour predicts, stays. A diagonal weight of -1/2
/// would cancel all curvature too, but passes more of the neighbours'
/// noise; -1/4 measured best, ahead of 0 (a plain mean of the four).
pub fn high_pass(means: &[f32], g: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; g * g];
    for y in 0..g {
        for x in 0..g {
            let (mut sum, mut weight) = (0.0f32, 0.0f32);
            for ny in y.saturating_sub(1)..=(y + 1).min(g - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(g - 1) {
                    let w = match (nx == x, ny == y) {
                        (true, true) => continue,
                        (false, false) => -0.25,
                        _ => 1.0,
                    };
                    sum += w * means[ny * g + nx];
                    weight += w;
                }
            }
            out[y * g + x] = means[y * g + x] - sum / weight;
        }
    }
    out
}

/// Divides each residual by its neighbourhood's RMS (5 x 5 cells) to the
/// power 1.5. Textured areas and edges leave large residuals that would
/// drown the mark elsewhere; weighting by 1/RMS^2 would be optimal for
/// Gaussian noise, but textured cells also carry more mark (see
/// `mark::masking`), and 1.5 measured best. The floor keeps flat, clipped
/// areas (pure white) from turning rounding noise into strong votes.
pub fn normalise(residual: &[f32], g: usize) -> Vec<f32> {
    let squares: Vec<f32> = residual.iter().map(|r| r * r).collect();
    let rms = neighbourhood(&squares, g, 2, |sum, n| (sum / n as f32).sqrt().max(1.0));
    residual
        .iter()
        .zip(&rms)
        .map(|(r, s)| r / (s * s.sqrt()))
        .collect()
}

/// Applies `reduce(sum, count)` to the sum of `v` over each cell's
/// `(2 radius + 1)^2` neighbourhood, clipped at the grid's edges.
fn neighbourhood(v: &[f32], g: usize, radius: usize, reduce: impl Fn(f32, u32) -> f32) -> Vec<f32> {
    let mut out = vec![0.0f32; g * g];
    for y in 0..g {
        for x in 0..g {
            let (mut sum, mut n) = (0.0f32, 0u32);
            for ny in y.saturating_sub(radius)..=(y + radius).min(g - 1) {
                for nx in x.saturating_sub(radius)..=(x + radius).min(g - 1) {
                    sum += v[ny * g + nx];
                    n += 1;
                }
            }
            out[y * g + x] = reduce(sum, n);
        }
    }
    out
}

/// Where each pixel along one axis falls between two cell centres, for
/// bilinear upsampling from the grid: pixel `p` takes `lo` weighted
/// `1 - t` and `hi` weighted `t`. Beyond the outer centres the edge cell's
/// value holds.
pub struct Axis {
    lo: Vec<u16>,
    hi: Vec<u16>,
    t: Vec<f32>,
}

impl Axis {
    pub fn new(pixels: usize, g: usize) -> Self {
        let mut axis = Axis {
            lo: Vec::with_capacity(pixels),
            hi: Vec::with_capacity(pixels),
            t: Vec::with_capacity(pixels),
        };
        let last = (g - 1) as f32;
        for p in 0..pixels {
            // The pixel's centre in cells, counted from the first cell's centre.
            let c = ((p as f32 + 0.5) * g as f32 / pixels as f32 - 0.5).clamp(0.0, last);
            let lo = c.floor();
            let hi = (lo + 1.0).min(last);
            axis.lo.push(lo as u16);
            axis.hi.push(hi as u16);
            axis.t.push(c - lo);
        }
        axis
    }

    pub fn at(&self, p: usize) -> (usize, usize, f32) {
        (usize::from(self.lo[p]), usize::from(self.hi[p]), self.t[p])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luminance_averages_each_cell() {
        // 4 x 2 pixels on a 2 x 2 grid: left column cells black, right white.
        let mut rgb = vec![0u8; 4 * 2 * 3];
        for y in 0..2 {
            for x in 2..4 {
                rgb[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3].fill(255);
            }
        }
        let l = luminance(&rgb, 4, 2, 2);
        assert_eq!(l, vec![0.0, 255.0, 0.0, 255.0]);
    }

    #[test]
    fn cells_cover_the_axis_in_order() {
        assert_eq!(cell_starts(8, 2), vec![0, 4, 8]);
        // Pixel 2's centre (2.5) is on the boundary: it goes right.
        assert_eq!(cell_starts(5, 2), vec![0, 2, 5]);
        // More cells than pixels: the empty ones are empty runs.
        let s = cell_starts(2, 5);
        assert_eq!(s.len(), 6);
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!((s[0], s[5]), (0, 2));
    }

    #[test]
    fn high_pass_cancels_smooth_content() {
        let g = 8;
        let ramp: Vec<f32> = (0..g * g)
            .map(|i| {
                let (x, y) = ((i % g) as f32, (i / g) as f32);
                10.0 + 2.0 * x - 3.0 * y + 0.5 * x * y
            })
            .collect();
        let hp = high_pass(&ramp, g);
        // Interior cells: exact for planes and saddles.
        for y in 1..g - 1 {
            for x in 1..g - 1 {
                assert!(hp[y * g + x].abs() < 1e-3, "({x}, {y}): {}", hp[y * g + x]);
            }
        }
        let mut spike = vec![0.0f32; g * g];
        spike[3 * g + 3] = 1.0;
        assert!((high_pass(&spike, g)[3 * g + 3] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn axis_interpolates_between_centres() {
        // 8 pixels on 2 cells of 4: the centres lie at x = 2 and 6, so pixel
        // 3 (centre 3.5) is 3/8 of the way; pixels 0, 1 and 6, 7 lie outside.
        let a = Axis::new(8, 2);
        assert_eq!(a.at(0), (0, 1, 0.0));
        assert_eq!(a.at(1), (0, 1, 0.0));
        assert_eq!(a.at(3), (0, 1, 0.375));
        assert_eq!(a.at(7), (1, 1, 0.0));
    }
}
