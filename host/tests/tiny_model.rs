//! The ONNX Runtime layer on a tiny model the test writes itself
//! (`y = x * 2 + 1`, input `x` of shape [N, 4]): loading, named and unnamed
//! inputs, wrong tensors, and concurrent runs on one model.

use std::path::PathBuf;
use std::sync::Arc;

use osprey::nn::{Batching, Identity, LoadSpec, Model, Target, Tensor, TensorData};

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
    let spec = LoadSpec { target: Target::Cpu, instances: 1, threads: 1, batching: Batching::default() };
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
    let spec = LoadSpec { target: Target::Cpu, instances, threads: 1, batching: Batching::default() };
    Model::load(identity("tiny", path), vec![], &spec).unwrap()
}

fn identity(name: &str, file: PathBuf) -> Identity {
    Identity { name: name.into(), version: "1".into(), file, sha256: String::new() }
}

/// Just enough protobuf to write an ONNX model: `y = x * 2 + 1`.
mod onnx {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn int(field: u64, v: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(v, out);
    }
    fn bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint((field << 3) | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn msg(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = Vec::new();
        f(&mut v);
        v
    }

    const FLOAT: u64 = 1;

    fn scalar(name: &str, value: f32) -> Vec<u8> {
        msg(|t| {
            int(1, 1, t); // dims: [1]
            int(2, FLOAT, t);
            bytes(8, name.as_bytes(), t);
            bytes(9, &value.to_le_bytes(), t);
        })
    }

    fn value_info(name: &str) -> Vec<u8> {
        let shape = msg(|s| {
            bytes(1, &msg(|d| bytes(2, b"N", d)), s);
            bytes(1, &msg(|d| int(1, 4, d)), s);
        });
        let tensor = msg(|t| {
            int(1, FLOAT, t);
            bytes(2, &shape, t);
        });
        msg(|v| {
            bytes(1, name.as_bytes(), v);
            bytes(2, &msg(|ty| bytes(1, &tensor, ty)), v);
        })
    }

    fn node(op: &str, inputs: [&str; 2], output: &str) -> Vec<u8> {
        msg(|n| {
            for i in inputs {
                bytes(1, i.as_bytes(), n);
            }
            bytes(2, output.as_bytes(), n);
            bytes(3, op.as_bytes(), n);
            bytes(4, op.as_bytes(), n);
        })
    }

    pub fn mul_add_model() -> Vec<u8> {
        let graph = msg(|g| {
            bytes(1, &node("Mul", ["x", "two"], "x2"), g);
            bytes(1, &node("Add", ["x2", "one"], "y"), g);
            bytes(2, b"tiny", g);
            bytes(5, &scalar("two", 2.0), g);
            bytes(5, &scalar("one", 1.0), g);
            bytes(11, &value_info("x"), g);
            bytes(12, &value_info("y"), g);
        });
        msg(|m| {
            int(1, 8, m); // ir_version
            bytes(7, &graph, m);
            bytes(8, &msg(|o| int(2, 13, o)), m); // opset 13
        })
    }
}
