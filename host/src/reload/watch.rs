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
    let mut file = |p: &Path| {
        if let (Some(dir), Some(name)) = (p.parent().and_then(|d| d.canonicalize().ok()), p.file_name()) {
            t.files.insert(dir.join(name));
            t.flat.insert(dir);
        }
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

fn rearm(watcher: &mut RecommendedWatcher, old: &Targets, new: &Targets) {
    if old == new {
        return;
    }
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
