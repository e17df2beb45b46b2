//! `[streams]`: live streams. Validated into `StreamSettings`; the section
//! absent means streams are off (`POST /v1/streams` answers 404).

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::check::{positive_ms, ranged};
use super::diag::Diagnostics;
use super::raw::RawStreams;

/// Bounds and defaults of the live streams.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    pub max_streams: usize,
    pub max_width: u32,
    pub max_height: u32,
    pub max_fps: u32,
    /// RTMP listeners for pushed streams take ports from here (inclusive).
    pub ports: (u16, u16),
    /// Hosts a pulled stream's URL may name; empty: pulls are refused.
    pub allow: Vec<String>,
    /// A frame older than this when its turn comes is dropped: the output stays live.
    pub lag: Duration,
    /// No frame for this long: the ingest is restarted.
    pub stall: Duration,
    /// Share of one core the route's chain may take per stream.
    pub cpu: f64,
    pub gate: GateThresholds,
    pub watermark_route: String,
    pub viewer_id_bits: u32,
    /// The audit log's SQLite file.
    pub audit: PathBuf,
    pub audit_keep: Duration,
    /// The host publish URLs name.
    pub public_host: Option<String>,
}

/// The similar-frame gate: a frame is "the same" when the mean cell
/// difference and the largest cell difference are both at most these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateThresholds {
    pub mean: f64,
    pub cell: f64,
}

/// Measured on the test script (`tests/streams`): sensor noise and x264 at
/// 1 Mbit/s move the cell means of a still scene by under 1 level on
/// average and under 4 in any cell, while a person crossing a 640x360
/// frame moves a cell by 20 or more.
pub const DEFAULT_GATE: GateThresholds = GateThresholds { mean: 1.5, cell: 8.0 };

impl StreamSettings {
    fn defaults(base: &Path) -> Self {
        StreamSettings {
            max_streams: 2,
            max_width: 1280,
            max_height: 720,
            max_fps: 15,
            ports: (19350, 19359),
            allow: Vec::new(),
            lag: Duration::from_millis(1000),
            stall: Duration::from_secs(5),
            cpu: 1.0,
            gate: DEFAULT_GATE,
            watermark_route: "/v1/stego/embed/jpeg".into(),
            viewer_id_bits: 8,
            audit: base.join("streams-audit.sqlite"),
            audit_keep: Duration::from_secs(30 * 86_400),
            public_host: None,
        }
    }
}

pub(super) fn compile(raw: &Spanned<RawStreams>, base: &Path, d: &mut Diagnostics<'_>) -> Option<StreamSettings> {
    let s = raw.get_ref();
    let mut out = StreamSettings::defaults(base);
    let errors = d.list.len();
    if let Some(n) = s.max_streams.as_ref().and_then(|v| ranged(v, "[streams] max_streams", 64, d)) {
        out.max_streams = n as usize;
    }
    if let Some(n) = s.max_width.as_ref().and_then(|v| ranged(v, "[streams] max_width", 3840, d)) {
        out.max_width = n & !1;
    }
    if let Some(n) = s.max_height.as_ref().and_then(|v| ranged(v, "[streams] max_height", 2160, d)) {
        out.max_height = n & !1;
    }
    if let Some(n) = s.max_fps.as_ref().and_then(|v| ranged(v, "[streams] max_fps", 60, d)) {
        out.max_fps = n;
    }
    if let Some(p) = &s.ports {
        match p.get_ref()[..] {
            [first, last] if first > 0 && first <= last => out.ports = (first, last),
            _ => d.error(p.span(), "[streams] ports must be [first, last] with 0 < first <= last", Some("like [19350, 19359]".into())),
        }
    }
    for host in s.allow.iter().flatten() {
        let h = host.get_ref();
        if h.is_empty() || h.contains(['/', ':', '@', ' ']) && h.parse::<std::net::Ipv6Addr>().is_err() {
            d.error(host.span(), format!("[streams] allow: \"{h}\" is not a host name or IP"), Some("a bare host, like \"camera.example.com\" or \"10.0.0.7\"".into()));
        } else {
            out.allow.push(h.to_ascii_lowercase());
        }
    }
    if let Some(v) = s.lag_ms.as_ref().and_then(|v| positive_ms(v, "[streams] lag_ms", d)) {
        out.lag = v;
    }
    if let Some(v) = s.stall_ms.as_ref().and_then(|v| positive_ms(v, "[streams] stall_ms", d)) {
        out.stall = v;
    }
    if let Some(v) = &s.cpu {
        match *v.get_ref() {
            c if (0.05..=2.0).contains(&c) => out.cpu = c,
            c => d.error(v.span(), format!("[streams] cpu = {c} is out of range"), Some("a share of one core, 0.05 to 2.0".into())),
        }
    }
    for (v, slot, what) in [(&s.gate_mean, &mut out.gate.mean, "gate_mean"), (&s.gate_cell, &mut out.gate.cell, "gate_cell")] {
        if let Some(v) = v {
            match *v.get_ref() {
                x if (0.0..=255.0).contains(&x) => *slot = x,
                x => d.error(v.span(), format!("[streams] {what} = {x} is out of range"), Some("luma levels, 0 to 255 (0 turns the gate off)".into())),
            }
        }
    }
    if let Some(r) = &s.watermark_route {
        out.watermark_route = r.get_ref().clone();
    }
    if let Some(n) = s.viewer_id_bits.as_ref().and_then(|v| ranged(v, "[streams] viewer_id_bits", 16, d)) {
        out.viewer_id_bits = n;
    }
    if let Some(a) = &s.audit {
        out.audit = base.join(a.get_ref());
    }
    if let Some(days) = &s.audit_days {
        if *days.get_ref() == 0 {
            d.error(days.span(), "[streams] audit_days must be above 0", None);
        }
        out.audit_keep = Duration::from_secs(days.get_ref().saturating_mul(86_400));
    }
    out.public_host = s.public_host.as_ref().map(|h| h.get_ref().clone());
    (d.list.len() == errors).then_some(out)
}
