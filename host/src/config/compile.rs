//! Validation: raw TOML structs → a `Config` every later layer can trust.
//! Every problem is collected with its location, so one run shows them all.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::check::{positive, positive_ms, ranged, valid_name};
use super::diag::Diagnostics;
use super::raw::{RawConfig, RawModel, RawPlugin, RawRoute, RawStage};
use super::{AdminSettings, CompiledCache, Config, InputSpec, ModelDef, ModelSource, ParamDef, PluginDef, PluginPolicy, RouteDef, ServerSettings, StageDef, VideoSettings};
use crate::nn::{Batching, ElemType, LoadSpec, Target, Threads};

/// Sessions per model when the config does not say: the least memory. A
/// second session each costs ~80 MiB of RSS (its copy of the weights and
/// activations); on a quiet 2-core machine it bought 1.15-1.39x the
/// saturation throughput (README, Benchmarks), so the default config asks for
/// two while configs that say nothing stay lean.
const DEFAULT_INSTANCES: usize = 1;
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
/// Paths the host answers itself; routes may not take them.
const RESERVED: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/v1/tunnel"];

pub fn compile(raw: RawConfig, base: &Path, d: &mut Diagnostics<'_>) -> Option<Config> {
    let server = server(&raw, base, d);
    let models: Vec<ModelDef> = raw.models.iter().filter_map(|(n, m)| model(n, m, &raw, base, d)).collect();
    let plugins: Vec<PluginDef> = raw.plugins.iter().filter_map(|(n, p)| plugin(n, p, &raw, &server, base, d)).collect();
    let cache_ttl = raw.cache.ttl_s.as_ref().map_or(Duration::from_secs(600), |v| Duration::from_secs(*v.get_ref()));
    let mut routes = Vec::new();
    for r in &raw.routes {
        if let Some(route) = route(r, &raw, &server, cache_ttl, d) {
            if routes.iter().any(|o: &RouteDef| o.path == route.path && o.method == route.method) {
                d.error(r.path.span(), format!("route {} {} is defined twice", route.method, route.path), None);
            }
            routes.push(route);
        }
    }
    let admin = AdminSettings {
        token: std::env::var("OSPREY_ADMIN_TOKEN").ok().or_else(|| raw.admin.token.as_ref().map(|t| t.get_ref().clone())).filter(|t| !t.is_empty()),
        watch: raw.admin.watch.unwrap_or(true),
    };
    if let Some(t) = &raw.admin.token {
        if t.get_ref().len() < 16 {
            d.error(t.span(), "admin token is shorter than 16 characters", Some("use a long random string, e.g. `openssl rand -hex 24`".into()));
        }
    }
    let cache_bytes = raw.cache.max_bytes.as_ref().map_or(256 << 20, |v| *v.get_ref());
    let redis = raw.redis.as_ref().and_then(|r| redis(r, d));
    let tls = super::tls::compile(&raw.tls, server.listen, base, d);
    let video = video(&raw.video, d);
    let streams = raw.streams.as_ref().and_then(|s| super::streams::compile(s, base, d));
    if let (Some(st), Some(raw_st)) = (&streams, &raw.streams) {
        if !routes.iter().any(|r: &RouteDef| r.path == st.watermark_route && r.method == "POST") {
            let span = raw_st.get_ref().watermark_route.as_ref().map_or(raw_st.span(), |r| r.span());
            let hint = "a POST route whose stage is `stego` with mode = \"embed\" and format = \"jpeg\" (config/osprey.toml has one)";
            d.error(span, format!("[streams] watermark_route \"{}\" is not a POST route of this config", st.watermark_route), Some(hint.into()));
        }
    }
    let upstreams = super::upstream::compile(&raw, d);
    let gateway = raw.gateway.as_ref().and_then(|g| super::gateway::compile(g, base, d));
    d.list.is_empty().then_some(Config { server, models, plugins, routes, admin, cache_bytes, redis, tls, video, streams, upstreams, gateway })
}

/// `[redis]`: a redis:// URL and, when given, positive times. The default
/// timeout is far above a LAN's answer (well under a millisecond) and still
/// what a request may lose to a Redis that stops answering.
fn redis(r: &super::raw::RawRedis, d: &mut Diagnostics<'_>) -> Option<crate::redis::Settings> {
    let url = r.url.get_ref();
    let ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !ok {
        d.error(r.url.span(), format!("redis url \"{url}\" is not a redis:// URL"), Some("like \"redis://127.0.0.1:6379\"".into()));
    }
    let timeout = r.timeout_ms.as_ref().map_or(Some(Duration::from_millis(250)), |v| positive_ms(v, "[redis] timeout_ms", d));
    let recheck = r.recheck_ms.as_ref().map_or(Some(Duration::from_secs(1)), |v| positive_ms(v, "[redis] recheck_ms", d));
    Some(crate::redis::Settings { url: url.clone(), timeout: timeout?, recheck: recheck? }).filter(|_| ok)
}

/// `[video]`: every bound above zero, the rates within reason.
fn video(v: &super::raw::RawVideo, d: &mut Diagnostics<'_>) -> VideoSettings {
    let mut out = VideoSettings::default();
    if let Some(n) = v.max_bytes.as_ref().and_then(|n| positive(n, "[video] max_bytes", d)) {
        out.max_bytes = n as u64;
    }
    if let Some(n) = v.max_seconds.as_ref().and_then(|n| positive(n, "[video] max_seconds", d)) {
        out.max_duration = Duration::from_secs(n as u64);
    }
    if let Some(n) = v.max_frames.as_ref().and_then(|n| ranged(n, "[video] max_frames", 1_000_000, d)) {
        out.max_frames = n as usize;
    }
    if let Some(n) = v.max_jobs.as_ref().and_then(|n| ranged(n, "[video] max_jobs", 1024, d)) {
        out.max_jobs = n as usize;
    }
    if let Some(n) = v.max_fps.as_ref().and_then(|n| ranged(n, "[video] max_fps", 240, d)) {
        out.max_fps = n;
    }
    if let Some(n) = v.idle_cancel_s.as_ref().and_then(|n| positive(n, "[video] idle_cancel_s", d)) {
        out.idle_cancel = Duration::from_secs(n as u64);
    }
    out
}

fn server(raw: &RawConfig, base: &Path, d: &mut Diagnostics<'_>) -> ServerSettings {
    let s = &raw.server;
    let mut out = ServerSettings::default();
    if let Some(l) = &s.listen {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => out.listen = a,
            Err(e) => d.error(l.span(), format!("listen = \"{}\": {e}", l.get_ref()), Some("an IP and port, e.g. \"127.0.0.1:8080\"".into())),
        }
    }
    if let Some(v) = &s.deadline_ms {
        out.deadline = positive_ms(v, "deadline_ms", d).unwrap_or(out.deadline);
    }
    if let Some(v) = &s.max_body_bytes {
        out.max_body_bytes = positive(v, "max_body_bytes", d).unwrap_or(out.max_body_bytes);
    }
    if let Some(n) = s.plugin_memory_mib.as_ref().and_then(|v| ranged(v, "plugin_memory_mib", 4096, d)) {
        out.plugin_memory_bytes = (n as usize) << 20;
    }
    if let Some(h) = &s.api_key_header {
        match hyper::header::HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(_) => out.api_key_header = Some(h.get_ref().to_ascii_lowercase()),
            Err(_) => d.error(h.span(), format!("api_key_header \"{}\" is not a header name", h.get_ref()), None),
        }
    }
    if let Some(v) = &s.header_timeout_ms {
        out.header_timeout = positive_ms(v, "header_timeout_ms", d).unwrap_or(out.header_timeout);
    }
    if let Some(v) = &s.shutdown_grace_ms {
        out.shutdown_grace = Duration::from_millis(*v.get_ref());
    }
    if let Some(n) = s.max_connections.as_ref().and_then(|v| ranged(v, "max_connections", 1_000_000, d)) {
        out.max_connections = n as usize;
    }
    if let Some(n) = s.max_connections_per_ip.as_ref().and_then(|v| ranged(v, "max_connections_per_ip", 1_000_000, d)) {
        out.max_connections_per_ip = n as usize;
    }
    if let Some(n) = s.max_streams.as_ref().and_then(|v| ranged(v, "max_streams", 10_000, d)) {
        out.max_streams = n;
    }
    if let Some(v) = &s.body_timeout_ms {
        out.body_pace.timeout = positive_ms(v, "body_timeout_ms", d).unwrap_or(out.body_pace.timeout);
    }
    if let Some(n) = s.body_min_rate.as_ref().and_then(|v| ranged(v, "body_min_rate", 1 << 30, d)) {
        out.body_pace.min_rate = n;
    }
    if let Some(v) = &s.max_waiting {
        out.max_waiting = *v.get_ref() as usize;
    }
    if let Some(n) = s.max_inflight.as_ref().and_then(|v| ranged(v, "max_inflight", 100_000, d)) {
        out.max_inflight = n as usize;
    }
    if let Some(n) = s.max_plugin_instances.as_ref().and_then(|v| ranged(v, "max_plugin_instances", 10_000, d)) {
        out.max_plugin_instances = n;
    }
    if let Some(n) = s.inference_threads.as_ref().and_then(|v| ranged(v, "inference_threads", 1024, d)) {
        out.pool.threads = n as usize;
    }
    if let Some(n) = s.max_model_runs.as_ref().and_then(|v| ranged(v, "max_model_runs", 1024, d)) {
        out.pool.max_runs = n as usize;
    }
    if let Some(dir) = &s.compiled_cache {
        out.compiled_cache = match dir.get_ref().as_str() {
            "" => CompiledCache::Off,
            dir => CompiledCache::At(base.join(dir)),
        };
    }
    out
}

fn model(name: &Spanned<String>, m: &RawModel, raw: &RawConfig, base: &Path, d: &mut Diagnostics<'_>) -> Option<ModelDef> {
    let ok = valid_name(name, "model", d);
    let source = source(name, m, raw, base, d);
    let labels = m.labels.as_ref().and_then(|l| d.existing(base, l, &format!("labels of model '{}'", name.get_ref()), "run `make setup` to fetch the models"));
    let target = match m.target.as_ref().map(|t| (t.get_ref().as_str(), t.span())) {
        None | Some(("auto", _)) => Target::Auto,
        Some(("cpu", _)) => Target::Cpu,
        Some(("gpu", _)) => Target::Gpu,
        Some((other, span)) => {
            d.error(span, format!("target = \"{other}\" is not a target"), Some("one of \"auto\", \"cpu\", \"gpu\"".into()));
            Target::Auto
        }
    };
    let instances = match &m.instances {
        None => Some(DEFAULT_INSTANCES),
        Some(v) => ranged(v, "instances", 256, d).map(|n| n as usize),
    };
    let threads = match &m.threads {
        None => Some(Threads::Auto),
        Some(v) => ranged(v, "threads", 256, d).map(|n| Threads::Own(n as usize)),
    };
    let batching = batching(m, d);
    let input = m.input.as_ref().and_then(|i| input(i, d));
    Some(ModelDef {
        name: name.get_ref().clone(),
        source: source?,
        labels,
        input,
        load: LoadSpec { target, instances: instances?, threads: threads?, batching: batching? },
    })
    .filter(|_| ok)
}

fn source(name: &Spanned<String>, m: &RawModel, raw: &RawConfig, base: &Path, d: &mut Diagnostics<'_>) -> Option<ModelSource> {
    let what = format!("model '{}'", name.get_ref());
    let given: Vec<(&str, std::ops::Range<usize>)> = [
        ("file", m.file.as_ref().map(|f| f.span())),
        ("versions", m.versions.as_ref().map(|v| v.span())),
        ("remote", m.remote.as_ref().map(|r| r.span())),
    ]
    .into_iter()
    .filter_map(|(key, span)| Some((key, span?)))
    .collect();
    match given.as_slice() {
        [] => {
            d.error(name.span(), format!("{what} has none of `file`, `versions` or `remote`"), Some("add file = \"path/to/model.onnx\"".into()));
            return None;
        }
        [_] => {}
        [(first, span), (second, _), ..] => {
            d.error(span.clone(), format!("{what} has both `{first}` and `{second}`"), Some("keep one: `file` for a single version, `versions` for a folder of them, `remote` for a model another server runs".into()));
            return None;
        }
    }
    if let Some(r) = &m.remote {
        return remote(&what, r, m, raw, d);
    }
    match (&m.file, &m.versions) {
        (Some(f), _) => d.existing(base, f, &what, "run `make setup` to fetch the models").map(ModelSource::File),
        (_, Some(v)) => {
            let dir = base.join(v.get_ref());
            if dir.is_dir() {
                Some(ModelSource::Versions(dir))
            } else {
                d.error(v.span(), format!("{what}: versions folder {} not found", dir.display()), Some("a folder with subfolders 1/, 2/, ... each holding model.onnx".into()));
                None
            }
        }
        (None, None) => None,
    }
}

/// `remote = { upstream, model, version }`: the pool must exist, and the keys
/// that tune local sessions have no meaning (the remote server decides them).
fn remote(what: &str, r: &Spanned<super::raw::RawRemote>, m: &RawModel, raw: &RawConfig, d: &mut Diagnostics<'_>) -> Option<ModelSource> {
    let before = d.list.len();
    let rr = r.get_ref();
    let upstream = &rr.upstream;
    if !raw.upstreams.keys().any(|k| k.get_ref() == upstream.get_ref()) {
        let known = raw.upstreams.keys().map(|k| k.get_ref().as_str()).collect::<Vec<_>>().join(", ");
        let hint = if known.is_empty() { "add [upstreams.NAME] with the nodes that serve the model".to_string() } else { format!("defined upstreams: {known}") };
        d.error(upstream.span(), format!("{what}: upstream '{}' is not in [upstreams]", upstream.get_ref()), Some(hint));
    }
    for (key, value) in [("model", Some(&rr.model)), ("version", rr.version.as_ref())] {
        let Some(v) = value else { continue };
        let s = v.get_ref();
        if s.is_empty() || s.contains(['/', '?', '#', '%', ' ']) {
            d.error(v.span(), format!("{what}: remote {key} \"{s}\" cannot be a path segment"), Some("the name (or version) as the remote server lists it, without '/', '?', '#', '%' or spaces".into()));
        }
    }
    let local = [
        ("target", m.target.as_ref().map(|v| v.span())),
        ("instances", m.instances.as_ref().map(|v| v.span())),
        ("threads", m.threads.as_ref().map(|v| v.span())),
        ("max_batch", m.max_batch.as_ref().map(|v| v.span())),
        ("max_queue_delay_us", m.max_queue_delay_us.as_ref().map(|v| v.span())),
        ("queue_size", m.queue_size.as_ref().map(|v| v.span())),
    ];
    for (key, span) in local {
        if let Some(span) = span {
            d.error(span, format!("{what}: {key} cannot go with remote; the remote server runs, queues and batches the model"), Some(format!("remove {key}, or set it on the server that runs the model")));
        }
    }
    let spec = crate::nn::RemoteSpec {
        upstream: upstream.get_ref().clone(),
        model: rr.model.get_ref().clone(),
        version: rr.version.as_ref().map(|v| v.get_ref().clone()),
    };
    (d.list.len() == before).then_some(ModelSource::Remote(spec))
}

fn batching(m: &RawModel, d: &mut Diagnostics<'_>) -> Option<Batching> {
    let mut b = Batching::default();
    let before = d.list.len();
    if let Some(v) = &m.max_batch {
        b.max_batch = ranged(v, "max_batch", 256, d).unwrap_or(1) as usize;
    }
    if let Some(v) = &m.queue_size {
        b.queue_size = ranged(v, "queue_size", 100_000, d).unwrap_or(1) as usize;
    }
    if let Some(v) = &m.max_queue_delay_us {
        if *v.get_ref() > 1_000_000 {
            d.error(v.span(), format!("max_queue_delay_us = {} is more than a second", v.get_ref()), Some("batching delays are microseconds to milliseconds".into()));
        }
        b.max_delay = Duration::from_micros(*v.get_ref());
    }
    (d.list.len() == before).then_some(b)
}

fn input(i: &Spanned<super::raw::RawInput>, d: &mut Diagnostics<'_>) -> Option<InputSpec> {
    let r = i.get_ref();
    let nchw = match r.layout.as_str() {
        "nhwc" => false,
        "nchw" => true,
        other => {
            d.error(i.span(), format!("input layout \"{other}\" is not a layout"), Some("\"nhwc\" or \"nchw\"".into()));
            return None;
        }
    };
    let ty = match r.ty.as_str() {
        "fp32" => ElemType::F32,
        "u8" => ElemType::U8,
        other => {
            d.error(i.span(), format!("input type \"{other}\" is not supported"), Some("\"fp32\" or \"u8\"".into()));
            return None;
        }
    };
    Some(InputSpec { nchw, width: r.width, height: r.height, ty })
}

fn route(r: &RawRoute, raw: &RawConfig, server: &ServerSettings, cache_ttl: Duration, d: &mut Diagnostics<'_>) -> Option<RouteDef> {
    let path = r.path.get_ref();
    let mut ok = true;
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) || path.contains("//") {
        d.error(r.path.span(), format!("route path \"{path}\" is not a plain absolute path"), Some("like \"/v1/detect\": starts with '/', no query".into()));
        ok = false;
    } else if RESERVED.contains(&path.as_str()) || ["/admin", "/v2", "/v1/videos", "/v1/streams"].iter().any(|r| path == r || path.starts_with(&format!("{r}/"))) {
        d.error(r.path.span(), format!("route path \"{path}\" is answered by the host itself"), Some("pick another path".into()));
        ok = false;
    }
    let method = r.method.get_ref().to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        d.error(r.method.span(), format!("method \"{}\" is not supported", r.method.get_ref()), Some(format!("one of {}", METHODS.join(", "))));
        ok = false;
    }
    let route_name = format!("route {method} {path}");
    let upstream = r.upstream.as_ref().and_then(|u| upstream(r, u, raw, &route_name, d));
    ok &= r.upstream.is_none() || upstream.is_some();
    match (&r.stages, &r.upstream) {
        (Some(st), None) if st.get_ref().is_empty() => {
            d.error(st.span(), format!("{route_name} has no stages"), Some("add at least one { plugin = \"...\" }".into()));
            ok = false;
        }
        (None, None) => {
            d.error(r.path.span(), format!("{route_name} has neither stages nor an upstream"), Some("add stages = [{ plugin = \"...\" }], or upstream = \"POOL\"".into()));
            ok = false;
        }
        _ => {}
    }
    let mut stages = Vec::new();
    for (i, s) in r.stages.iter().flat_map(|st| st.get_ref().iter()).enumerate() {
        let def = stage(s, &format!("{route_name}: stage {}", i + 1), raw, d);
        ok &= def.is_some();
        stages.extend(def);
    }
    let render = r.render.as_ref().map(|s| stage(s, &format!("{route_name}: render"), raw, d));
    ok &= !matches!(render, Some(None));
    let branches = branches(r, raw, &route_name, d);
    ok &= branches.is_some();
    let params = params(r, &stages, &route_name, d);
    let deadline = r.deadline_ms.as_ref().map_or(Some(server.deadline), |v| positive_ms(v, "deadline_ms", d));
    let max_body = r.max_body_bytes.as_ref().map_or(Some(server.max_body_bytes), |v| positive(v, "max_body_bytes", d));
    let cache_ttl = match r.cache_ttl_s.as_ref().map(|v| *v.get_ref()) {
        Some(0) => None,
        Some(s) => Some(Duration::from_secs(s)),
        None => Some(cache_ttl).filter(|t| !t.is_zero()),
    };
    let rate_limit = r.rate_limit.as_ref().and_then(|l| {
        let raw = l.get_ref();
        if raw.rate > 0.0 && raw.rate.is_finite() && raw.burst >= 1 {
            Some(crate::ratelimit::Limit { rate: raw.rate, burst: f64::from(raw.burst) })
        } else {
            d.error(l.span(), format!("{route_name}: rate_limit needs rate > 0 and burst >= 1"), Some("e.g. rate_limit = { rate = 5.0, burst = 10 }".into()));
            None
        }
    });
    let limit_ok = r.rate_limit.is_none() || rate_limit.is_some();
    let (render, branches) = (render.flatten(), branches.unwrap_or_default());
    Some(RouteDef { method, path: path.clone(), deadline: deadline?, max_body_bytes: max_body?, stages, params: params?, cache_ttl, rate_limit, branches, render, upstream })
        .filter(|_| ok && limit_ok)
}

/// A plugin: its file, and its policy checked against the server's limits
/// and the config's models.
fn plugin(n: &Spanned<String>, p: &RawPlugin, raw: &RawConfig, server: &ServerSettings, base: &Path, d: &mut Diagnostics<'_>) -> Option<PluginDef> {
    let (before, name) = (d.list.len(), n.get_ref());
    valid_name(n, "plugin", d);
    let file = d.existing(base, &p.file, "plugin", "run `make plugins` to build the plugins");
    for m in p.models.iter().flatten() {
        if !raw.models.keys().any(|k| k.get_ref() == m.get_ref()) {
            let known = raw.models.keys().map(|k| k.get_ref().as_str()).collect::<Vec<_>>().join(", ");
            d.error(m.span(), format!("plugin '{name}' may load model '{}', which is not in [models]", m.get_ref()), Some(format!("defined models: {known}")));
        }
    }
    let server_mib = server.plugin_memory_bytes >> 20;
    let memory_bytes = p.memory_mib.as_ref().and_then(|v| {
        let mib = *v.get_ref() as usize;
        if mib > server_mib {
            let hint = "a plugin's cap can only narrow the server's: raise [server] plugin_memory_mib too";
            d.error(v.span(), format!("memory_mib = {mib} of plugin '{name}' is above [server] plugin_memory_mib = {server_mib}"), Some(hint.into()));
            return None;
        }
        ranged(v, &format!("memory_mib of plugin '{name}'"), server_mib as u32, d).map(|mib| (mib as usize) << 20)
    });
    let deadline = p.deadline_ms.as_ref().and_then(|v| positive_ms(v, &format!("deadline_ms of plugin '{name}'"), d));
    let models = p.models.as_ref().map(|list| list.iter().map(|m| m.get_ref().clone()).collect());
    let policy = PluginPolicy { models, memory_bytes, deadline };
    let ok = d.list.len() == before;
    file.filter(|_| ok).map(|file| PluginDef { name: name.clone(), file, policy })
}

/// The models plugin `name`'s policy lets it load, when it has a list.
fn allowed_models<'a>(raw: &'a RawConfig, name: &str) -> Option<&'a Vec<Spanned<String>>> {
    raw.plugins.iter().find(|(k, _)| k.get_ref() == name).and_then(|(_, p)| p.models.as_ref())
}

/// One stage: its plugin must be defined, and the model it names too.
fn stage(s: &RawStage, what: &str, raw: &RawConfig, d: &mut Diagnostics<'_>) -> Option<StageDef> {
    let plugin = s.plugin.get_ref();
    let mut ok = true;
    if !raw.plugins.keys().any(|k| k.get_ref() == plugin) {
        let known = raw.plugins.keys().map(|k| k.get_ref().as_str()).collect::<Vec<_>>().join(", ");
        d.error(s.plugin.span(), format!("{what} uses plugin '{plugin}', which is not in [plugins]"), Some(format!("defined plugins: {known}")));
        ok = false;
    }
    if let Some(toml::Value::String(m)) = s.settings.get_ref().get("model") {
        // `name` follows the newest version, `name@N` pins one.
        let base_name = m.split_once('@').map_or(m.as_str(), |(n, _)| n);
        if !raw.models.keys().any(|k| k.get_ref() == base_name) {
            let known = raw.models.keys().map(|k| k.get_ref().as_str()).collect::<Vec<_>>().join(", ");
            d.error(s.settings.span(), format!("{what} names model '{m}', which is not in [models]"), Some(format!("defined models: {known}")));
            ok = false;
        } else if let Some(allowed) = allowed_models(raw, plugin).filter(|a| !a.iter().any(|a| a.get_ref() == base_name)) {
            // The plugin's policy would refuse it at every request: say so now.
            let list = allowed.iter().map(|a| a.get_ref().as_str()).collect::<Vec<_>>().join(", ");
            d.error(s.settings.span(), format!("{what} names model '{m}', which plugin '{plugin}' may not load"), Some(format!("[plugins.{plugin}] models = [{list}]: add it there, or pick one of those")));
            ok = false;
        }
    }
    let settings = serde_json::to_value(s.settings.get_ref()).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default();
    // Settings left out have no span of their own: the stage's plugin stands for them.
    let span = if s.settings.span().is_empty() { s.plugin.span() } else { s.settings.span() };
    let at = format!("{}: {what}", d.place(span));
    ok.then(|| StageDef { plugin: plugin.clone(), settings, at })
}

/// `upstream = "POOL"`: a pool of `[upstreams]`, instead of the keys that
/// describe a local chain (the node's own route has those).
fn upstream(r: &RawRoute, u: &Spanned<String>, raw: &RawConfig, route_name: &str, d: &mut Diagnostics<'_>) -> Option<String> {
    let before = d.list.len();
    if !raw.upstreams.keys().any(|k| k.get_ref() == u.get_ref()) {
        let known = raw.upstreams.keys().map(|k| k.get_ref().as_str()).collect::<Vec<_>>().join(", ");
        d.error(u.span(), format!("{route_name}: upstream '{}' is not in [upstreams]", u.get_ref()), Some(format!("defined upstreams: {known}")));
    }
    let local = [
        ("stages", r.stages.as_ref().map(|s| s.span())),
        ("params", r.params.keys().next().map(|k| k.span())),
        ("branches", r.branches.as_ref().map(|b| b.span())),
        ("render", r.render.as_ref().map(|s| s.plugin.span())),
    ];
    for (key, span) in local {
        if let Some(span) = span {
            d.error(span, format!("{route_name}: {key} cannot go with upstream; the node's own route has them"), Some("keep either the local chain or `upstream`".into()));
        }
    }
    (d.list.len() == before).then(|| u.get_ref().clone())
}

/// `branches`: each names a multipart field and a POST route without branches of its own.
fn branches(r: &RawRoute, raw: &RawConfig, route_name: &str, d: &mut Diagnostics<'_>) -> Option<Vec<(String, String)>> {
    let Some(list) = &r.branches else { return Some(Vec::new()) };
    let before = d.list.len();
    if list.get_ref().len() < 2 {
        d.error(list.span(), format!("{route_name}: branches needs two or more entries"), Some("like branches = { visible = \"/v1/detect\", infrared = \"/v1/detect\" }".into()));
    }
    let mut out = Vec::new();
    for (field, target) in list.get_ref() {
        if field.get_ref().is_empty() || !field.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            d.error(field.span(), format!("{route_name}: branch name '{}' is not a plain field name", field.get_ref()), Some("letters, digits, '_' and '-'".into()));
        }
        let found = raw.routes.iter().find(|o| o.path.get_ref() == target.get_ref() && o.method.get_ref().eq_ignore_ascii_case("POST"));
        match found {
            None => {
                let known = raw.routes.iter().filter(|o| o.branches.is_none()).map(|o| o.path.get_ref().as_str()).collect::<Vec<_>>().join(", ");
                d.error(target.span(), format!("{route_name}: branch '{}' runs route {}, which is not a POST route of this file", field.get_ref(), target.get_ref()), Some(format!("routes: {known}")));
            }
            Some(o) if o.upstream.is_some() => {
                d.error(target.span(), format!("{route_name}: branch '{}' runs route {}, which forwards to an upstream", field.get_ref(), target.get_ref()), Some("branch to a route of plain stages".into()));
            }
            Some(o) if o.branches.is_some() => {
                d.error(target.span(), format!("{route_name}: branch '{}' runs route {}, which has branches itself", field.get_ref(), target.get_ref()), Some("branch to a route of plain stages".into()));
            }
            Some(_) => out.push((field.get_ref().clone(), target.get_ref().clone())),
        }
    }
    (d.list.len() == before).then_some(out)
}

fn params(r: &RawRoute, stages: &[StageDef], route_name: &str, d: &mut Diagnostics<'_>) -> Option<Vec<ParamDef>> {
    let before = d.list.len();
    let mut out = Vec::new();
    for (name, p) in &r.params {
        let (name, span, p) = (name.get_ref(), p.span(), p.get_ref());
        let at: Vec<usize> = stages.iter().enumerate().filter(|(_, s)| s.plugin == p.stage).map(|(i, _)| i).collect();
        let [stage] = at[..] else {
            let why = if at.is_empty() { "is not a stage of this route" } else { "appears more than once in this route" };
            d.error(span, format!("{route_name}: param '{name}' targets plugin '{}', which {why}", p.stage), None);
            continue;
        };
        if p.min.is_nan() || p.max.is_nan() {
            d.error(span, format!("{route_name}: param '{name}' has a bound that is not a number (nan)"), None);
            continue;
        }
        if p.min > p.max {
            d.error(span, format!("{route_name}: param '{name}' has min {} above max {}", p.min, p.max), None);
            continue;
        }
        let setting = stages[stage].settings.get(name);
        let integer = setting.is_some_and(|v| v.is_i64() || v.is_u64());
        match setting.and_then(|v| v.as_f64()) {
            Some(v) if (p.min..=p.max).contains(&v) => out.push(ParamDef { name: name.clone(), stage, min: p.min, max: p.max, integer, required: p.required }),
            Some(v) => d.error(span, format!("{route_name}: the setting {name} = {v} of stage '{}' is outside its own bounds {}..{}", p.stage, p.min, p.max), None),
            None => d.error(span, format!("{route_name}: param '{name}' needs a numeric setting '{name}' in stage '{}' to override", p.stage), Some(format!("add {name} = <default> to that stage's settings"))),
        }
    }
    (d.list.len() == before).then_some(out)
}

/// A whole number from 1 to `max`, or an error where it stands.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::nn::{PoolSettings, Threads};

    #[test]
    fn models_share_the_pool_unless_they_set_threads_and_old_keys_still_parse() {
        let text = r#"
[server]
inference_threads = 3
max_model_runs = 5

[models.plain]
file = "Cargo.toml"

[models.own]
file = "Cargo.toml"
instances = 2
threads = 4
"#;
        let config = super::super::parse(text, &Path::new(env!("CARGO_MANIFEST_DIR")).join("osprey.toml")).unwrap();
        assert_eq!(config.server.pool, PoolSettings { threads: 3, max_runs: 5 });
        let load = |name: &str| config.models.iter().find(|m| m.name == name).unwrap().load.clone();
        assert_eq!((load("plain").instances, load("plain").threads), (super::DEFAULT_INSTANCES, Threads::Auto));
        assert_eq!((load("own").instances, load("own").threads), (2, Threads::Own(4)));
    }

    fn diagnostics(text: &str) -> Vec<(usize, usize, String)> {
        let err = super::super::parse(text, &Path::new(env!("CARGO_MANIFEST_DIR")).join("osprey.toml")).unwrap_err();
        err.diagnostics().iter().map(|d| (d.line, d.column, d.message.clone())).collect()
    }

    #[test]
    fn a_remote_model_names_a_pool_and_its_model_on_the_nodes() {
        let text = r#"
[upstreams.triton]
nodes = ["http://10.0.0.2:8000"]
health_path = "/v2/health/ready"

[models.yolo]
remote = { upstream = "triton", model = "yolov8n", version = "2" }
"#;
        let config = super::super::parse(text, &Path::new(env!("CARGO_MANIFEST_DIR")).join("osprey.toml")).unwrap();
        let spec = crate::nn::RemoteSpec { upstream: "triton".into(), model: "yolov8n".into(), version: Some("2".into()) };
        assert_eq!(config.models[0].source, super::ModelSource::Remote(spec));
        assert_eq!(config.upstreams[0].health_path, "/v2/health/ready");
    }

    #[test]
    fn remote_errors_stand_where_the_key_is() {
        let text = r#"
[upstreams.triton]
nodes = ["http://10.0.0.2:8000"]
health_path = "v2/health/ready"

[models.both]
file = "Cargo.toml"
remote = { upstream = "triton", model = "m" }

[models.lost]
remote = { upstream = "tirton", model = "m" }

[models.tuned]
remote = { upstream = "triton", model = "a/b" }
instances = 2
max_batch = 8
"#;
        let found = diagnostics(text);
        let at = |line: usize, needle: &str| assert!(found.iter().any(|(l, _, m)| *l == line && m.contains(needle)), "no error at line {line} with {needle:?}: {found:?}");
        at(4, "health_path \"v2/health/ready\" does not start with a single '/'");
        at(7, "model 'both' has both `file` and `remote`");
        at(11, "upstream 'tirton' is not in [upstreams]");
        at(14, "remote model \"a/b\" cannot be a path segment");
        at(15, "instances cannot go with remote");
        assert_eq!(found.iter().find(|(l, _, _)| *l == 11).unwrap().1, 23, "the column of the upstream's value");
        at(16, "max_batch cannot go with remote");
    }

    #[test]
    fn a_model_without_a_source_says_what_to_add() {
        let found = diagnostics("[models.empty]\nlabels = \"Cargo.toml\"\n");
        assert!(found[0].2.contains("has none of `file`, `versions` or `remote`"), "{found:?}");
        let found = diagnostics("[models.odd]\nremote = { upstream = \"x\", model = \"m\", port = 1 }\n");
        assert!(found[0].2.contains("unknown field `port`"), "{found:?}");
    }
}
