//! Osprey: serve vision models over HTTP(S) through sandboxed WASM plugin chains.
//!
//! A request walks one corridor, downward only:
//! `server` (listener, router, body, respond) → `snapshot` (what is loaded now)
//! → `chain` (a route's stages, deadline) → `plugin` (sandboxed WASM stages)
//! → `nn` (wasi-nn over ONNX Runtime).
//!
//! - `cli`: the command line (`osprey serve`, `check`, `client`).
//! - `client`: `osprey client`: detect, classify and video against a running server.
//! - `config`: TOML config, parsed raw then validated, errors with line and column.
//! - `snapshot`: the immutable set of compiled plugins, loaded models and routes.
//! - `server`: hyper connections, routing, request bodies, the one error-to-HTTP map.
//! - `chain`: builds a route's chain of stages and runs it on a blocking thread.
//! - `plugin`: wasmtime engine, per-request sandbox, host interfaces of the WIT world.
//! - `imaging`: native decode and letterbox behind the `imaging` interface.
//! - `nn`: ONNX Runtime sessions and the wasi-nn host interface.
//! - `reload`: rebuild the snapshot aside and swap it in; the file watcher.
//! - `metrics`: Prometheus metrics at `/metrics`.
//! - `cache`: the result cache (memory LRU or Redis), keyed by SHA-256.
//! - `ratelimit`: token buckets per client and route (memory or Redis).
//! - `oip`: the Open Inference Protocol v2 (REST) under `/v2`.
//! - `tls`: HTTPS: certificates from ACME or files, the handshake, the plain redirect listener.
//! - `video`: video jobs: upload, ffprobe, ffmpeg frames through a route, results as SSE.

pub mod cache;
pub mod chain;
pub mod cli;
pub mod client;
pub mod config;
pub mod imaging;
pub mod metrics;
pub mod nn;
pub mod oip;
pub mod plugin;
pub mod ratelimit;
pub mod reload;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod video;
