//! The ONNX Runtime layer on a tiny model the test writes itself
//! (`y = x * 2 + 1`, input `x` of shape [N, 4]): loading, named and unnamed
//! inputs, wrong tensors, and concurrent runs on one model.

use std::path::PathBuf;
use std::sync::Arc;

use osprey::nn::{Batching, Identity, LoadSpec, Model, Target, Tensor, TensorData, Threads};

#[test]
fn tiny_model_computes_and_checks_its_inputs() {
    let model = load(1);
    assert_eq!(model.inputs()[0].name, "x");
    let x = Tensor::new(vec![2, 4], TensorData::F32(vec![0., 1., 2., 3., -1., -2., 0.5, 10.])).unwrap();
    let out = model.run(vec![("anything".into(), x.clone())]).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "y");
    assert_eq!(out[0].1.dims, vec![2, 4]);
    assert_eq!(out[0].1.data, TensorData::F32(vec![1., 3., 5., 7., -1., -3., 2., 21.]));

    // Wrong element type: an error that names the model, not a crash.
    let bad = Tensor::new(vec![1, 4], TensorData::U8(vec![1, 2, 3, 4])).unwrap();
    let err = model.run(vec![("x".into(), bad)]).unwrap_err().to_string();
    assert!(err.contains("model 'tiny'"), "{err}");

    // Two inputs for a one-input model are refused by name.
    let err = model.run(vec![("x".into(), x.clone()), ("z".into(), x)]).unwrap_err().to_string();
    assert!(err.contains("no input named 'z'"), "{err}");
}

#[test]
fn concurrent_runs_on_one_model_all_succeed() {
    let model = Arc::new(load(3));
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let model = model.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let v = i as f32;
                    let x = Tensor::new(vec![1, 4], TensorData::F32(vec![v; 4])).unwrap();
                    let out = model.run(vec![("x".into(), x)]).unwrap();
                    assert_eq!(out[0].1.data, TensorData::F32(vec![v * 2. + 1.; 4]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn missing_model_file_says_how_to_fix_it() {
    let spec = LoadSpec { target: Target::Cpu, instances: 1, threads: Threads::Auto, batching: Batching::default() };
    let err = Model::load(identity("ghost", PathBuf::from("/nonexistent/ghost.onnx")), vec![], &spec).err().unwrap().to_string();
    assert!(err.contains("model 'ghost'") && err.contains("make setup"), "{err}");
}

fn load(instances: usize) -> Model {
    let dir = std::env::temp_dir().join(format!("osprey-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file per call: tests run in parallel and must not read a file another is writing.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = dir.join(format!("tiny-{}.onnx", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    std::fs::write(&path, onnx::mul_add_model()).unwrap();
    let spec = LoadSpec { target: Target::Cpu, instances, threads: Threads::Auto, batching: Batching::default() };
    Model::load(identity("tiny", path), vec![], &spec).unwrap()
}

fn identity(name: &str, file: PathBuf) -> Identity {
    Identity { name: name.into(), version: "1".into(), file, sha256: String::new() }
}

#[path = "common/onnx.rs"]
mod onnx;
