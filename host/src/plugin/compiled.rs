//! Compiled plugins kept on disk between starts (`[server] compiled_cache`):
//! a plugin whose bytes and engine did not change is loaded from its
//! compiled copy instead of compiled again.
//!
//! A file is named by a SHA-256 over the component's own SHA-256 and the
//! engine's compatibility hash (wasmtime's version, its settings and the CPU
//! features it compiles for), so a copy is only ever read back by an engine
//! that could have written it. Loading one is `unsafe` in wasmtime's terms: it
//! is native code, trusted as the binary is. So the folder must belong to this
//! user and be writable by no one else, or it is not used at all.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::config::CompiledCache;

pub struct Compiled {
    dir: PathBuf,
    /// The engine's compatibility hash, as SHA-256 input.
    engine_key: [u8; 32],
}

impl Compiled {
    /// The folder `setting` names (made when missing), or `None` with a log
    /// line saying why plugins will be compiled at every start.
    pub fn open(engine: &wasmtime::Engine, setting: &CompiledCache) -> Option<Compiled> {
        let dir = match setting {
            CompiledCache::Off => return None,
            CompiledCache::At(dir) => dir.clone(),
            CompiledCache::Default => default_dir()?,
        };
        if let Err(why) = usable(&dir) {
            tracing::warn!("compiled plugins are not kept in {}: {why}; every start compiles them", dir.display());
            return None;
        }
        prune(&dir, UNUSED_FOR);
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        Some(Compiled { dir, engine_key: h.0.finalize().into() })
    }

    /// The component of `bytes` (whose SHA-256 is `sha256`): its compiled copy
    /// when there is one, else compiled now and the copy written for next time.
    /// Blocking (a compile is tens of ms to seconds): off the async runtime.
    pub fn component(&self, engine: &wasmtime::Engine, sha256: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        let path = self.path(sha256);
        if path.exists() {
            // SAFETY: the file was written by `serialize` of an engine with this
            // compatibility hash (it is in the name), renamed into place whole,
            // in a folder only this user can write (`usable`).
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => {
                    // Used now: `prune` keeps it another UNUSED_FOR.
                    let _ = std::fs::File::open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    return Ok(c);
                }
                Err(e) => tracing::warn!("compiled copy {} unusable ({e}); compiling again", path.display()),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = component.serialize().and_then(|b| write_whole(&path, &b).map_err(Into::into)) {
            tracing::warn!("cannot keep the compiled plugin in {}: {e}", path.display());
        }
        Ok(component)
    }

    fn path(&self, sha256: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(sha256.as_bytes());
        h.update(self.engine_key);
        self.dir.join(format!("{}.cwasm", super::engine::hex(&h.finalize())))
    }
}

/// A copy not used for this long is removed when an engine opens the folder:
/// every build of every plugin leaves one, and old builds do not come back.
const UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Also removes temporary files an hour old: writes a crash cut short.
fn prune(dir: &Path, unused_for: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for path in entries.flatten().map(|e| e.path()) {
        let age = std::fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if (ext == "cwasm" && age > unused_for) || (ext.starts_with("tmp-") && age.as_secs() > 3600) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn default_dir() -> Option<PathBuf> {
    let var = |k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("OSPREY_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("osprey")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/osprey")))
        .map(|d| d.join("compiled"))
}

/// Makes the folder (mode 0700) when missing; refuses one that another user
/// owns or that group or others may write.
fn usable(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| format!("cannot create it: {e}"))?;
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!("it belongs to uid {}, not to this user (uid {me})", meta.uid()));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!("group or others may write it (mode {:o}); chmod 700 it", meta.permissions().mode() & 0o777));
    }
    Ok(())
}

/// Writes beside the target, then renames: a reader sees the whole file or none.
/// The temporary name is this call's own (process and a counter): two threads
/// or processes compiling the same plugin never write into one file.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
    // On a full disk the write fails part-way: the partial file would keep
    // the space until `prune` an hour later, so it goes at once.
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Feeds `Hash` into SHA-256: a key that is the same in every process and
/// build (std's `DefaultHasher` promises neither).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("only `write` is used: the digest is read from the inner hasher")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::SandboxLimits;

    fn plugin_file() -> Option<crate::plugin::engine::PluginFile> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin/classify.wasm");
        std::fs::read(&path).ok().map(Into::into).or_else(|| {
            eprintln!("skipped: {} not built yet (make plugins)", path.display());
            None
        })
    }

    fn temp_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("osprey-compiled-{name}-{}", std::process::id()))
    }

    #[test]
    fn a_second_engine_loads_the_compiled_copy_instead_of_compiling() {
        let Some(file) = plugin_file() else { return };
        let dir = temp_dir("reuse");
        let _ = std::fs::remove_dir_all(&dir);
        let settings = crate::config::ServerSettings { compiled_cache: CompiledCache::At(dir.clone()), ..Default::default() };
        let first = crate::plugin::Engine::for_server(&settings).unwrap();
        first.compile_file("classify", Path::new("classify.wasm"), &file).unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "one compiled copy: {files:?}");
        assert_eq!(files[0].extension().unwrap(), "cwasm");
        let written = std::fs::metadata(&files[0]).unwrap().ino();

        // A new engine (a restart) with the same settings reads it back and
        // does not write it again (a write renames a new file into place).
        let second = crate::plugin::Engine::for_server(&settings).unwrap();
        let plugin = second.compile_file("classify", Path::new("classify.wasm"), &file).unwrap();
        assert_eq!(std::fs::metadata(&files[0]).unwrap().ino(), written, "the copy was rewritten, not reused");
        assert_eq!(plugin.sha256.len(), 64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_copy_is_compiled_again_and_replaced() {
        let Some(file) = plugin_file() else { return };
        let dir = temp_dir("damaged");
        let _ = std::fs::remove_dir_all(&dir);
        let settings = crate::config::ServerSettings { compiled_cache: CompiledCache::At(dir.clone()), ..Default::default() };
        let engine = crate::plugin::Engine::for_server(&settings).unwrap();
        engine.compile_file("classify", Path::new("classify.wasm"), &file).unwrap();
        let copy = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        std::fs::write(&copy, b"not an ELF file").unwrap();
        engine.compile_file("classify", Path::new("classify.wasm"), &file).expect("compiled again");
        assert!(std::fs::metadata(&copy).unwrap().len() > 1000, "the damaged copy was replaced");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_others_may_write_is_not_used() {
        let dir = temp_dir("open");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let engine = crate::plugin::Engine::new(SandboxLimits::default()).unwrap();
        assert!(Compiled::open(&engine.engine, &CompiledCache::At(dir.clone())).is_none());
        assert!(usable(&dir).unwrap_err().contains("mode 777"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
