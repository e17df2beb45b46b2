//! What is loaded now: compiled plugins, models and routes, built together
//! and immutable. The server holds it in an `ArcSwap`; a reload builds a new
//! one aside (reusing every plugin and model whose bytes did not change) and
//! swaps it in whole. Requests keep the snapshot they started on, so an old
//! model is freed when its last request ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::chain::{self, Chain};
use crate::config::{Config, InputSpec, ModelDef, ModelSource, RouteDef};
use crate::metrics::ModelVersionLabels;
use crate::nn::{Connector, Identity, Model, NnError, NoRemotes, Registry, RemoteSpec};
use crate::plugin::engine::{hex, PluginFile};
use crate::plugin::{Engine, Plugin, PluginError};

pub struct Snapshot {
    /// Counts snapshots since start: 1 is the first, each reload adds one.
    pub generation: u64,
    pub built_at: SystemTime,
    pub config: Arc<Config>,
    pub engine: Engine,
    pub registry: Arc<Registry>,
    pub plugins: Vec<Arc<Plugin>>,
    pub routes: Vec<Route>,
}

pub struct Route {
    pub method: String,
    pub path: String,
    pub max_body_bytes: usize,
    pub chain: Chain,
    pub cache_ttl: Option<std::time::Duration>,
    pub rate_limit: Option<crate::ratelimit::Limit>,
    /// Route, plugin builds, stage settings and model versions: part of every
    /// cache key, so a reload that changes any of them never serves an old answer.
    pub version_key: String,
    /// Multipart field → index of the route whose chain runs on it.
    pub branches: Vec<(String, usize)>,
    /// The pool whose nodes answer this route, instead of `chain` (then empty).
    pub upstream: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Model(#[from] NnError),
    /// A stage's plugin refused the settings the config gives it.
    #[error("{at}: {source}")]
    Settings { at: String, source: PluginError },
}

impl Snapshot {
    /// Publishes what this snapshot serves as metrics: its generation and its
    /// model versions (on start and after every reload that swaps it in).
    pub fn announce(&self) {
        let metrics = crate::metrics::global();
        metrics.generation.set(self.generation as i64);
        metrics.models.clear();
        for m in self.registry.iter() {
            let id = m.identity();
            let labels = ModelVersionLabels { model: id.name.clone(), version: id.version.clone(), provider: m.provider().to_string() };
            metrics.models.get_or_create(&labels).set(1);
        }
    }

    /// A snapshot without remote models (`build_with` for those).
    pub fn build(config: Config, engine: &Engine, previous: Option<&Snapshot>) -> Result<Snapshot, SnapshotError> {
        Self::build_with(config, engine, previous, &NoRemotes)
    }

    /// Compiles every plugin and loads every model version, reusing those of
    /// `previous` whose files did not change; `remotes` opens the remote
    /// models. Blocking (up to seconds): run it before serving or on a
    /// blocking thread, never on an async worker.
    pub fn build_with(config: Config, engine: &Engine, previous: Option<&Snapshot>, remotes: &dyn Connector) -> Result<Snapshot, SnapshotError> {
        let mut registry = Registry::default();
        for def in &config.models {
            let versions = match &def.source {
                ModelSource::Remote(spec) => vec![load_remote(def, spec, previous, remotes)?],
                _ => load_versions(def, previous)?,
            };
            registry.insert_versions(versions);
        }
        let mut plugins = HashMap::new();
        for def in &config.plugins {
            let file = PluginFile::read(&def.name, &def.file)?;
            // A changed policy makes a new Plugin (compiled again, or read from the
            // compiled cache): the old snapshot keeps the old one for its requests.
            let reused = previous.and_then(|p| p.plugins.iter().find(|o| o.name == def.name && o.path == def.file && o.sha256 == file.sha256 && o.policy == def.policy));
            let plugin = match reused {
                Some(p) => p.clone(),
                None => {
                    let p = engine.compile_file(&def.name, &def.file, &file)?;
                    let p = Arc::new(crate::plugin::Plugin { policy: def.policy.clone(), ..p });
                    tracing::info!(plugin = def.name, sha256 = p.sha256, "plugin compiled from {}", def.file.display());
                    p
                }
            };
            plugins.insert(def.name.clone(), plugin);
        }
        // Before serving: a misspelt setting fails the start or the reload
        // here, where the config writes it, not every request with a 500.
        for r in &config.routes {
            chain::check_settings(r, &plugins, engine).map_err(|(at, source)| SnapshotError::Settings { at, source })?;
        }
        let mut routes: Vec<Route> = config.routes.iter().map(|r| route(r, &plugins, &registry)).collect();
        link_branches(&config, &mut routes);
        let mut plugins: Vec<_> = plugins.into_values().collect();
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        crate::nn::runtime::trim_allocator();
        Ok(Snapshot {
            generation: previous.map_or(1, |p| p.generation + 1),
            built_at: SystemTime::now(),
            config: Arc::new(config),
            engine: engine.clone(),
            registry: Arc::new(registry),
            plugins,
            routes,
        })
    }
}

fn route(r: &RouteDef, plugins: &HashMap<String, Arc<Plugin>>, registry: &Registry) -> Route {
    let chain = chain::build(r, plugins);
    let models: Vec<String> = r
        .stages
        .iter()
        .filter_map(|s| s.settings.get("model")?.as_str())
        .filter_map(|m| registry.get(m).map(|model| format!("{m}={}:{}", model.identity().version, model.identity().sha256)))
        .collect();
    let version_key = match &r.upstream {
        // The nodes' own routes decide the answer: a gateway's cached answer
        // lives out its TTL even if a node's models change meanwhile.
        Some(pool) => format!("{} {} upstream={pool}", r.method, r.path),
        None => format!("{} {} {} {} {}", r.method, r.path, chain.signature, chain.settings_key, models.join(",")),
    };
    Route {
        method: r.method.clone(),
        path: r.path.clone(),
        max_body_bytes: r.max_body_bytes,
        chain,
        cache_ttl: r.cache_ttl,
        rate_limit: r.rate_limit,
        version_key,
        branches: Vec::new(),
        upstream: r.upstream.clone(),
    }
}

/// A route with branches runs other routes' chains first: find them (the
/// config was validated, so they exist) and fold their versions into its key.
fn link_branches(config: &Config, routes: &mut [Route]) {
    for (i, def) in config.routes.iter().enumerate() {
        let linked: Vec<(String, usize)> = def
            .branches
            .iter()
            .filter_map(|(field, path)| Some((field.clone(), routes.iter().position(|r| &r.path == path && r.method == "POST")?)))
            .collect();
        for (_, b) in &linked {
            let key = format!(" [{}]", routes[*b].version_key);
            routes[i].version_key.push_str(&key);
        }
        routes[i].branches = linked;
    }
}

/// The versions of one model, oldest first.
fn load_versions(def: &ModelDef, previous: Option<&Snapshot>) -> Result<Vec<Arc<Model>>, NnError> {
    let mut out = Vec::new();
    for (version, file) in versions(def)? {
        let labels_file = file.with_file_name("labels.txt");
        let labels_file = if matches!(def.source, ModelSource::Versions(_)) && labels_file.is_file() { Some(labels_file) } else { def.labels.clone() };
        let labels = read_labels(def, labels_file.as_deref())?;
        let bytes_sha = file_sha256(def, &file)?;
        let id = Identity { name: def.name.clone(), version, file: file.clone(), sha256: bytes_sha };
        let reused = previous
            .and_then(|p| p.registry.iter().find(|m| m.identity() == &id && m.labels() == labels.as_slice() && m.spec() == &def.load))
            .cloned();
        let model = match reused {
            Some(m) => m,
            None => Arc::new(load_model(def, id, labels)?),
        };
        out.push(model);
    }
    Ok(out)
}

/// A remote model: its metadata asked again on every build, so a reload sees
/// what the server serves now. A server that does not answer fails the first
/// load (a gateway cannot offer ports it does not know); on a reload the
/// model of the previous snapshot is kept, so a node that is down for a
/// moment never costs a reload.
fn load_remote(def: &ModelDef, spec: &RemoteSpec, previous: Option<&Snapshot>, remotes: &dyn Connector) -> Result<Arc<Model>, NnError> {
    let labels = read_labels(def, def.labels.as_deref())?;
    let location = std::path::PathBuf::from(spec.location());
    let kept = || {
        previous?.registry.iter().find(|m| m.name() == def.name && m.identity().file == location && m.labels() == labels.as_slice()).cloned()
    };
    let opened = match remotes.open(&def.name, spec) {
        Ok(o) => o,
        Err(e) => match kept() {
            Some(m) => {
                tracing::warn!(model = def.name, "keeping the remote model's metadata of the last load: {e}");
                return Ok(m);
            }
            None => return Err(e),
        },
    };
    let id = Identity { name: def.name.clone(), version: opened.version.clone(), file: location.clone(), sha256: opened.digest.clone() };
    if let Some(m) = kept().filter(|m| m.identity() == &id) {
        return Ok(m);
    }
    let model = Model::remote(id, labels, &def.load, opened);
    if let Some(want) = &def.input {
        check_input(&model, want).map_err(|why| NnError::Load { model: def.name.clone(), file: location.clone(), why })?;
    }
    tracing::info!(model = def.name, version = model.identity().version, "remote model at {}", location.display());
    Ok(Arc::new(model))
}

/// `(version, file)` pairs: "1" for a single file, else every numbered subfolder with a `model.onnx`.
fn versions(def: &ModelDef) -> Result<Vec<(String, PathBuf)>, NnError> {
    let dir = match &def.source {
        ModelSource::File(f) => return Ok(vec![("1".to_string(), f.clone())]),
        ModelSource::Versions(dir) => dir,
        ModelSource::Remote(spec) => return Err(NnError::Load { model: def.name.clone(), file: spec.location().into(), why: "a remote model has no files".into() }),
    };
    let fail = |why: String| NnError::Load { model: def.name.clone(), file: dir.clone(), why };
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u64>().ok()?, e.path().join("model.onnx"))))
        .filter(|(_, f)| f.is_file())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(fail("no version folder (1/, 2/, ...) holds a model.onnx".into()));
    }
    Ok(found.into_iter().map(|(v, f)| (v.to_string(), f)).collect())
}

fn read_labels(def: &ModelDef, path: Option<&Path>) -> Result<Vec<String>, NnError> {
    let Some(path) = path else { return Ok(Vec::new()) };
    let text = std::fs::read_to_string(path).map_err(|e| NnError::Load { model: def.name.clone(), file: path.to_path_buf(), why: e.to_string() })?;
    Ok(text.lines().map(|l| l.trim().to_string()).collect())
}

fn file_sha256(def: &ModelDef, file: &Path) -> Result<String, NnError> {
    let bytes = std::fs::read(file).map_err(|e| NnError::Load { model: def.name.clone(), file: file.to_path_buf(), why: e.to_string() })?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn load_model(def: &ModelDef, id: Identity, labels: Vec<String>) -> Result<Model, NnError> {
    let (file, version) = (id.file.clone(), id.version.clone());
    let model = Model::load(id, labels, &def.load)?;
    if let Some(want) = &def.input {
        check_input(&model, want).map_err(|why| NnError::Load { model: def.name.clone(), file: file.clone(), why })?;
    }
    tracing::info!(
        model = def.name,
        version,
        provider = %model.provider(),
        sessions = def.load.instances,
        threads = %def.load.threads,
        "model loaded from {}",
        file.display()
    );
    Ok(model)
}

/// The config says what the model takes; the file must agree.
fn check_input(model: &Model, want: &InputSpec) -> Result<(), String> {
    let [port] = model.inputs() else {
        return Err(format!("the config declares one input, the file has {}", model.inputs().len()));
    };
    let (w, h) = (i64::from(want.width), i64::from(want.height));
    let expected = if want.nchw { [-1, 3, h, w] } else { [-1, h, w, 3] };
    let fits = port.shape.len() == 4 && port.shape.iter().zip(expected).all(|(&got, exp)| got == exp || got == -1 || exp == -1);
    if !fits || port.ty != Some(want.ty) {
        return Err(format!(
            "input '{}' is {:?} {:?} in the file, but the config declares {:?} {} {}x{}",
            port.name,
            port.ty,
            port.shape,
            want.ty,
            if want.nchw { "nchw" } else { "nhwc" },
            want.width,
            want.height
        ));
    }
    Ok(())
}
