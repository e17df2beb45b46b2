//! What one request's `Store` holds: the contexts of the host interfaces
//! (WASI, wasi-nn, the plugin world's own), the resource table they share,
//! and the memory cap. The engine links against it; the sandbox fills one per request.

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::imports::{HostCtx, HostView};
use super::wasi_nn::{NnCtx, NnView};

/// Per-store state; each host interface borrows its part of it.
pub struct StoreData {
    wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) nn: NnCtx,
    pub(super) host: HostCtx,
    pub(super) memory: MemoryCap,
    pub(super) stderr: MemoryOutputPipe,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl StoreData {
    /// A store's state: its host interfaces' contexts, a memory cap of
    /// `memory_bytes`, and the guest's stderr kept (4 KiB) to explain a trap.
    pub(super) fn new(nn: NnCtx, host: HostCtx, memory_bytes: usize) -> Self {
        let stderr = MemoryOutputPipe::new(4096);
        StoreData {
            wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
            nn,
            host,
            memory: MemoryCap { limit: memory_bytes, hit: false },
            stderr,
        }
    }

    pub(crate) fn nn_view(&mut self) -> NnView<'_> {
        NnView { ctx: &mut self.nn, table: &mut self.table }
    }

    pub(crate) fn host_view(&mut self) -> HostView<'_> {
        HostView { ctx: &mut self.host, table: &mut self.table }
    }
}

/// Refuses memory growth past the cap, remembering that it did, so the trap
/// that follows is reported as what it is.
pub(super) struct MemoryCap {
    pub(super) limit: usize,
    pub(super) hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            wasmtime::bail!("memory limit of {} bytes exceeded", self.limit);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
