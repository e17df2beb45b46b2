//! The fusion plugin's WBF against the reference: `ensemble-boxes` 1.0.9's
//! `weighted_boxes_fusion`, run by `ensemble_boxes_ref.py` (next to this
//! file) on a few hundred seeded random box sets. Every fused box must agree
//! in label, and in score and corners to 1e-5.
//!
//! The script runs with the test venv's interpreter,
//! `$OSPREY_CACHE/venv-test/bin/python` (`OSPREY_CACHE` defaults to
//! `~/.cache/osprey`), which `make test-deps` sets up. Without it this test
//! fails rather than skips: CI always has it, and a skipped reference check
//! would look like a passing one.

use std::path::PathBuf;
use std::process::Command;

use fusion::wbf::{self, ConfType, Fused, InBox, Params};
use serde::Deserialize;

const TOLERANCE: f64 = 1e-5;

#[derive(Deserialize)]
struct Reference {
    ensemble_boxes: String,
    skipped_order_sensitive: usize,
    cases: Vec<Case>,
}

/// One call of `weighted_boxes_fusion`; inputs as the bits of `f64`s.
#[derive(Deserialize)]
struct Case {
    name: String,
    /// Whether boxes of one label tie on weighted score: the reference may
    /// then sum a cluster in another order, a `float32` rounding apart.
    ties: bool,
    iou_thr: u64,
    skip_box_thr: u64,
    conf_type: ConfType,
    allows_overflow: bool,
    weights: Option<Vec<u64>>,
    models: Vec<Vec<RefBox>>,
    expected: Vec<RefBox>,
}

#[derive(Deserialize)]
struct RefBox {
    label: u32,
    score: u64,
    #[serde(rename = "box")]
    coords: [u64; 4],
}

/// A box the reference fused, decoded from bits.
struct Expected {
    label: u32,
    score: f64,
    coords: [f64; 4],
}

impl From<&RefBox> for Expected {
    fn from(b: &RefBox) -> Self {
        Expected {
            label: b.label,
            score: f64::from_bits(b.score),
            coords: b.coords.map(f64::from_bits),
        }
    }
}

fn python() -> PathBuf {
    let cache = std::env::var_os("OSPREY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/osprey")
        });
    let python = cache.join("venv-test/bin/python");
    assert!(
        python.exists(),
        "{} not found: run `make test-deps` (it installs ensemble-boxes==1.0.9 into \
         $OSPREY_CACHE/venv-test, the reference this test compares with)",
        python.display()
    );
    python
}

fn reference() -> Reference {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ensemble_boxes_ref.py");
    let out = Command::new(python())
        .arg(&script)
        .output()
        .expect("the test venv's python runs");
    assert!(
        out.status.success(),
        "{} failed ({}); run `make test-deps` if ensemble-boxes is missing:\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints its JSON")
}

impl Case {
    fn run(&self) -> Vec<Fused> {
        let f = f64::from_bits;
        let models: Vec<Vec<InBox>> = self
            .models
            .iter()
            .map(|m| {
                m.iter()
                    .map(|b| InBox {
                        label: b.label,
                        score: f(b.score),
                        coords: b.coords.map(f),
                    })
                    .collect()
            })
            .collect();
        let weights = match &self.weights {
            Some(w) => w.iter().copied().map(f).collect(),
            None => vec![1.0; models.len()],
        };
        let params = Params {
            iou_thr: f(self.iou_thr),
            skip_box_thr: f(self.skip_box_thr),
            conf_type: self.conf_type,
            allows_overflow: self.allows_overflow,
        };
        wbf::fuse(&models, &weights, &params)
    }
}

/// Pairs every expected box with a distinct fused box of its label, the
/// closest; returns the largest difference, or why they do not pair up.
fn compare(expected: &[Expected], got: &[Fused]) -> Result<f64, String> {
    if expected.len() != got.len() {
        return Err(format!(
            "{} boxes expected, {} fused",
            expected.len(),
            got.len()
        ));
    }
    let diff = |e: &Expected, g: &Fused| {
        let corners = e.coords.iter().zip(g.coords).map(|(a, b)| (a - b).abs());
        corners.fold((e.score - g.score).abs(), f64::max)
    };
    let mut used = vec![false; got.len()];
    let mut worst = 0f64;
    for e in expected {
        let best = got
            .iter()
            .enumerate()
            .filter(|(i, g)| !used[*i] && g.label == e.label)
            .map(|(i, g)| (i, diff(e, g)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, d)) if d <= TOLERANCE => {
                used[i] = true;
                worst = worst.max(d);
            }
            Some((_, d)) => {
                return Err(format!(
                    "label {} score {} box {:?}: the closest fused box differs by {d:e}",
                    e.label, e.score, e.coords
                ))
            }
            None => return Err(format!("label {}: no fused box left", e.label)),
        }
    }
    Ok(worst)
}

#[test]
fn wbf_agrees_with_ensemble_boxes() {
    let r = reference();
    assert_eq!(r.ensemble_boxes, "1.0.9");
    // The largest difference in cases without ties and with them.
    let (mut worst_plain, mut worst_ties) = (0f64, 0f64);
    let mut failures = Vec::new();
    let (mut fused, mut merged) = (0, 0);
    let mut conf_types = Vec::new();
    for case in &r.cases {
        let got = case.run();
        fused += got.len();
        merged += got.iter().filter(|f| f.members.len() > 1).count();
        if !conf_types.contains(&case.conf_type) {
            conf_types.push(case.conf_type);
        }
        let expected: Vec<Expected> = case.expected.iter().map(Expected::from).collect();
        match compare(&expected, &got) {
            Ok(d) if case.ties => worst_ties = worst_ties.max(d),
            Ok(d) => worst_plain = worst_plain.max(d),
            Err(why) => failures.push(format!("{}: {why}", case.name)),
        }
    }
    let with_ties = r.cases.iter().filter(|c| c.ties).count();
    eprintln!(
        "ensemble-boxes {}: {} cases ({with_ties} with ties; {} left out as order-sensitive), \
         {fused} fused boxes ({merged} from several boxes); max abs difference \
         {worst_plain:e} without ties, {worst_ties:e} with ties",
        r.ensemble_boxes,
        r.cases.len(),
        r.skipped_order_sensitive
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from ensemble-boxes by more than {TOLERANCE:e}:\n{}",
        failures.len(),
        r.cases.len(),
        failures.join("\n")
    );
    // The comparison must have had something to compare.
    assert!(r.cases.len() >= 400, "only {} cases", r.cases.len());
    assert!(with_ties >= 50, "only {with_ties} cases with ties");
    assert!(merged >= 500, "only {merged} boxes fused from several");
    assert_eq!(conf_types.len(), 4, "every conf_type is covered");
}
