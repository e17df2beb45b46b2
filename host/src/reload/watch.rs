//! The file watcher: its own thread, watching the folders that hold the
//! config file, the plugins and the models. Folders, not files, because
//! editors and `cp` replace a file's inode; the watch on its folder survives.
//! A change is acted on once the files have been quiet for `SETTLE`, so a file
//! still being copied in is not read half-written (and if one is, its load
//! fails, the reload rolls back, and the copy's last write triggers another).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::config::{Config, ModelSource};
use crate::state::Shared;

/// Quiet time after the last event before reloading.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Arms the watches, then hands them to a thread that runs for the life of
/// the process. Armed before returning, so no change after start is missed.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<()> {
    let (tx, rx) = channel();
    let mut watcher = notify::recommended_watcher(tx).map_err(std::io::Error::other)?;
    let armed = targets(&shared.snapshot.load().config, shared.config_path.as_deref());
    rearm(&mut watcher, &Targets::default(), &armed);
    std::thread::Builder::new().name("osprey-watch".into()).spawn(move || run(&shared, watcher, rx, armed))?;
    Ok(())
}

fn run(shared: &Arc<Shared>, mut watcher: RecommendedWatcher, rx: Receiver<notify::Result<notify::Event>>, mut armed: Targets) {
    loop {
        let Some(changed) = wait_for_change(&rx, &armed) else {
            tracing::error!("file watcher stopped; reload with POST /admin/reload instead");
            return;
        };
        let cause = format!("changed: {}", changed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        // The reload itself is blocking work on this (non-async) thread.
        super::reload(shared, &cause);
        // The new config may name other files: watch those from now on.
        let wanted = targets(&shared.snapshot.load().config, shared.config_path.as_deref());
        rearm(&mut watcher, &armed, &wanted);
        armed = wanted;
    }
}

/// What to watch: folders (flat or recursive) and the files in them that matter.
#[derive(Default, PartialEq)]
struct Targets {
    flat: BTreeSet<PathBuf>,
    deep: BTreeSet<PathBuf>,
    files: BTreeSet<PathBuf>,
}

fn targets(config: &Config, config_path: Option<&Path>) -> Targets {
    let mut t = Targets::default();
    let mut file = |p: &Path| match (folder(p).canonicalize(), p.file_name()) {
        (Ok(dir), Some(name)) => {
            t.files.insert(dir.join(name));
            t.flat.insert(dir);
        }
        (Err(e), _) => tracing::warn!("cannot watch {}: its folder: {e}", p.display()),
        (Ok(_), None) => tracing::warn!("cannot watch {}: not a file name", p.display()),
    };
    config_path.into_iter().for_each(&mut file);
    config.plugins.iter().for_each(|p| file(&p.file));
    for m in &config.models {
        match &m.source {
            ModelSource::File(f) => file(f),
            ModelSource::Versions(_) | ModelSource::Remote(_) => {}
        }
        m.labels.iter().for_each(|l| file(l));
    }
    for m in &config.models {
        if let ModelSource::Versions(dir) = &m.source {
            if let Ok(dir) = dir.canonicalize() {
                t.deep.insert(dir);
            }
        }
    }
    t
}

/// The folder holding `p`. A bare file name (`--config zone.toml`) has the
/// parent `""`, which names no folder: it lives in the current one.
fn folder(p: &Path) -> &Path {
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn rearm(watcher: &mut RecommendedWatcher, old: &Targets, new: &Targets) {
    if old == new {
        return;
    }
    let names = |s: &BTreeSet<PathBuf>| s.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    tracing::info!("watching for changes: files {}; folders {}", names(&new.files), names(&new.deep));
    for dir in old.flat.iter().chain(&old.deep) {
        let _ = watcher.unwatch(dir);
    }
    let all = new.flat.iter().map(|d| (d, RecursiveMode::NonRecursive)).chain(new.deep.iter().map(|d| (d, RecursiveMode::Recursive)));
    for (dir, mode) in all {
        if let Err(e) = watcher.watch(dir, mode) {
            tracing::warn!("cannot watch {}: {e}", dir.display());
        }
    }
}

/// Blocks until a relevant path changes and the files settle; returns the
/// changed paths, or `None` when the watcher is gone.
fn wait_for_change(rx: &Receiver<notify::Result<notify::Event>>, t: &Targets) -> Option<BTreeSet<PathBuf>> {
    let mut changed = BTreeSet::new();
    loop {
        let event = if changed.is_empty() { rx.recv().map_err(|_| RecvTimeoutError::Disconnected) } else { rx.recv_timeout(SETTLE) };
        match event {
            Ok(Ok(e)) if !e.kind.is_access() => changed.extend(e.paths.into_iter().filter(|p| relevant(p, t))),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => return Some(changed),
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn relevant(p: &Path, t: &Targets) -> bool {
    t.files.contains(p) || t.deep.iter().any(|d| p.starts_with(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--config zone.toml` once watched nothing: the parent of a bare file
    /// name is `""`, which cannot be resolved, and the file was dropped silently.
    #[test]
    fn a_config_named_without_a_folder_is_watched_in_the_current_one() {
        let config = crate::config::parse("", Path::new("zone.toml")).expect("an empty config is valid");
        let t = targets(&config, Some(Path::new("zone.toml")));
        let here = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert!(t.files.contains(&here.join("zone.toml")), "watched files: {:?}", t.files);
        assert!(t.flat.contains(&here), "watched folders: {:?}", t.flat);
        assert_eq!(folder(Path::new("zone.toml")), Path::new("."));
        assert_eq!(folder(Path::new("config/zone.toml")), Path::new("config"));
    }
}
