//! Measures the watermark and prints the tables of RESULTS.md (markdown):
//! bit error rates and decoded IDs per attack, PSNR per photo, the false
//! positive rate on unmarked images, and embed/check time on a 1080p frame.
//!
//! `cargo bench -p stego --bench robustness` (about two minutes on two
//! cores; needs the photos of `make models` and `ffmpeg` with libx264).
//! Name sections to run only those: `... -- timing` (`robustness`,
//! `extra`, `false-positives`, `timing`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{
    blur, crop, h264, have_ffmpeg, jpeg, mosaic, photo, resize, resize_by, FilterType, Rate, Rgb8,
    PHOTOS,
};
use stego::ecc;
use stego::mark::{
    self, Embedded, Observation, DEFAULT_KEY, DEFAULT_STRENGTH, GRIDS, SCORE_THRESHOLD,
};

/// IDs embedded in every image.
const IDS: [u32; 4] = [0, 1_234_567, 0xDEAD_BEEF, u32::MAX];

struct Attack {
    name: &'static str,
    apply: fn(&Rgb8) -> Rgb8,
    /// Needs ffmpeg.
    video: bool,
}

const fn attack(name: &'static str, apply: fn(&Rgb8) -> Rgb8) -> Attack {
    Attack {
        name,
        apply,
        video: false,
    }
}

const fn video(name: &'static str, apply: fn(&Rgb8) -> Rgb8) -> Attack {
    Attack {
        name,
        apply,
        video: true,
    }
}

/// What the mark must survive.
const ATTACKS: [Attack; 10] = [
    attack("none", |i| i.clone()),
    attack("JPEG q95", |i| jpeg(i, 95)),
    attack("JPEG q75", |i| jpeg(i, 75)),
    attack("JPEG q50", |i| jpeg(i, 50)),
    attack("resize x0.8", |i| resize(i, 0.8)),
    attack("resize x1.2", |i| resize(i, 1.2)),
    attack("resize x0.8 + JPEG q75", |i| jpeg(&resize(i, 0.8), 75)),
    video("H.264 CRF 23", |i| h264(i, Rate::Crf(23), 12)),
    video("H.264 2 Mbit/s @1080p", |i| {
        h264(i, Rate::KbpsAt1080p(2000), 12)
    }),
    video("H.264 1 Mbit/s @1080p", |i| {
        h264(i, Rate::KbpsAt1080p(1000), 12)
    }),
];

/// Beyond the requirements: where the mark's limits are.
const EXTRA: [Attack; 8] = [
    attack("resize x0.5", |i| resize(i, 0.5)),
    attack("resize x2", |i| resize(i, 2.0)),
    attack("resize x0.9 wide, x1.1 high", |i| {
        resize_by(i, 0.9, 1.1, FilterType::Triangle)
    }),
    attack("resize x0.8, nearest neighbour", |i| {
        resize_by(i, 0.8, 0.8, FilterType::Nearest)
    }),
    attack("Gaussian blur sigma 1.5 px", |i| blur(i, 1.5)),
    attack("crop 1 % off the left", |i| crop_left(i, 1)),
    attack("crop 2 % off the left", |i| crop_left(i, 2)),
    attack("crop 5 % off the left", |i| crop_left(i, 5)),
];

fn crop_left(img: &Rgb8, percent: u32) -> Rgb8 {
    let dx = img.width * percent / 100;
    crop(img, dx, 0, img.width - dx, img.height)
}

fn main() {
    let images: Vec<(String, Rgb8)> = PHOTOS
        .iter()
        .map(|n| (n.to_string(), photo(n)))
        .chain([("mosaic 1920x1080".to_string(), mosaic(1920, 1080))])
        .collect();
    // Cargo passes `--bench`; anything else names a section.
    let sections: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);
    if run("robustness") {
        let video = have_ffmpeg();
        if !video {
            eprintln!("ffmpeg not on PATH: the H.264 rows are left out");
        }
        let attacks: Vec<&Attack> = ATTACKS.iter().filter(|a| video || !a.video).collect();
        let m = robustness(&images, &attacks);
        print_attack_table(
            "Bit errors and decoded IDs per attack",
            &attacks,
            &m.outcomes,
            images.len(),
        );
        print_photo_table(&attacks, &m.outcomes, &images);
        print_psnr_table(&images, &m.marks);
    }
    if run("extra") {
        let attacks: Vec<&Attack> = EXTRA.iter().collect();
        let m = robustness(&images, &attacks);
        print_attack_table(
            "Beyond the requirements",
            &attacks,
            &m.outcomes,
            images.len(),
        );
    }
    if run("false-positives") {
        false_positives(&images);
    }
    if run("timing") {
        timing(&images.last().expect("the mosaic").1);
    }
}

/// What one attack did to the marks of one image, over the IDs.
#[derive(Clone)]
struct Outcome {
    /// Coded bits whose sign came out wrong, of `bits`.
    errors: usize,
    bits: usize,
    /// Checks that found the right ID, and ones that found another.
    decoded: usize,
    wrong: usize,
    lowest_score: f32,
}

impl Outcome {
    fn raw_ber(&self) -> f64 {
        self.errors as f64 / self.bits as f64
    }
}

struct Measured {
    /// `[attack][image]`.
    outcomes: Vec<Vec<Outcome>>,
    /// `[image][id]`.
    marks: Vec<Vec<Embedded>>,
}

/// Raw coded-bit error rate and decoded IDs, per attack and per photo; and
/// the PSNR and grid of every mark, per photo.
fn robustness(images: &[(String, Rgb8)], attacks: &[&Attack]) -> Measured {
    let none = Outcome {
        errors: 0,
        bits: 0,
        decoded: 0,
        wrong: 0,
        lowest_score: f32::MAX,
    };
    // [attack][image]
    let mut outcomes = vec![vec![none; images.len()]; attacks.len()];
    let mut marks = vec![Vec::new(); images.len()];
    for (i, (_, img)) in images.iter().enumerate() {
        for &id in &IDS {
            let mut m = img.clone();
            let done = mark::embed(
                &mut m.data,
                m.width,
                m.height,
                id,
                DEFAULT_STRENGTH,
                DEFAULT_KEY,
            );
            marks[i].push(done);
            let coded = ecc::encode(id);
            for (a, attack) in attacks.iter().enumerate() {
                let seen = (attack.apply)(&m);
                let soft = Observation::new(&seen.data, seen.width, seen.height, done.grid)
                    .soft_bits(DEFAULT_KEY);
                let errors = soft
                    .iter()
                    .zip(&coded)
                    .filter(|(s, &c)| (**s > 0.0) != c)
                    .count();
                let c = mark::check(&seen.data, seen.width, seen.height, DEFAULT_KEY);
                let s = &mut outcomes[a][i];
                s.errors += errors;
                s.bits += coded.len();
                s.decoded += usize::from(c.found && c.id == Some(id));
                s.wrong += usize::from(c.found && c.id != Some(id));
                s.lowest_score = s.lowest_score.min(c.score);
            }
        }
    }
    Measured { outcomes, marks }
}

fn print_attack_table(title: &str, attacks: &[&Attack], stats: &[Vec<Outcome>], n_images: usize) {
    println!("### {title}\n");
    println!(
        "{} images x {} IDs per attack; raw BER: coded bits (before the Viterbi decoder) whose sign is wrong.\n",
        n_images,
        IDS.len()
    );
    println!("| attack | raw BER (mean) | raw BER (worst image) | IDs decoded | wrong IDs | lowest score |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (a, attack) in attacks.iter().enumerate() {
        let row = &stats[a];
        let errors: usize = row.iter().map(|s| s.errors).sum();
        let bits: usize = row.iter().map(|s| s.bits).sum();
        let worst = row.iter().map(Outcome::raw_ber).fold(0.0, f64::max);
        let decoded: usize = row.iter().map(|s| s.decoded).sum();
        let wrong: usize = row.iter().map(|s| s.wrong).sum();
        let low = row.iter().map(|s| s.lowest_score).fold(f32::MAX, f32::min);
        println!(
            "| {} | {:.4} | {:.4} | {}/{} | {} | {:.2} |",
            attack.name,
            errors as f64 / bits as f64,
            worst,
            decoded,
            n_images * IDS.len(),
            wrong,
            low
        );
    }
    println!();
}

fn print_photo_table(attacks: &[&Attack], stats: &[Vec<Outcome>], images: &[(String, Rgb8)]) {
    println!("### Raw BER per image and attack (mean over the IDs)\n");
    print!("| image |");
    for a in attacks {
        print!(" {} |", a.name);
    }
    print!("\n|---|");
    for _ in attacks {
        print!("---:|");
    }
    println!();
    for (i, (name, _)) in images.iter().enumerate() {
        print!("| {name} |");
        for row in stats {
            print!(" {:.3} |", row[i].raw_ber());
        }
        println!();
    }
    println!();
}

fn print_psnr_table(images: &[(String, Rgb8)], marks: &[Vec<Embedded>]) {
    println!("### PSNR of the marked image against the original (strength {DEFAULT_STRENGTH})\n");
    println!("| image | size | grid | PSNR min (dB) | PSNR mean (dB) |");
    println!("|---|---|---:|---:|---:|");
    for ((name, img), m) in images.iter().zip(marks) {
        let min = m.iter().map(|e| e.psnr_db).fold(f64::MAX, f64::min);
        let mean = m.iter().map(|e| e.psnr_db).sum::<f64>() / m.len() as f64;
        println!(
            "| {name} | {}x{} | {} | {min:.2} | {mean:.2} |",
            img.width, img.height, m[0].grid
        );
    }
    println!();
}

/// Unmarked images in several sizes and crops, each checked with many keys;
/// and marked ones checked with keys other than theirs.
fn false_positives(images: &[(String, Rgb8)]) {
    const KEYS: u64 = 400;
    let mut variants: Vec<Rgb8> = Vec::new();
    for (_, img) in images {
        let (w, h) = (img.width, img.height);
        variants.push(img.clone());
        variants.extend([0.5, 0.8, 1.2].map(|f| resize(img, f)));
        variants.push(crop(img, w / 10, h / 10, w * 8 / 10, h * 8 / 10));
        variants.push(crop(img, 0, 0, w, (w * 9 / 16).min(h)));
        variants.push(jpeg(img, 75));
    }
    let mut tally = Tally::default();
    for v in &variants {
        let observed = mark::observe(&v.data, v.width, v.height);
        for k in 0..KEYS {
            tally.add(
                &observed,
                DEFAULT_KEY ^ (k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
        }
    }
    let mut unmarked = tally;
    let mut tally = Tally::default();
    for (_, img) in images {
        let mut m = img.clone();
        mark::embed(
            &mut m.data,
            m.width,
            m.height,
            0xC0FFEE,
            DEFAULT_STRENGTH,
            DEFAULT_KEY,
        );
        let observed = mark::observe(&m.data, m.width, m.height);
        for k in 0..KEYS {
            tally.add(
                &observed,
                DEFAULT_KEY ^ (k + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            );
        }
    }
    println!("### False positives\n");
    println!(
        "Unmarked: the {} images at x1, x0.5, x0.8, x1.2, an 80 % centre crop, a 16:9 top crop and JPEG q75 ({} variants), {KEYS} keys each. \
         Other key: each image marked with the default key, checked with {KEYS} other keys. \
         A trial is one `check` (both grids); \"CRC passes\" and \"score >= {SCORE_THRESHOLD}\" count grids on which that guard alone would have fired.\n",
        images.len(),
        variants.len()
    );
    println!("| case | trials | false detections | rate (95 % upper bound) | CRC passes | score >= {SCORE_THRESHOLD} | score mean | score p99 | score max |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    unmarked.print("unmarked photos");
    tally.print("marked photos, other key");
    gaussian().print("Gaussian noise (one grid)");
    let p_score = unmarked.over as f64 / (unmarked.trials * GRIDS.len()) as f64;
    println!(
        "\nBoth guards must fire on the same grid. With the CRC passing random messages at 2^-16 and the score guard at {p_score:.1e} per grid, \
         the expected false positive rate is about {} x 2^-16 x {p_score:.1e} = {:.1e} per check.\n",
        GRIDS.len(),
        GRIDS.len() as f64 * p_score / 65536.0
    );
}

/// Soft bits of pure Gaussian noise, straight into the decoder: the model
/// the photos' residuals follow, at a count the photos cannot reach.
fn gaussian() -> Tally {
    const TRIALS: usize = 200_000;
    let mut state = 0x5EED_u64;
    let mut uniform = move || {
        // SplitMix64, in (0, 1].
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 + f64::EPSILON
    };
    let mut tally = Tally::default();
    for _ in 0..TRIALS {
        // Box-Muller.
        let soft: Vec<f32> = (0..ecc::CODED_BITS)
            .map(|_| {
                ((-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()) as f32
            })
            .collect();
        tally.add_soft(&[soft], 0);
    }
    tally
}

#[derive(Default)]
struct Tally {
    trials: usize,
    found: usize,
    crc: usize,
    over: usize,
    scores: Vec<f32>,
}

impl Tally {
    fn add(&mut self, observed: &[Observation], key: u64) {
        let soft: Vec<Vec<f32>> = observed.iter().map(|o| o.soft_bits(key)).collect();
        self.add_soft(&soft, observed[0].grid);
    }

    /// One trial: the soft bits of every grid tried.
    fn add_soft(&mut self, grids: &[Vec<f32>], grid: u32) {
        self.trials += 1;
        let mut found = false;
        for soft in grids {
            let c = mark::judge(soft, grid);
            found |= c.found;
            self.crc += usize::from(ecc::decode(soft).is_some());
            self.over += usize::from(c.score >= SCORE_THRESHOLD);
            self.scores.push(c.score);
        }
        self.found += usize::from(found);
    }

    fn print(&mut self, case: &str) {
        self.scores.sort_by(f32::total_cmp);
        let n = self.scores.len();
        let mean = self.scores.iter().sum::<f32>() / n as f32;
        // With no event in N trials, 3/N bounds the rate at 95 % ("rule of three").
        let bound = (self.found.max(1) as f64 * 3.0) / self.trials as f64;
        println!(
            "| {case} | {} | {} | {:.1e} (< {:.1e}) | {} | {} | {mean:.3} | {:.3} | {:.3} |",
            self.trials,
            self.found,
            self.found as f64 / self.trials as f64,
            bound,
            self.crc,
            self.over,
            self.scores[n * 99 / 100],
            self.scores[n - 1]
        );
    }
}

/// Median wall time of embed and check on a 1920x1080 frame, natively.
fn timing(frame: &Rgb8) {
    const RUNS: usize = 21;
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let mut embed = Vec::new();
    let mut check = Vec::new();
    for r in 0..RUNS {
        let mut m = frame.clone();
        let start = Instant::now();
        mark::embed(
            &mut m.data,
            m.width,
            m.height,
            r as u32,
            DEFAULT_STRENGTH,
            DEFAULT_KEY,
        );
        embed.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        let c = mark::check(&m.data, m.width, m.height, DEFAULT_KEY);
        check.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(c.id, Some(r as u32));
    }
    println!(
        "### Time per call on a {}x{} frame (native, release, median of {RUNS})\n",
        frame.width, frame.height
    );
    println!("| call | ms |");
    println!("|---|---:|");
    println!("| embed | {:.1} |", median(embed));
    println!("| check (both grids) | {:.1} |", median(check));
    println!();
}
