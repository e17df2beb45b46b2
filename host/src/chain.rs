//! A route's chain: its stages in order, their settings, the per-request
//! parameters it allows, and its deadline. Built in one place (`build`), run
//! on a blocking thread (`run`) so no tokio worker waits on a plugin or model.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::config::{ParamDef, RouteDef, StageDef};
use crate::nn::Registry;
use crate::plugin::sandbox::{StageCall, Start};
use crate::plugin::{Engine, Outcome, Plugin, PluginError, Sandbox};

pub struct Chain {
    /// `plugin@sha256-prefix` of each stage, render included, for the admin status.
    pub signature: String,
    /// The same without render: what answered a request that render did not draw.
    stages_signature: String,
    /// Every stage's settings as configured, render's included: part of the
    /// cache key, so editing a stage's settings never serves an old answer.
    pub settings_key: String,
    stages: Vec<Stage>,
    /// Run last when the client asks for the annotated image.
    render: Option<Stage>,
    params: Vec<ParamDef>,
    pub deadline: Duration,
}

/// The image format a client asked for instead of JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    Jpeg,
    Png,
}

impl Render {
    /// `?render=` values: `jpeg` (or `jpg`), `png`.
    pub fn parse(v: &str) -> Option<Render> {
        match v.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Some(Render::Jpeg),
            "png" => Some(Render::Png),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Render::Jpeg => "jpeg",
            Render::Png => "png",
        }
    }
}

struct Stage {
    plugin: Arc<Plugin>,
    settings: Map<String, Value>,
    /// `settings` serialised once, for requests that override nothing.
    json: String,
}

/// Per-request values of the route's parameters, already checked against their bounds.
#[derive(Debug, Default, Clone)]
pub struct Overrides(Vec<(usize, String, Value)>);

/// Builds a route's chain from compiled plugins. The config was validated, so
/// every plugin the route names exists.
pub fn build(route: &RouteDef, plugins: &HashMap<String, Arc<Plugin>>) -> Chain {
    let stage = |s: &StageDef| Stage {
        plugin: plugins[&s.plugin].clone(),
        json: Value::Object(s.settings.clone()).to_string(),
        settings: s.settings.clone(),
    };
    let stages: Vec<Stage> = route.stages.iter().map(stage).collect();
    let render = route.render.as_ref().map(stage);
    let stages_signature = stages.iter().map(Stage::signature).collect::<Vec<_>>().join(",");
    let signature = stages.iter().chain(&render).map(Stage::signature).collect::<Vec<_>>().join(",");
    let settings_key = stages.iter().chain(&render).map(|s| s.json.as_str()).collect::<Vec<_>>().join(",");
    Chain { signature, stages_signature, settings_key, stages, render, params: route.params.clone(), deadline: route.deadline }
}

/// Asks each stage's plugin whether the route's settings for it suit it
/// (plugins built for osprey:plugin@0.1.0 cannot say, and pass). `Err` holds
/// where the first refused stage is written, and the plugin's words.
/// Blocking: a sandbox per stage.
pub fn check_settings(route: &RouteDef, plugins: &HashMap<String, Arc<Plugin>>, engine: &Engine) -> Result<(), (String, PluginError)> {
    for s in route.stages.iter().chain(&route.render) {
        let json = Value::Object(s.settings.clone()).to_string();
        crate::plugin::check_settings(engine, &plugins[&s.plugin], &json).map_err(|e| (s.at.clone(), e))?;
    }
    Ok(())
}

impl Stage {
    fn signature(&self) -> String {
        format!("{}@{}", self.plugin.name, &self.plugin.sha256[..12])
    }
}

impl Chain {
    /// Reads `?name=value` pairs; each must be a parameter of the route, within its bounds.
    pub fn overrides(&self, query: Option<&str>) -> Result<Overrides, String> {
        let mut out = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if name == "render" {
                continue; // not a stage's setting: see `Render`
            }
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
        if let Some(p) = self.params.iter().find(|p| p.required && !out.iter().any(|(_, n, _)| *n == p.name)) {
            return Err(format!("parameter '{}' is required ({}..{})", p.name, p.min, p.max));
        }
        Ok(Overrides(out))
    }

    /// `plugin@sha256-prefix` of the stages that answered a request: render
    /// only when the client asked for the annotated image.
    pub fn ran(&self, rendered: bool) -> &str {
        match rendered {
            true => &self.signature,
            false => &self.stages_signature,
        }
    }

    /// Whether the route can answer with an annotated image.
    pub fn renders(&self) -> bool {
        self.render.is_some()
    }

    /// Runs the stages (and the render stage, when asked) on the upload,
    /// stopping at `deadline` (the route's, or less when the request brought
    /// a shorter one). Blocking.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        engine: &Engine,
        registry: Arc<Registry>,
        start: Start,
        overrides: &Overrides,
        render: Option<Render>,
        deadline: Instant,
        request_id: u64,
    ) -> Result<Outcome, PluginError> {
        let mut calls: Vec<StageCall<'_>> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| StageCall { plugin: &s.plugin, settings: s.settings_with(i, overrides) })
            .collect();
        if let (Some(stage), Some(format)) = (&self.render, render) {
            let mut settings = stage.settings.clone();
            settings.insert("format".into(), format.name().into());
            calls.push(StageCall { plugin: &stage.plugin, settings: Cow::Owned(Value::Object(settings).to_string()) });
        }
        Sandbox { engine, registry, request_id }.run(&calls, start, deadline)
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
