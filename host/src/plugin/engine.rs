//! The wasmtime engine shared by every plugin, and compiling a plugin once
//! into a pre-instantiated `Plugin`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{self, StageOnlyPre as PluginPre};
use super::store::StoreData;
use super::PluginError;
use super::wasi_nn::{HasNn, NnView};

/// How often the epoch advances: the granularity of plugin deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits every sandbox runs under.
#[derive(Debug, Clone, Copy)]
pub struct SandboxLimits {
    /// Linear memory one plugin instance may grow to.
    pub memory_bytes: usize,
    /// Plugin instances that may exist at once (sizes the pooling allocator).
    pub max_instances: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits { memory_bytes: 256 << 20, max_instances: 256 }
    }
}

impl From<&crate::config::ServerSettings> for SandboxLimits {
    fn from(s: &crate::config::ServerSettings) -> Self {
        SandboxLimits { memory_bytes: s.plugin_memory_bytes, max_instances: s.max_plugin_instances }
    }
}

/// A compiled plugin, ready to instantiate per request.
pub struct Plugin {
    pub name: String,
    pub path: std::path::PathBuf,
    pub sha256: String,
    pub loaded_at: std::time::SystemTime,
    /// What its `[plugins.NAME]` lets it do (models, memory, deadline); the
    /// sandbox applies it around each call.
    pub policy: crate::config::PluginPolicy,
    pub(crate) pre: PluginPre<StoreData>,
    /// Its `osprey:plugin/settings` `check` function; `None` for a plugin
    /// built for osprey:plugin@0.1.0, which has none.
    pub(crate) settings_check: Option<wasmtime::component::ComponentExportIndex>,
}

#[derive(Clone)]
pub struct Engine {
    pub(crate) engine: wasmtime::Engine,
    linker: Arc<Linker<StoreData>>,
    pub(crate) limits: SandboxLimits,
    /// Compiled plugins kept between starts (`[server] compiled_cache`).
    compiled: Option<Arc<super::compiled::Compiled>>,
}

/// Bytes of each pooled linear memory kept mapped between calls.
const KEEP_RESIDENT: usize = 16 << 20;

impl Engine {
    /// Builds the engine and starts its epoch ticker (a thread that ends with the engine).
    pub fn new(limits: SandboxLimits) -> Result<Self, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.max_instances)
            .total_core_instances(limits.max_instances * 4)
            .total_memories(limits.max_instances * 2)
            .total_tables(limits.max_instances * 4)
            .max_memory_size(limits.memory_bytes)
            // A stage that reads a model's output (YOLO's head is 8.6 MB) touches
            // that much fresh memory per call: keep it resident and zero it on
            // reuse instead of giving it back and faulting it in again.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config).map_err(|e| PluginError::Sandbox(e.to_string()))?;
        let linker = linker(&engine).map_err(|e| PluginError::Sandbox(e.to_string()))?;
        spawn_ticker(engine.weak());
        Ok(Engine { engine, linker: Arc::new(linker), limits, compiled: None })
    }

    /// The engine a server runs: its sandbox limits, and its folder of
    /// compiled plugins (a folder it cannot use is logged, and plugins are
    /// then compiled at every start).
    pub fn for_server(settings: &crate::config::ServerSettings) -> Result<Self, PluginError> {
        let mut engine = Engine::new(SandboxLimits::from(settings))?;
        engine.compiled = super::compiled::Compiled::open(&engine.engine, &settings.compiled_cache).map(Arc::new);
        Ok(engine)
    }

    /// Compiles and pre-instantiates a plugin. Blocking (tens of ms): call it off the async runtime.
    pub fn compile(&self, name: &str, path: &Path) -> Result<Plugin, PluginError> {
        self.compile_file(name, path, &PluginFile::read(name, path)?)
    }

    /// Compiles a plugin file already read (and hashed, which the snapshot
    /// compares first to reuse an unchanged plugin's build).
    pub fn compile_file(&self, name: &str, path: &Path, file: &PluginFile) -> Result<Plugin, PluginError> {
        let fail = |why: String| PluginError::Load { plugin: name.into(), path: path.display().to_string(), why };
        let (bytes, sha256) = (&file.bytes[..], file.sha256.clone());
        let component = match &self.compiled {
            Some(cache) => cache.component(&self.engine, &sha256, bytes),
            None => Component::new(&self.engine, bytes),
        };
        let component = component.map_err(|e| fail(format!("not a valid component: {e}")))?;
        if let Some(why) = super::inspect::export_problem(&self.engine, &component) {
            return Err(fail(why));
        }
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| fail(format!("does not fit the osprey:plugin world: {e:#}")))?;
        let pre = PluginPre::new(instance_pre).map_err(|e| fail(format!("does not export osprey:plugin/stage: {e:#}")))?;
        let settings_check = super::inspect::settings_export(&component);
        Ok(Plugin { name: name.to_string(), path: path.to_path_buf(), sha256, loaded_at: std::time::SystemTime::now(), policy: Default::default(), pre, settings_check })
    }
}

impl Engine {
    /// Why the linker cannot satisfy a component's imports (the first it
    /// misses, in wasmtime's words); `None` when it can.
    pub(crate) fn link_problem(&self, component: &Component) -> Option<String> {
        self.linker.instantiate_pre(component).err().map(|e| format!("does not fit the osprey:plugin world: {e:#}"))
    }
}

/// Reads a plugin file, with the fix in the error when it is missing.
/// A plugin's bytes with their SHA-256, which names its build (the compiled
/// cache) and tells a reload whether the file changed.
pub struct PluginFile {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

impl PluginFile {
    pub fn read(name: &str, path: &Path) -> Result<Self, PluginError> {
        let bytes = std::fs::read(path).map_err(|e| PluginError::Load {
            plugin: name.into(),
            path: path.display().to_string(),
            why: format!("{e} (run `make plugins` to build the plugins)"),
        })?;
        Ok(Self::from(bytes))
    }
}

impl From<Vec<u8>> for PluginFile {
    fn from(bytes: Vec<u8>) -> Self {
        let sha256 = hex(&Sha256::digest(&bytes));
        Self { bytes, sha256 }
    }
}

fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<StoreData>> {
    use bindings::osprey::plugin::{host, imaging, types};
    use bindings::wasi::nn::{errors, graph, inference, tensor};
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    fn nn(s: &mut StoreData) -> NnView<'_> {
        s.nn_view()
    }
    tensor::add_to_linker::<_, HasNn>(&mut linker, nn)?;
    errors::add_to_linker::<_, HasNn>(&mut linker, nn)?;
    inference::add_to_linker::<_, HasNn>(&mut linker, nn)?;
    graph::add_to_linker::<_, HasNn>(&mut linker, nn)?;
    fn hv(s: &mut StoreData) -> super::imports::HostView<'_> {
        s.host_view()
    }
    types::add_to_linker::<_, super::imports::HasHost>(&mut linker, hv)?;
    imaging::add_to_linker::<_, super::imports::HasHost>(&mut linker, hv)?;
    host::add_to_linker::<_, super::imports::HasHost>(&mut linker, hv)?;
    Ok(linker)
}

/// Advances the engine's epoch every tick so deadlines can interrupt guests;
/// stops once the engine is gone.
fn spawn_ticker(engine: wasmtime::EngineWeak) {
    std::thread::Builder::new()
        .name("osprey-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        })
        .expect("spawn epoch thread");
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
