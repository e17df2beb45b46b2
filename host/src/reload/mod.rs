//! Hot reload: build a complete new snapshot aside (config validated,
//! components compiled, models loaded and warmed), then swap it in whole.
//! A failure keeps the current snapshot serving and says why in one line.
//!
//! - `watch`: the file watcher thread that calls `reload` when files settle.

pub mod watch;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config;
use crate::metrics::{OutcomeLabel, ReloadOutcome};
use crate::snapshot::Snapshot;
use crate::state::Shared;
pub use crate::state::{Outcome, Record};

/// Rebuilds from the config file and swaps. Blocking: call it on a blocking thread.
pub fn reload(shared: &Arc<Shared>, cause: &str) -> Record {
    let mut last = shared.reload.last.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let current = shared.snapshot.load_full();
    let built = match &shared.config_path {
        None => Err("no config file to reload from".to_string()),
        Some(path) => config::load(path)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                let remotes = crate::upstream::Remotes::new(shared.upstreams.clone(), &c.upstreams);
                Snapshot::build_with(c, &current.engine, Some(&current), &remotes).map_err(|e| e.to_string())
            }),
    };
    let outcome = match built {
        Ok(next) => {
            let generation = next.generation;
            next.announce();
            // The run limit follows the config at once; the pool's size waits for a restart.
            crate::nn::runtime::configure(next.config.server.pool);
            shared.upstreams.sync(&next.config.upstreams);
            shared.snapshot.store(Arc::new(next));
            shared.reload.succeeded.fetch_add(1, Ordering::Relaxed);
            crate::metrics::global().reloads.get_or_create(&OutcomeLabel { outcome: ReloadOutcome::success }).inc();
            tracing::info!(generation, took_ms = started.elapsed().as_millis() as u64, "reload: now serving generation {generation} ({cause})");
            Outcome::Success { generation }
        }
        Err(reason) => {
            shared.reload.rolled_back.fetch_add(1, Ordering::Relaxed);
            crate::metrics::global().reloads.get_or_create(&OutcomeLabel { outcome: ReloadOutcome::rolled_back }).inc();
            // One line: what, where, why (config errors carry file:line:col).
            tracing::warn!("reload rolled back, still serving generation {} ({cause}): {}", current.generation, reason.replace('\n', "; "));
            Outcome::RolledBack { reason, serving: current.generation }
        }
    };
    let record = Record {
        outcome,
        cause: cause.to_string(),
        at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        took_ms: started.elapsed().as_secs_f64() * 1e3,
    };
    *last = Some(record.clone());
    record
}
