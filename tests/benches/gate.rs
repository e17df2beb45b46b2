//! What the live streams' similar-frame gate costs per frame: the frame's
//! 16x9 luma cells from its RGB pixels (`Cells::of_rgb`, as the ingest hands
//! them over) and the comparison with the last processed frame, at 640x360,
//! 1280x720 and 1920x1080. Goal: at most 0.5 ms a 720p frame.
//!
//! Run: `cargo bench -p osprey-tests --bench gate`; the table goes to stdout.

use std::time::{Duration, Instant};

use osprey::stream::gate::Cells;

const RUNS: usize = 301;

/// A frame as the ingest makes it: ffmpeg's RGB of a test photo scaled to the size.
fn frame(width: u32, height: u32) -> Vec<u8> {
    let photo = osprey::nn::runtime::cache_dir().join("images/horses.jpg");
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&photo)
        .args(["-vf", &format!("scale={width}:{height},setsar=1"), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg (apt-get install ffmpeg)");
    assert!(out.status.success() && !out.stdout.is_empty(), "ffmpeg made no frame");
    out.stdout
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    println!("| frame | cells ms | compare ms | total ms |");
    println!("|---|---:|---:|---:|");
    for (w, h) in [(640, 360), (1280, 720), (1920, 1080)] {
        let rgb = frame(w, h);
        assert_eq!(rgb.len(), (w * h * 3) as usize);
        let reference = Cells::of_rgb(w as usize, h as usize, &rgb);
        let (mut cells, mut compare) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let t = Instant::now();
            let c = Cells::of_rgb(w as usize, h as usize, std::hint::black_box(&rgb));
            cells.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(c.diff(&reference));
            compare.push(t.elapsed());
        }
        let (a, b) = (median(cells), median(compare));
        println!("| {w}x{h} | {a:.3} | {b:.4} | {:.3} |", a + b);
    }
}
