//! The ONNX Runtime library: found, loaded once per process, and explained
//! when it is missing; its environment holds the one intra-op thread pool
//! and the one CPU arena that every session shares.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::GlobalThreadPoolOptions;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::AsPointer;

use super::pool::{self, PoolSettings};
use super::NnError;

/// The library version setup fetches (see `models/fetch.py`).
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();
/// Threads of the shared pool: fixed by the first `configure` (or the
/// default) when the environment is built.
static POOL_THREADS: OnceLock<usize> = OnceLock::new();

/// Applies `[server]`'s pool settings. The thread count only takes effect
/// before the first model loads (ONNX Runtime sizes its global pool once);
/// the run limit applies at once, also on reload.
pub fn configure(settings: PoolSettings) {
    pool::gate().set_limit(settings.max_runs);
    let threads = *POOL_THREADS.get_or_init(|| settings.threads);
    if threads != settings.threads {
        tracing::warn!("inference_threads = {} takes effect on restart; the pool keeps {threads} threads", settings.threads);
    }
}

/// Threads of the shared intra-op pool, once it is sized (the default until then).
pub fn pool_threads() -> usize {
    *POOL_THREADS.get_or_init(|| PoolSettings::default().threads)
}

/// Where the library is looked for: `ORT_DYLIB_PATH`, then the setup cache.
pub fn library_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    cache_dir().join("onnxruntime").join(ORT_LIBRARY)
}

/// `$OSPREY_CACHE`, else `~/.cache/osprey`: where setup keeps what it fetched.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("OSPREY_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("osprey")
}

/// Loads ONNX Runtime once; later calls return the same environment.
pub fn environment() -> Result<&'static ort::environment::Environment, NnError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = library_path();
    let env = load(&path)?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

fn load(path: &Path) -> Result<ort::environment::Environment, NnError> {
    if !path.is_file() {
        return Err(NnError::RuntimeMissing {
            path: path.to_path_buf(),
            why: "no such file".into(),
        });
    }
    let builder = ort::init_from(path).map_err(|e| NnError::RuntimeMissing {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let threads = pool_threads();
    let failed = |e: ort::Error| NnError::Runtime(format!("cannot start ONNX Runtime from {}: {e}", path.display()));
    // Spinning off: a worker that waits for work burns a core another run needs.
    // Inter-op 1: sessions run their nodes in order, so that pool would only idle.
    let options = GlobalThreadPoolOptions::default()
        .with_intra_threads(threads)
        .and_then(|o| o.with_inter_threads(1))
        .and_then(|o| o.with_spin_control(false))
        .map_err(failed)?;
    let env = builder.with_name("osprey").with_global_thread_pool(options).build().map_err(failed)?;
    register_shared_arena(&env).map_err(failed)?;
    Ok(env)
}

/// One CPU arena in the environment, used by every session that opts in
/// (`with_env_allocators`), instead of one arena per session: each arena
/// keeps the most its session ever held, so one per session adds up the peaks
/// of all of them where one shared arena holds the peak of the runs that are
/// under way at once. (Measured with the three default models, RSS after 40
/// requests per route 8 at a time: 330 MiB shared, 383 MiB per session.)
fn register_shared_arena(env: &ort::environment::Environment) -> Result<(), ort::Error> {
    let info = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default)?;
    // SAFETY: both pointers are live for the call; a null arena config asks for the defaults.
    unsafe {
        let status = (ort::api().CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), std::ptr::null());
        ort::Error::result_from_status(status)
    }
}

/// How many malloc arenas glibc may make for the whole server.
///
/// By default glibc gives threads up to 8 per core, and memory freed in one
/// arena is never reused by another; the blocking threads that run chains
/// come and go with the load, each allocating decoded images and tensors.
/// The 10-minute mixed soak (`tests/benches/soak.rs`), RSS after the first
/// minute / at the end / at its peak: 741 / 836 / 838 MiB with glibc's
/// default, 507 / 559 / 565 MiB with 2 arenas (run with `MALLOC_ARENA_MAX=2`,
/// which this sets), with the answers per route within 4 % of each other.
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas (`MALLOC_ARENAS`), unless `MALLOC_ARENA_MAX`
/// in the environment says how many. Call it before the server starts threads.
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: takes no pointers; a setting glibc reads when it makes an arena.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// Hands the allocator's free memory back to the system. glibc keeps what a
/// model load freed (the parsed file, graph copies made while optimising) and
/// what an unloaded model's sessions held, in heaps it trims only from the
/// top; `malloc_trim` releases the free pages inside them too.
pub fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: takes no pointers; glibc locks its arenas while it trims.
    unsafe {
        libc::malloc_trim(0);
    }
}
