//! A loaded model: ONNX Runtime sessions over one file, behind its scheduler,
//! or a remote model (`remote`) that another server runs.
//!
//! `Session::run` needs `&mut self`, so one session serves one request at a
//! time; more sessions let concurrent requests on the same model run side by
//! side instead of queueing behind one lock, at the price of one more copy of
//! the weights each. Unless a model asks for threads of its own, each of its
//! `instances` sessions runs on one thread (its worker's), and one more
//! session on the environment's shared intra-op pool takes a run that is
//! alone in the process: a lone request gets every core, while concurrent
//! ones run one a core side by side instead of splitting every operator
//! between them (`Threads::Auto`). All allocate from the environment's shared
//! arena (see `runtime`). Callers are blocking-pool threads (never tokio
//! workers), so waiting for a free session simply blocks.

use std::path::Path;
use std::sync::Arc;

use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::remote::{Opened, RemoteModel};
use super::scheduler::{Batching, Inputs, Runner, Scheduler};
use super::tensor::{ElemType, Tensor, TensorData};
use super::NnError;

/// Where a model asked to run, from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// GPU when the runtime has CUDA and a GPU answers, else CPU.
    Auto,
    Cpu,
    Gpu,
}

/// The execution provider a model actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda,
    /// Another server runs it (Open Inference Protocol).
    Remote,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::Remote => "remote",
        })
    }
}

/// How to load a model: from the validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSpec {
    pub target: Target,
    /// Sessions in the pool: requests that can run on this model at once.
    pub instances: usize,
    pub threads: Threads,
    pub batching: Batching,
}

/// Where a model's sessions find the threads for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// No `threads` key: one thread a session, plus a session on the
    /// process's shared intra-op pool for a run alone in the process. On 2
    /// cores, sessions on the shared pool alone served 0.67-0.85x the
    /// saturation of single-thread ones (README, Benchmarks): two runs that
    /// each split every operator over both cores wait on each other's
    /// threads; two runs on a core each do not.
    Auto,
    /// A pool of this many threads per session (`threads = N`), outside the
    /// shared one: the model never waits on another's work, but its threads
    /// compete with the shared pool's for the cores.
    Own(usize),
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threads::Auto => f.write_str("1 per session, all cores when alone"),
            Threads::Own(n) => write!(f, "{n} per session"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub ty: Option<ElemType>,
    /// Dimensions as the file declares them; -1 where dynamic.
    pub shape: Vec<i64>,
}

/// Which model this is: name, version, and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub version: String,
    /// The model file; for a remote model, its location (`RemoteSpec::location`).
    pub file: std::path::PathBuf,
    /// SHA-256 of the model file; for a remote model, of its metadata.
    pub sha256: String,
}

/// A remote run asked for without a deadline (`Model::run`) still ends,
/// after as long as a route's default deadline.
const REMOTE_DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Model {
    id: Identity,
    loaded_at: std::time::SystemTime,
    provider: Provider,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    labels: Arc<Vec<String>>,
    spec: LoadSpec,
    backend: Backend,
}

/// Who runs the model.
enum Backend {
    /// Sessions of this process, behind the model's queue.
    Local(Arc<Scheduler>),
    /// Another server, which queues and batches on its side: requests go out
    /// as they come, bounded by the upstream pool's per-node cap.
    Remote(Arc<dyn RemoteModel>),
}

impl Drop for Model {
    /// The last request on this model is done (it held an `Arc`): let the
    /// workers drain and exit, which frees the sessions.
    fn drop(&mut self) {
        if let Backend::Local(s) = &self.backend {
            s.close();
        }
    }
}

/// A worker's session, and the model's session on the shared pool (`Threads::Auto`).
struct SessionRunner {
    model: String,
    session: Session,
    wide: Option<Arc<std::sync::Mutex<Session>>>,
}

impl Runner for SessionRunner {
    fn run(&mut self, inputs: &Inputs, alone: bool) -> Result<Inputs, NnError> {
        let values = inputs.iter().map(|(name, t)| Ok((name.as_str(), tensor_ref(t)?))).collect::<Result<Vec<_>, NnError>>()?;
        let model = &self.model;
        let convert = |outs: ort::session::SessionOutputs<'_>| -> Result<Inputs, NnError> {
            outs.iter().map(|(name, v)| Ok((name.to_string(), from_value(model, name, &v)?))).collect()
        };
        let failed = |e: ort::Error| NnError::Runtime(format!("model '{model}': {e}"));
        let count = |threads: &str| {
            let labels = crate::metrics::ModelRunLabels { model: model.clone(), threads: threads.into() };
            crate::metrics::global().model_runs.get_or_create(&labels).inc();
        };
        // Alone in the process: every core. The lock is free unless this
        // model's other worker entered alone a moment ago and still runs.
        if let Some(mut wide) = self.wide.as_ref().filter(|_| alone).and_then(|w| w.try_lock().ok()) {
            count("shared_pool");
            return convert(wide.run(values).map_err(failed)?);
        }
        count("own");
        convert(self.session.run(values).map_err(failed)?)
    }
}

impl Model {
    /// Loads `instances` sessions of the file. Blocking: call it off the async runtime.
    pub fn load(id: Identity, labels: Vec<String>, spec: &LoadSpec) -> Result<Self, NnError> {
        let env = super::runtime::environment()?;
        let (name, file) = (id.name.as_str(), id.file.as_path());
        // No `PrepackedWeights` container: each session keeps its own copy of the
        // weights, pre-packed ones included. ONNX Runtime shares pre-packed
        // weights only for initializers added through `AddInitializer`, not those
        // read from the file; with two sessions of each default model, RSS was
        // 413.0 MiB with a container and 412.8 MiB without.
        let own = Some(match spec.threads {
            Threads::Auto => 1,
            Threads::Own(n) => n,
        });
        let (first, provider) = open_session(env, name, file, spec.target, own)?;
        let inputs: Vec<Port> = first.inputs().iter().map(port).collect();
        let outputs = first.outputs().iter().map(port).collect();
        let fixed_batch = inputs.iter().any(|p| p.shape.first().is_some_and(|&d| d > 0));
        if spec.batching.max_batch > 1 && fixed_batch {
            let why = "its inputs have a fixed batch size, so it cannot batch requests: set max_batch = 1";
            return Err(NnError::Load { model: name.into(), file: file.into(), why: why.into() });
        }
        // The session for a run alone: on a CPU with more than one core,
        // unless the model asked for threads of its own (a GPU runs a lone
        // request no faster on a second session).
        let wide = (spec.threads == Threads::Auto && provider == Provider::Cpu && super::runtime::pool_threads() > 1)
            .then(|| open_session(env, name, file, Target::Cpu, None).map(|(s, _)| Arc::new(std::sync::Mutex::new(s))))
            .transpose()?;
        let mut runners = vec![SessionRunner { model: name.into(), session: first, wide: wide.clone() }];
        for _ in 1..spec.instances.max(1) {
            let session = open_session(env, name, file, spec.target, own)?.0;
            runners.push(SessionRunner { model: name.into(), session, wide: wide.clone() });
        }
        // A session's first run allocates its buffers: pay that now, not on a
        // request (the first runner's alone run warms the wide session).
        if let Some(zeros) = zero_inputs(&inputs) {
            let mut warmed = runners.iter_mut().try_for_each(|r| r.run(&zeros, false).map(drop));
            if wide.is_some() {
                warmed = warmed.and_then(|()| runners[0].run(&zeros, true).map(drop));
            }
            if let Err(e) = warmed {
                tracing::warn!(model = name, "warm-up run on zeros failed (serving anyway): {e}");
            }
        }
        let scheduler = Scheduler::new(name, spec.batching);
        scheduler.start(runners);
        Ok(Model {
            id,
            loaded_at: std::time::SystemTime::now(),
            provider,
            inputs,
            outputs,
            labels: Arc::new(labels),
            spec: spec.clone(),
            backend: Backend::Local(scheduler),
        })
    }

    /// A model another server runs, with the ports its metadata declared.
    pub fn remote(id: Identity, labels: Vec<String>, spec: &LoadSpec, opened: Opened) -> Self {
        Model {
            id,
            loaded_at: std::time::SystemTime::now(),
            provider: Provider::Remote,
            inputs: opened.inputs,
            outputs: opened.outputs,
            labels: Arc::new(labels),
            spec: spec.clone(),
            backend: Backend::Remote(opened.backend),
        }
    }

    pub fn name(&self) -> &str {
        &self.id.name
    }

    pub fn identity(&self) -> &Identity {
        &self.id
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn spec(&self) -> &LoadSpec {
        &self.spec
    }

    pub fn loaded_at(&self) -> std::time::SystemTime {
        self.loaded_at
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    pub fn label(&self, class_id: u32) -> Option<&str> {
        self.labels.get(class_id as usize).map(String::as_str).filter(|l| !l.is_empty())
    }

    /// Runs the model on named inputs; returns every output, in the model's order.
    ///
    /// Input names are matched to the model's inputs; when the model has one
    /// input and one tensor is given, its name does not matter. Blocking: the
    /// request waits its turn in the model's queue (and may be batched).
    pub fn run(&self, inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, NnError> {
        self.run_until(inputs, None)
    }

    /// Like `run`, but gives up unrun when `deadline` passes while queued
    /// (for a remote model: gives the server what is left of it).
    pub fn run_until(&self, inputs: Vec<(String, Tensor)>, deadline: Option<std::time::Instant>) -> Result<Vec<(String, Tensor)>, NnError> {
        let ordered = self.order_inputs(inputs)?;
        match &self.backend {
            Backend::Local(s) => s.submit(ordered, deadline),
            Backend::Remote(r) => {
                let deadline = deadline.unwrap_or_else(|| std::time::Instant::now() + REMOTE_DEFAULT_DEADLINE);
                r.infer(ordered, deadline)
            }
        }
    }

    fn order_inputs(&self, mut given: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, NnError> {
        if self.inputs.len() == 1 && given.len() == 1 {
            let (_, t) = given.pop().expect("one input");
            return Ok(vec![(self.inputs[0].name.clone(), t)]);
        }
        let mut ordered = Vec::with_capacity(self.inputs.len());
        for port in &self.inputs {
            let at = given.iter().position(|(n, _)| n == &port.name).ok_or_else(|| {
                NnError::InvalidTensor(format!("model '{}' needs an input named '{}'", self.id.name, port.name))
            })?;
            ordered.push(given.swap_remove(at));
        }
        if let Some((extra, _)) = given.first() {
            return Err(NnError::InvalidTensor(format!("model '{}' has no input named '{extra}'", self.id.name)));
        }
        Ok(ordered)
    }
}

/// A session of the file on `target`, with `own` threads of its own or
/// (`None`) on the shared pool.
fn open_session(
    env: &ort::environment::Environment,
    name: &str,
    file: &Path,
    target: Target,
    own: Option<usize>,
) -> Result<(Session, Provider), NnError> {
    let fail = |e: String| NnError::Load { model: name.to_string(), file: file.to_path_buf(), why: e };
    if !file.is_file() {
        return Err(fail("no such file (run `make setup` to fetch the models)".into()));
    }
    let builder = || session_builder(env, own).map_err(|e| e.to_string());
    if target != Target::Cpu {
        let cuda = ort::ep::CUDA::default().build().error_on_failure();
        let attempt = builder().and_then(|b| b.with_execution_providers([cuda]).map_err(|e| e.to_string()));
        match attempt.and_then(|mut b| b.commit_from_file(file).map_err(|e| e.to_string())) {
            Ok(s) => return Ok((s, Provider::Cuda)),
            Err(why) if target == Target::Gpu => return Err(fail(format!("target = \"gpu\" but CUDA is not usable: {why}"))),
            Err(why) => tracing::debug!(model = name, "CUDA not usable, using CPU: {why}"),
        }
    }
    let session = builder()
        .and_then(|mut b| b.commit_from_file(file).map_err(|e| e.to_string()))
        .map_err(fail)?;
    Ok((session, Provider::Cpu))
}

/// A session's options: on the shared pool (`None`), or with threads of its
/// own (1: none but the caller's); on the shared CPU arena either way.
fn session_builder(env: &ort::environment::Environment, own: Option<usize>) -> ort::Result<SessionBuilder> {
    let b = Session::builder(env)?.with_env_allocators()?;
    Ok(match own {
        // The environment has a global pool, so `ort` turns the session's own pools off.
        None => b,
        Some(n) => b.with_independent_thread_pool()?.with_intra_threads(n.max(1))?.with_intra_op_spinning(false)?,
    })
}

/// A zero tensor per input, dynamic dimensions taken as 1; `None` when an
/// input's element type cannot be made.
fn zero_inputs(inputs: &[Port]) -> Option<Vec<(String, Tensor)>> {
    inputs
        .iter()
        .map(|p| {
            let dims: Vec<u32> = p.shape.iter().map(|&d| if d > 0 { d as u32 } else { 1 }).collect();
            let n = dims.iter().product::<u32>() as usize;
            let data = match p.ty? {
                ElemType::F32 => TensorData::F32(vec![0.0; n]),
                ElemType::F64 => TensorData::F64(vec![0.0; n]),
                ElemType::U8 => TensorData::U8(vec![0; n]),
                ElemType::I32 => TensorData::I32(vec![0; n]),
                ElemType::I64 => TensorData::I64(vec![0; n]),
            };
            Some((p.name.clone(), Tensor { dims, data }))
        })
        .collect()
}

fn port(o: &ort::value::Outlet) -> Port {
    match o.dtype() {
        ValueType::Tensor { ty, shape, .. } => Port { name: o.name().to_string(), ty: elem_type(*ty), shape: shape.to_vec() },
        _ => Port { name: o.name().to_string(), ty: None, shape: Vec::new() },
    }
}

fn elem_type(t: TensorElementType) -> Option<ElemType> {
    Some(match t {
        TensorElementType::Float32 => ElemType::F32,
        TensorElementType::Float64 => ElemType::F64,
        TensorElementType::Uint8 => ElemType::U8,
        TensorElementType::Int32 => ElemType::I32,
        TensorElementType::Int64 => ElemType::I64,
        _ => return None,
    })
}

fn tensor_ref(t: &Tensor) -> Result<ort::session::SessionInputValue<'_>, NnError> {
    let shape = t.shape_i64();
    let bad = |e: ort::Error| NnError::InvalidTensor(e.to_string());
    Ok(match &t.data {
        TensorData::F32(v) => TensorRef::from_array_view((shape, v.as_slice())).map_err(bad)?.into(),
        TensorData::F64(v) => TensorRef::from_array_view((shape, v.as_slice())).map_err(bad)?.into(),
        TensorData::U8(v) => TensorRef::from_array_view((shape, v.as_slice())).map_err(bad)?.into(),
        TensorData::I32(v) => TensorRef::from_array_view((shape, v.as_slice())).map_err(bad)?.into(),
        TensorData::I64(v) => TensorRef::from_array_view((shape, v.as_slice())).map_err(bad)?.into(),
    })
}

fn from_value(model: &str, name: &str, v: &ort::value::DynValueRef<'_>) -> Result<Tensor, NnError> {
    let odd = |what: String| NnError::Runtime(format!("model '{model}' output '{name}': {what}"));
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(odd(format!("not a tensor ({other:?})"))),
    };
    fn take<T: ort::value::PrimitiveTensorElementType + Clone>(
        v: &ort::value::DynValueRef<'_>,
    ) -> Result<(Vec<u32>, Vec<T>), ort::Error> {
        let (shape, data) = v.try_extract_tensor::<T>()?;
        Ok((shape.iter().map(|&d| d as u32).collect(), data.to_vec()))
    }
    let err = |e: ort::Error| odd(e.to_string());
    let (dims, data) = match ty {
        TensorElementType::Float32 => take::<f32>(v).map(|(d, x)| (d, TensorData::F32(x))).map_err(err)?,
        TensorElementType::Float64 => take::<f64>(v).map(|(d, x)| (d, TensorData::F64(x))).map_err(err)?,
        TensorElementType::Uint8 => take::<u8>(v).map(|(d, x)| (d, TensorData::U8(x))).map_err(err)?,
        TensorElementType::Int32 => take::<i32>(v).map(|(d, x)| (d, TensorData::I32(x))).map_err(err)?,
        TensorElementType::Int64 => take::<i64>(v).map(|(d, x)| (d, TensorData::I64(x))).map_err(err)?,
        other => return Err(odd(format!("element type {other:?} is not supported by wasi-nn"))),
    };
    Tensor::new(dims, data)
}

