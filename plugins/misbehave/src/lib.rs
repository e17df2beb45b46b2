//! `misbehave`: a stage that goes wrong on purpose, so the tests can prove the
//! host contains it (a precise error for this request, service for the rest).
//! Never used by a real route.
//!
//! Settings: `{"mode": "trap" | "loop" | "hog" | "bad-tensor" | "wrong-shape" | "pass"}`;
//! or `"trap-in-check"` / `"loop-in-check"`, which go wrong when the host asks
//! the plugin to check its settings (at load), not when it runs.

use osprey_plugin_sdk::nn::infer;
use osprey_plugin_sdk::settings::parse;
use osprey_plugin_sdk::{export_stage, Frame, NamedTensor, Stage, StageError, Tensor, TensorType};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    mode: String,
    #[serde(default)]
    model: String,
}

struct Misbehave;

const MODES: [&str; 6] = ["trap", "loop", "hog", "bad-tensor", "wrong-shape", "pass"];

impl Stage for Misbehave {
    fn check(settings: &str) -> Result<(), StageError> {
        let s: Settings = parse(settings)?;
        match s.mode.as_str() {
            "trap-in-check" => panic!("misbehave: panicking in check on purpose"),
            "loop-in-check" => endless(),
            m if MODES.contains(&m) => Ok(()),
            other => Err(StageError::bad_settings(format!("settings: `mode` '{other}' is not one of {MODES:?}"))),
        }
    }

    fn run(frame: Frame, settings: String) -> Result<Frame, StageError> {
        let s: Settings = parse(&settings)?;
        match s.mode.as_str() {
            "trap" => panic!("misbehave: panicking on purpose"),
            "loop" => endless(),
            "hog" => hog(),
            // Dimensions that need 16 bytes, with 3 given: the constructor traps.
            "bad-tensor" => drop(Tensor::new(&[2, 2], TensorType::Fp32, &[1, 2, 3])),
            // A well-formed tensor of the wrong shape for the model: the model refuses it.
            "wrong-shape" => {
                let t = Tensor::new(&[1, 7], TensorType::Fp32, &[0; 28]);
                infer(&s.model, vec![NamedTensor { name: "x".into(), tensor: t }])?;
            }
            "pass" => {}
            other => return Err(StageError::bad_settings(format!("mode '{other}' is not a mode"))),
        }
        Ok(frame)
    }
}

fn endless() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Allocates 16 MiB blocks and touches them until the host's cap stops it.
fn hog() {
    let mut kept = Vec::new();
    loop {
        kept.push(std::hint::black_box(vec![1u8; 16 << 20]));
    }
}

export_stage!(Misbehave);
