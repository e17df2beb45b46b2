//! Osprey: serve vision models over HTTP(S) through sandboxed WASM plugin chains.
//!
//! A request walks one corridor, downward only: an entry point hands it to
//! the shared floor, which runs it down `snapshot` → `chain` → `plugin` → `nn`.
//! No module imports from a floor above its own; a room that needs what
//! another room has asks for it to move down a floor.
//!
//! The floors, top to bottom (`host/tests/floors.rs` checks every import against them):
//!
//! 1. The top: `server` (listeners, hyper connections, the router, the admin API,
//!    the page, the tunnel a node dials out to its gateway) dispatches to the rooms
//!    beside it; `cli` and `client` are the command line; `fuzzing`, first on the
//!    floor, feeds untrusted bytes to parsers of every floor below (the fuzz targets
//!    in `host/fuzz` and the corpus test call it).
//! 2. Entry rooms, side by side; none imports another or the server:
//!    - `oip`: the Open Inference Protocol v2 (REST) under `/v2`.
//!    - `video`: video jobs: upload, ffprobe, ffmpeg frames through a route, results as SSE.
//!    - `stream`: live streams: RTMP in (pushed or pulled), a similar-frame gate, frames
//!      through a route, viewer-marked HLS out, results as SSE, leak tracing.
//!    - `reload`: rebuild the snapshot aside and swap it in; the file watcher.
//! 3. The shared floor, under every entry point:
//!    - `route`: an upload through a route: the result cache, a turn to run, the chain, the answer.
//!    - `state`: `Shared`, what every entry point shares: the snapshot being served, the services.
//!    - `turns`: turns to run a chain: a line per route served fairly, admission by predicted wait.
//!    - `http`: the response body, `ServeError`, the one map from errors to HTTP, reading uploads.
//! 4. Services that outlive a snapshot, each importing only those after it:
//!    - `upstream`: pools of osprey nodes a gateway forwards routes to; health, retry,
//!      deadline; nodes that dial in over a tunnel; and remote models over the Open
//!      Inference Protocol (it implements `nn`'s remote traits).
//!    - `cache`: the result cache (memory LRU or Redis), keyed by SHA-256.
//!    - `tls`: certificates from ACME or files, the handshake, the redirect listener, a client's trust.
//!    - `audit`: the viewers' audit log (SQLite), written by a thread of its own.
//! 5. The corridor, each importing only those after it:
//!    - `snapshot`: the immutable set of compiled plugins, loaded models and routes.
//!    - `chain`: builds a route's chain of stages and runs it on a blocking thread.
//!    - `plugin`: wasmtime engine, per-request sandbox, the host interfaces of the WIT world (wasi-nn among them).
//!    - `imaging`: native decode and letterbox behind the `imaging` interface.
//! 6. The ground, which every floor may use:
//!    - `config`: TOML config, parsed raw then validated, errors with line and column
//!      (in the vocabulary of `nn` and `ratelimit`).
//!    - `ratelimit`: token buckets per client and route (memory or Redis).
//!    - `redis`: the Redis that cache and buckets share; timeouts, down and back, local meanwhile.
//!    - `nn`: ONNX Runtime sessions, queues and batching: the models; a remote model is
//!      a trait object the snapshot is handed from above, so `nn` never imports the network.
//!    - `metrics`: Prometheus metrics at `/metrics`.

pub mod audit;
pub mod cache;
pub mod chain;
pub mod cli;
pub mod client;
pub mod config;
pub mod fuzzing;
pub mod http;
pub mod imaging;
pub mod metrics;
pub mod nn;
pub mod oip;
pub mod plugin;
pub mod ratelimit;
pub mod redis;
pub mod reload;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod stream;
pub mod tls;
pub mod turns;
pub mod upstream;
pub mod video;
