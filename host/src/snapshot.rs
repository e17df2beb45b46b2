//! What is loaded now: compiled plugins, models and routes, built together
//! and immutable; the server holds it in an `Arc` (swapped whole on reload).

use std::collections::HashMap;
use std::sync::Arc;

use crate::chain::{self, Chain};
use crate::config::{Config, InputSpec, ModelDef};
use crate::nn::{Model, NnError, Registry};
use crate::plugin::{Engine, Plugin, PluginError, SandboxLimits};

pub struct Snapshot {
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
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Model(#[from] NnError),
}

impl Snapshot {
    /// Compiles every plugin and loads every model. Blocking (seconds): run it
    /// before serving or on a blocking thread.
    pub fn build(config: &Config) -> Result<Snapshot, SnapshotError> {
        let engine = Engine::new(SandboxLimits {
            memory_bytes: config.server.plugin_memory_bytes,
            max_instances: config.server.max_plugin_instances,
        })?;
        let mut registry = Registry::default();
        for def in &config.models {
            let model = load_model(def)?;
            tracing::info!(
                model = def.name,
                provider = %model.provider(),
                sessions = def.load.instances,
                threads = def.load.threads,
                "model loaded from {}",
                def.file.display()
            );
            registry.insert(model);
        }
        let mut plugins = HashMap::new();
        for def in &config.plugins {
            let plugin = engine.compile(&def.name, &def.file)?;
            tracing::info!(plugin = def.name, sha256 = plugin.sha256, "plugin compiled from {}", def.file.display());
            plugins.insert(def.name.clone(), Arc::new(plugin));
        }
        let routes = config
            .routes
            .iter()
            .map(|r| Route {
                method: r.method.clone(),
                path: r.path.clone(),
                max_body_bytes: r.max_body_bytes,
                chain: chain::build(r, &plugins),
            })
            .collect();
        Ok(Snapshot { engine, registry: Arc::new(registry), plugins: plugins.into_values().collect(), routes })
    }
}

fn load_model(def: &ModelDef) -> Result<Model, NnError> {
    let labels = match &def.labels {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| NnError::Load { model: def.name.clone(), file: path.clone(), why: e.to_string() })?
            .lines()
            .map(|l| l.trim().to_string())
            .collect(),
        None => Vec::new(),
    };
    let model = Model::load(&def.name, &def.file, labels, &def.load)?;
    if let Some(want) = &def.input {
        check_input(&model, want).map_err(|why| NnError::Load { model: def.name.clone(), file: def.file.clone(), why })?;
    }
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
