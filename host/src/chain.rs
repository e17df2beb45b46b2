//! A route's chain: its stages in order, their settings, the per-request
//! parameters it allows, and its deadline. Built in one place (`build`), run
//! on a blocking thread (`run`) so no tokio worker waits on a plugin or model.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::config::{ParamDef, RouteDef};
use crate::nn::Registry;
use crate::plugin::sandbox::StageCall;
use crate::plugin::{Blob, Engine, Outcome, Plugin, PluginError, Sandbox};

pub struct Chain {
    /// `plugin@sha256-prefix` of each stage, for answers and the admin status.
    pub signature: String,
    stages: Vec<Stage>,
    params: Vec<ParamDef>,
    pub deadline: Duration,
}

struct Stage {
    plugin: Arc<Plugin>,
    settings: Map<String, Value>,
    /// `settings` serialised once, for requests that override nothing.
    json: String,
}

/// Per-request values of the route's parameters, already checked against their bounds.
#[derive(Debug, Default)]
pub struct Overrides(Vec<(usize, String, Value)>);

/// Builds a route's chain from compiled plugins. The config was validated, so
/// every plugin the route names exists.
pub fn build(route: &RouteDef, plugins: &HashMap<String, Arc<Plugin>>) -> Chain {
    let stages = route
        .stages
        .iter()
        .map(|s| Stage {
            plugin: plugins[&s.plugin].clone(),
            json: Value::Object(s.settings.clone()).to_string(),
            settings: s.settings.clone(),
        })
        .collect::<Vec<Stage>>();
    let signature = stages.iter().map(|s| format!("{}@{}", s.plugin.name, &s.plugin.sha256[..12])).collect::<Vec<_>>().join(",");
    Chain { signature, stages, params: route.params.clone(), deadline: route.deadline }
}

impl Chain {
    /// Reads `?name=value` pairs; each must be a parameter of the route, within its bounds.
    pub fn overrides(&self, query: Option<&str>) -> Result<Overrides, String> {
        let mut out = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let Some(p) = self.params.iter().find(|p| p.name == name) else {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                return Err(format!("unknown parameter '{name}'; this route accepts: {}", known.join(", ")));
            };
            let v: f64 = value.parse().map_err(|_| format!("parameter '{name}' = '{value}' is not a number"))?;
            if !(p.min..=p.max).contains(&v) {
                return Err(format!("parameter '{name}' = {v} is outside {}..{}", p.min, p.max));
            }
            let v = match p.integer {
                true if v.fract() != 0.0 => return Err(format!("parameter '{name}' = {v} must be a whole number")),
                true => Value::from(v as i64),
                false => Value::from(v),
            };
            out.push((p.stage, p.name.clone(), v));
        }
        Ok(Overrides(out))
    }

    /// Runs the stages on the upload. Blocking.
    pub fn run(
        &self,
        engine: &Engine,
        registry: Arc<Registry>,
        input: Blob,
        overrides: &Overrides,
        started: Instant,
        request_id: u64,
    ) -> Result<Outcome, PluginError> {
        let calls: Vec<StageCall<'_>> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| StageCall { plugin: &s.plugin, settings: s.settings_with(i, overrides) })
            .collect();
        Sandbox { engine, registry, request_id }.run(&calls, input, started + self.deadline)
    }
}

impl Overrides {
    /// A stable text of the values, for cache keys.
    pub fn canonical(&self) -> String {
        let mut parts: Vec<String> = self.0.iter().map(|(i, n, v)| format!("{i}.{n}={v}")).collect();
        parts.sort();
        parts.join("&")
    }
}

impl Stage {
    fn settings_with(&self, index: usize, overrides: &Overrides) -> Cow<'_, str> {
        let mine: Vec<_> = overrides.0.iter().filter(|(i, _, _)| *i == index).collect();
        if mine.is_empty() {
            return Cow::Borrowed(&self.json);
        }
        let mut settings = self.settings.clone();
        for (_, name, v) in mine {
            settings.insert(name.clone(), v.clone());
        }
        Cow::Owned(Value::Object(settings).to_string())
    }
}
