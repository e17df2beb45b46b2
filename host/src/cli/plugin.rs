//! `osprey plugin ...`: tools for plugin authors. `new` makes a project
//! (`cli::new`); `check` measures a component against the world this host
//! runs; `run` runs it in a chain on a photo, in this process, without a server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::{Map, Value};

use crate::config::{Config, PluginDef, RouteDef, StageDef};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Makes a plugin project that builds as it is: the stage, a unit test,
    /// a README with the build commands, a route to paste into a config, and
    /// this host's WIT (and, for Rust, its SDK), so it matches this host.
    New {
        /// The plugin's name: lowercase letters, digits and '-'.
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: super::new::Lang,
        /// pre: upload to model input; post: filters detections; report: adds a field to the answer.
        #[arg(long, value_enum, default_value = "post")]
        kind: super::new::Kind,
        /// The project's folder (default: ./NAME); it must be missing or empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Does a component fit the world this host runs? Exports, imports and
    /// WIT version, with its size, compile time and sandbox cost; exits
    /// non-zero, saying why and what to do, when it does not fit.
    Check {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Runs the component in a chain on a photo, in this process (no server):
    /// prints the JSON answer and each stage's time.
    Run {
        /// The component (.wasm).
        file: PathBuf,
        /// The photo (JPEG, PNG or WebP).
        #[arg(long)]
        image: PathBuf,
        /// Plugins of the config to run before it, in order, comma separated
        /// (e.g. `image-prep,yolo`); each takes its settings from the first
        /// route of the config that uses it.
        #[arg(long, value_delimiter = ',')]
        before: Vec<String>,
        /// Plugins of the config to run after it, the same way.
        #[arg(long, value_delimiter = ',')]
        after: Vec<String>,
        /// The component's settings, as TOML (`'zones = [...]'`) or a file holding it.
        #[arg(long, default_value = "")]
        settings: String,
        /// The config whose models and plugins the chain uses.
        #[arg(long, default_value = "config/osprey.toml")]
        config: PathBuf,
        /// Where to write an image answer (`frame.output`), if the chain makes one.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New { name, lang, kind, dir } => super::new::new(&super::new::New { name, lang, kind, dir }),
        PluginCommand::Check { file } => plugin_check(&file),
        PluginCommand::Run { file, image, before, after, settings, config, out } => {
            plugin_run(&Run { file, image, before, after, settings, config, out })
        }
    }
}

struct Run {
    file: PathBuf,
    image: PathBuf,
    before: Vec<String>,
    after: Vec<String>,
    settings: String,
    config: PathBuf,
    out: Option<PathBuf>,
}

/// The name the component under test takes in the chain.
const UNDER_TEST: &str = "under-test";

fn plugin_run(r: &Run) -> anyhow::Result<()> {
    let photo = std::fs::read(&r.image).map_err(|e| anyhow::anyhow!("{}: {e}", r.image.display()))?;
    let content_type = crate::client::content_type(&r.image);
    let config = chain_config(r)?;
    crate::nn::runtime::configure(config.server.pool);
    let engine = crate::plugin::Engine::for_server(&config.server)?;
    let loading = Instant::now();
    let snapshot = crate::snapshot::Snapshot::build(config, &engine, None)?;
    eprintln!("loaded the chain's plugins and the config's models in {} ms", loading.elapsed().as_millis());
    let route = &snapshot.routes[0];
    let start = crate::plugin::sandbox::Start { input: Some(crate::plugin::Blob { content_type: content_type.into(), bytes: photo.into() }), branches: Vec::new() };
    let started = Instant::now();
    let outcome = route.chain.run(&snapshot.engine, snapshot.registry.clone(), start, &Default::default(), None, started + route.chain.deadline, 1)?;
    let total = started.elapsed();
    eprintln!("{:<16} {:>9}", "stage", "ms");
    for (plugin, took) in &outcome.stages {
        eprintln!("{plugin:<16} {:>9.2}", ms(*took));
    }
    eprintln!("{:<16} {:>9.2}  (models: {:.2})", "total", ms(total), ms(outcome.inference));
    match (&outcome.output, &r.out) {
        (Some(blob), Some(out)) => {
            std::fs::write(out, &blob.bytes)?;
            println!("wrote {} ({}, {} bytes)", out.display(), blob.content_type, blob.bytes.len());
        }
        (Some(blob), None) => println!("the chain answered an image ({}, {} bytes): pass --out FILE to keep it", blob.content_type, blob.bytes.len()),
        (None, _) => {
            let answer: Value = serde_json::from_slice(&crate::http::respond::outcome_json(&outcome, total))?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The config's models and plugins, the component under test beside them,
/// and one route: `before`, the component, `after`.
fn chain_config(r: &Run) -> anyhow::Result<Config> {
    let mut config = crate::config::load(&r.config)?;
    let stage_of = |name: &str| -> anyhow::Result<StageDef> {
        anyhow::ensure!(
            config.plugins.iter().any(|p| p.name == name),
            "{}: has no plugin '{name}' (it has: {})",
            r.config.display(),
            config.plugins.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        let used = config.routes.iter().flat_map(|route| &route.stages).find(|s| s.plugin == name);
        let unused = || StageDef { plugin: name.into(), settings: Map::new(), at: format!("{}: plugin '{name}' (no route uses it)", r.config.display()) };
        Ok(used.cloned().unwrap_or_else(unused))
    };
    let mut stages = Vec::new();
    for name in &r.before {
        stages.push(stage_of(name)?);
    }
    stages.push(StageDef { plugin: UNDER_TEST.into(), settings: own_settings(&r.settings)?, at: "--settings".into() });
    for name in &r.after {
        stages.push(stage_of(name)?);
    }
    config.plugins.push(PluginDef { name: UNDER_TEST.into(), file: r.file.clone(), policy: Default::default() });
    config.routes = vec![RouteDef {
        method: "POST".into(),
        path: "/plugin-run".into(),
        deadline: config.server.deadline,
        max_body_bytes: config.server.max_body_bytes,
        stages,
        params: Vec::new(),
        cache_ttl: None,
        rate_limit: None,
        branches: Vec::new(),
        render: None,
        upstream: None,
    }];
    Ok(config)
}

/// `--settings`: TOML text, or the name of a file holding it, as JSON.
fn own_settings(text: &str) -> anyhow::Result<Map<String, Value>> {
    let text = match Path::new(text).is_file() {
        true => std::fs::read_to_string(text)?,
        false => text.to_string(),
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| anyhow::anyhow!("--settings: {e}"))?;
    match serde_json::to_value(table)? {
        Value::Object(map) => Ok(map),
        _ => unreachable!("a TOML table is a JSON object"),
    }
}

fn plugin_check(file: &Path) -> anyhow::Result<()> {
    use crate::plugin::inspect;
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let limits = crate::plugin::SandboxLimits::default();
    let engine = crate::plugin::Engine::new(limits)?;
    let r = inspect::inspect(&engine, &bytes).map_err(|why| anyhow::anyhow!("{}: {why}", file.display()))?;
    let verdict = match &r.problem {
        None => format!("fits osprey:plugin@{}", inspect::wit_version()),
        Some(_) => format!("does NOT fit osprey:plugin@{}", inspect::wit_version()),
    };
    println!("{}: {verdict}", file.display());
    println!("  size      {:.1} KiB, sha256 {}", r.bytes as f64 / 1024.0, r.sha256);
    println!("  compile   {} ms (once per build: servers keep the compiled copy)", r.compile.as_millis());
    println!("  exports   {}", r.exports.join(", "));
    println!("  imports   {}", r.imports.join(", "));
    let settings = match r.checks_settings {
        true => "checked by the plugin when a config is checked, started or reloaded (osprey:plugin/settings)",
        false => "not checked before serving: it exports no osprey:plugin/settings (built for 0.1.0); a wrong one fails per request",
    };
    println!("  settings  {settings}");
    println!(
        "  sandbox   {} linear memories (largest starts at {:.1} MiB, capped at {} MiB by plugin_memory_mib), {} tables",
        r.memories,
        r.initial_memory_bytes as f64 / f64::from(1 << 20),
        limits.memory_bytes >> 20,
        r.tables
    );
    match r.problem {
        None => Ok(()),
        Some(why) => anyhow::bail!("{}: {why}", file.display()),
    }
}
