//! Sessions never bring pools of their own unless a model asks: by default a
//! model's sessions run on their workers' threads, and one more session on
//! the environment's one intra-op pool takes a run alone in the process, so
//! loading more sessions adds their worker threads and nothing else, while a
//! model with `threads` of its own gets pools of its own. Threads are counted
//! from /proc/self/task, so this is the only test in its binary (and process).

use std::path::PathBuf;

use osprey::nn::{Batching, Identity, LoadSpec, Model, PoolSettings, Target, Tensor, TensorData, Threads};

#[path = "common/onnx.rs"]
mod onnx;

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task").expect("/proc/self/task").count()
}

#[test]
fn sessions_share_the_process_pool_unless_a_model_asks_for_its_own() {
    let runs = |threads: &str| {
        let labels = osprey::metrics::ModelRunLabels { model: "tiny".into(), threads: threads.into() };
        osprey::metrics::global().model_runs.get_or_create(&labels).get()
    };
    osprey::nn::runtime::configure(PoolSettings { threads: 4, max_runs: 2 });
    let before = threads_now();
    osprey::nn::runtime::environment().expect("ONNX Runtime (run `make setup`)");
    // The calling run's thread is one of the pool's 4: ONNX Runtime starts 3
    // (and one more thread of its own, pool or not).
    assert!(threads_now() - before >= 3, "the shared pool");

    let before = threads_now();
    let auto = load(LoadSpec { target: Target::Cpu, instances: 3, threads: Threads::Auto, batching: Batching::default() });
    assert_eq!(threads_now() - before, 3, "3 single-thread sessions and one on the shared pool: a worker each for the 3, no pool");

    let before = threads_now();
    let own = load(LoadSpec { target: Target::Cpu, instances: 2, threads: Threads::Own(3), batching: Batching::default() });
    assert_eq!(threads_now() - before, 2 * (1 + 2), "2 sessions with threads = 3: a worker and 2 pool threads each");

    let run = |model: &Model| {
        let x = Tensor::new(vec![1, 4], TensorData::F32(vec![1., 2., 3., 4.])).unwrap();
        let out = model.run(vec![("x".into(), x)]).unwrap();
        assert_eq!(out[0].1.data, TensorData::F32(vec![3., 5., 7., 9.]));
    };
    // Alone in the process, a run gets the shared pool; beside another run
    // (a place held in the gate stands for it), its worker's own thread.
    let (pool_before, own_before) = (runs("shared_pool"), runs("own"));
    run(&auto);
    assert_eq!((runs("shared_pool") - pool_before, runs("own") - own_before), (1, 0), "a lone run");
    {
        let _other = osprey::nn::pool::gate().enter();
        run(&auto);
    }
    assert_eq!((runs("shared_pool") - pool_before, runs("own") - own_before), (1, 1), "a run beside another");
    // A model with threads of its own never takes the shared pool.
    run(&own);
    assert_eq!((runs("shared_pool") - pool_before, runs("own") - own_before), (1, 2), "threads = 3");
}

fn load(spec: LoadSpec) -> Model {
    let dir = std::env::temp_dir().join(format!("osprey-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!("tiny-{}.onnx", spec.instances));
    std::fs::write(&path, onnx::mul_add_model()).unwrap();
    let id = Identity { name: "tiny".into(), version: "1".into(), file: path, sha256: String::new() };
    Model::load(id, vec![], &spec).unwrap()
}
