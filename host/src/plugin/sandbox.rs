//! One request's sandbox: a fresh `Store` holding every stage's instance, with
//! a memory cap, an epoch deadline and the host interfaces. Stages share the
//! store's resource table, which is how handles (blob, image, tensors) move
//! from one stage to the next without copying.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::osprey::plugin::types::{self, ErrorKind, Frame};
use super::engine::{Engine, Plugin, EPOCH_TICK};
use super::imports::HostCtx;
use super::store::StoreData;
use super::{Blob, PluginError, StageErrorKind};
use super::wasi_nn::NnCtx;
use crate::nn::Registry;

pub use types::{Branch, ClassScore, Detection, Size};

/// What a chain produced, read out of its last frame.
#[derive(Debug, Default)]
pub struct Outcome {
    pub model: Option<String>,
    pub source: Option<(u32, u32)>,
    pub detections: Option<Vec<Detection>>,
    pub classes: Option<Vec<ClassScore>>,
    /// Version of the last model run, when the chain ran one.
    pub model_version: Option<String>,
    /// Time spent inside models (wasi-nn `compute`).
    pub inference: Duration,
    /// Further fields for the JSON answer, checked to be JSON (`frame.report`).
    pub report: Vec<(String, serde_json::Value)>,
    /// An encoded answer that replaces the JSON one (`frame.output`).
    pub output: Option<Blob>,
    /// Each stage's plugin and its time (instantiation and call, models included).
    pub stages: Vec<(String, Duration)>,
}

/// What a run starts from: the upload, and for routes with branches, what
/// each branch found.
#[derive(Default)]
pub struct Start {
    pub input: Option<Blob>,
    pub branches: Vec<types::Branch>,
}

/// Names a stage may not use in `frame.report`: the host's own answer fields.
pub const RESERVED_FIELDS: &[&str] = &["model", "model_version", "image", "detections", "top", "timing_ms", "error"];

/// One stage of a run: the plugin and its settings (JSON) for this request.
pub struct StageCall<'a> {
    pub plugin: &'a Plugin,
    pub settings: std::borrow::Cow<'a, str>,
}

/// Runs one request through the stages. Blocking: call it on a blocking thread.
pub struct Sandbox<'a> {
    pub engine: &'a Engine,
    pub registry: Arc<Registry>,
    pub request_id: u64,
}

impl Sandbox<'_> {
    pub fn run(&self, stages: &[StageCall<'_>], start: Start, deadline: Instant) -> Result<Outcome, PluginError> {
        let data = StoreData::new(
            NnCtx::new(self.registry.clone(), Some(deadline)),
            HostCtx::new(self.registry.clone(), self.request_id),
            self.engine.limits.memory_bytes,
        );
        let mut store = Store::new(&self.engine.engine, data);
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_trap();

        let sandbox = |e: wasmtime::Error| PluginError::Sandbox(e.to_string());
        let blob = match start.input {
            Some(input) => Some(store.data_mut().table.push(input).map_err(|e| sandbox(e.into()))?),
            None => None,
        };
        let mut frame = Frame {
            input: blob,
            image: None,
            source: None,
            placement: None,
            tensors: Vec::new(),
            model: None,
            detections: None,
            classes: None,
            branches: start.branches,
            report: Vec::new(),
            output: None,
        };
        let mut last = "";
        let mut times = Vec::with_capacity(stages.len());
        for stage in stages {
            let began = Instant::now();
            let until = stage_deadline(stage.plugin, deadline);
            apply_policy(&mut store, stage.plugin, self.engine.limits.memory_bytes, until.at);
            frame = run_stage(&mut store, stage, frame, until)?;
            times.push((stage.plugin.name.clone(), began.elapsed()));
            last = &stage.plugin.name;
        }
        let report = read_report(last, frame.report)?;
        let output = match frame.output {
            Some(blob) => Some(store.data_mut().table.delete(blob).map_err(|e| sandbox(e.into()))?),
            None => None,
        };
        Ok(Outcome {
            report,
            output,
            stages: times,
            model: frame.model,
            source: frame.source.map(|s| (s.width, s.height)),
            detections: frame.detections,
            classes: frame.classes,
            model_version: store.data().nn.last_model.as_ref().map(|(_, v)| v.clone()),
            inference: store.data().nn.inference,
        })
    }
}

/// How long a plugin's settings check may run: it reads a small JSON object.
const SETTINGS_CHECK: Duration = Duration::from_secs(2);

/// Asks `plugin` whether `settings` (a JSON object) suit it, in a sandbox of
/// its own with no models. `Ok` when they do, and when the plugin cannot say
/// (built for osprey:plugin@0.1.0, which has no `settings` export). Blocking.
pub fn check_settings(engine: &Engine, plugin: &Plugin, settings: &str) -> Result<(), PluginError> {
    let Some(check) = &plugin.settings_check else { return Ok(()) };
    let registry = Arc::new(Registry::default());
    let deadline = Instant::now() + SETTINGS_CHECK;
    let data = StoreData::new(NnCtx::new(registry.clone(), Some(deadline)), HostCtx::new(registry, 0), engine.limits.memory_bytes);
    let mut store = Store::new(&engine.engine, data);
    store.limiter(|s| &mut s.memory);
    store.epoch_deadline_trap();
    apply_policy(&mut store, plugin, engine.limits.memory_bytes, deadline);
    store.set_epoch_deadline((SETTINGS_CHECK.as_micros() / EPOCH_TICK.as_micros()) as u64 + 1);
    store.data_mut().host.plugin = plugin.name.clone();
    let result = plugin.pre.instance_pre().instantiate(&mut store).and_then(|instance| {
        let check = instance.get_typed_func::<(&str,), (Result<(), String>,)>(&mut store, check)?;
        let (answer,) = check.call(&mut store, (settings,))?;
        Ok(answer)
    });
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(PluginError::Settings { plugin: plugin.name.clone(), message }),
        Err(trap) if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) => {
            Err(PluginError::Settings { plugin: plugin.name.clone(), message: format!("its check of them ran past {} s", SETTINGS_CHECK.as_secs()) })
        }
        Err(trap) => Err(classify_trap(&store, &plugin.name, None, trap)),
    }
}

/// The report fields of the last stage, each checked to be JSON under a name of its own.
pub fn read_report(plugin: &str, fields: Vec<(String, String)>) -> Result<Vec<(String, serde_json::Value)>, PluginError> {
    let bad = |message: String| PluginError::Stage { plugin: plugin.into(), kind: StageErrorKind::Internal, message };
    fields
        .into_iter()
        .map(|(name, text)| {
            if RESERVED_FIELDS.contains(&name.as_str()) {
                return Err(bad(format!("report field '{name}' is one the host writes itself")));
            }
            let value = serde_json::from_str(&text).map_err(|e| bad(format!("report field '{name}' is not JSON: {e}")))?;
            Ok((name, value))
        })
        .collect()
}

/// The stage's end: the route's deadline, or sooner when its plugin has a
/// `deadline_ms` of its own (`own_ms` says which, for the error).
#[derive(Clone, Copy)]
struct StageDeadline {
    at: Instant,
    own_ms: Option<u64>,
}

fn stage_deadline(plugin: &Plugin, route: Instant) -> StageDeadline {
    match plugin.policy.deadline.map(|d| (Instant::now() + d, d)) {
        Some((own, d)) if own < route => StageDeadline { at: own, own_ms: Some(d.as_millis() as u64) },
        _ => StageDeadline { at: route, own_ms: None },
    }
}

/// The stage's plugin's policy, for the store while it runs: its memory cap,
/// the models it may load, and its deadline for the model queue.
fn apply_policy(store: &mut Store<StoreData>, plugin: &Plugin, server_memory: usize, until: Instant) {
    let data = store.data_mut();
    data.memory.limit = plugin.policy.memory_bytes.unwrap_or(server_memory);
    data.nn.allowed = plugin.policy.models.clone().map(|models| (plugin.name.clone(), models));
    data.nn.deadline = Some(until);
}

fn run_stage(store: &mut Store<StoreData>, stage: &StageCall<'_>, frame: Frame, deadline: StageDeadline) -> Result<Frame, PluginError> {
    let plugin = &stage.plugin.name;
    let past = || PluginError::Deadline { plugin: plugin.clone(), own_ms: deadline.own_ms };
    let (own_ms, deadline) = (deadline.own_ms, deadline.at);
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(past());
    }
    store.set_epoch_deadline((left.as_micros() / EPOCH_TICK.as_micros()) as u64 + 1);
    store.data_mut().host.plugin = plugin.clone();
    let result = stage
        .plugin
        .pre
        .instantiate(&mut *store)
        .and_then(|p| p.osprey_plugin_stage().call_run(&mut *store, &frame, &stage.settings));
    // A model that refused for load decides the answer, whatever the plugin made of it.
    if let (Err(_) | Ok(Err(_)), Some(refused)) = (&result, store.data_mut().nn.refused.take()) {
        return Err(match refused {
            crate::nn::NnError::Deadline { .. } => past(),
            e @ crate::nn::NnError::Unavailable { .. } => PluginError::ModelUnavailable(e.to_string()),
            e @ crate::nn::NnError::RemoteFailed { .. } => PluginError::RemoteFailed(e.to_string()),
            other => PluginError::Overloaded(other.to_string()),
        });
    }
    match result {
        Ok(Ok(next)) => Ok(next),
        Ok(Err(e)) => Err(PluginError::Stage { plugin: plugin.clone(), kind: kind_of(e.kind), message: e.message }),
        Err(trap) => Err(classify_trap(store, plugin, own_ms, trap)),
    }
}

fn classify_trap(store: &Store<StoreData>, plugin: &str, own_ms: Option<u64>, trap: wasmtime::Error) -> PluginError {
    let data = store.data();
    if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return PluginError::Deadline { plugin: plugin.into(), own_ms };
    }
    if data.memory.hit {
        return PluginError::OutOfMemory { plugin: plugin.into(), limit_mib: (data.memory.limit >> 20) as u64 };
    }
    // The root cause and what the guest printed (a panic message) make the
    // answer; the wasm backtrace only goes to the debug log.
    tracing::debug!(plugin, "trap: {trap:?}");
    let cause = trap.root_cause().to_string();
    let said = String::from_utf8_lossy(&data.stderr.contents())
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join(" ");
    let why = if said.is_empty() { cause } else { format!("{cause}; it printed: {said}") };
    PluginError::Trap { plugin: plugin.into(), why }
}

fn kind_of(k: ErrorKind) -> StageErrorKind {
    match k {
        ErrorKind::BadImage => StageErrorKind::BadImage,
        ErrorKind::BadInput => StageErrorKind::BadInput,
        ErrorKind::UnsupportedType => StageErrorKind::UnsupportedType,
        ErrorKind::TooLarge => StageErrorKind::TooLarge,
        ErrorKind::BadSettings => StageErrorKind::BadSettings,
        ErrorKind::ModelFailed => StageErrorKind::ModelFailed,
        ErrorKind::Internal => StageErrorKind::Internal,
    }
}
