//! The viewers' audit log (seed 004): who watched which stream, from where,
//! minute by minute, in an embedded SQLite file (WAL). One thread of its own
//! owns the writing connection; the request path only puts a visit on a
//! bounded channel and never waits for the disk. A row is *acknowledged*
//! once its transaction committed: WAL makes it survive the process being
//! killed (the OS holds the written pages).
//!
//! One row per viewer, client IP, stream and minute: repeats within a minute
//! are folded in memory before they reach the channel, and by the primary key.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};
use serde::Serialize;

/// Visits waiting for the writer; past this a visit is dropped and counted
/// (the disk is slower than the viewers: never hold a request for it).
const QUEUE: usize = 4096;
/// Visits written in one transaction at most.
const BATCH: usize = 512;
/// How often rows past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {why}")]
    Open { path: PathBuf, why: String },
    #[error("audit log query: {0}")]
    Query(String),
}

/// One viewer seen on one stream in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Visit {
    pub viewer: u32,
    pub ip: String,
    /// Unix time of the minute's start, in seconds.
    pub minute: i64,
    pub stream: String,
    pub route: String,
}

/// What `GET /admin/audit` may ask for.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub viewer: Option<u32>,
    /// Unix seconds, inclusive.
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: usize,
}

pub struct Audit {
    path: PathBuf,
    tx: SyncSender<Visit>,
    /// Visits already queued this minute and the last: repeats stop here.
    seen: Mutex<HashSet<Visit>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    committed: AtomicU64,
    dropped: AtomicU64,
}

impl Audit {
    /// Opens (or creates) the file and starts the writer thread.
    pub fn open(path: &Path, keep: Duration) -> Result<Audit, AuditError> {
        let fail = |e: &dyn std::fmt::Display| AuditError::Open { path: path.to_path_buf(), why: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let conn = Connection::open(path).map_err(|e| fail(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| fail(&e))?;
        // NORMAL: a commit survives the process being killed; only a power
        // cut may lose the last transactions (FULL would sync every batch).
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| fail(&e))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit (
                viewer INTEGER NOT NULL, ip TEXT NOT NULL, minute INTEGER NOT NULL,
                stream TEXT NOT NULL, route TEXT NOT NULL,
                PRIMARY KEY (viewer, minute, ip, stream)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS audit_minute ON audit (minute);",
        )
        .map_err(|e| fail(&e))?;
        let (tx, rx) = sync_channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let writer_counts = counts.clone();
        std::thread::Builder::new()
            .name("osprey-audit".into())
            .spawn(move || write(conn, rx, keep, &writer_counts))
            .map_err(|e| fail(&e))?;
        Ok(Audit { path: path.to_path_buf(), tx, seen: Mutex::new(HashSet::new()), counts })
    }

    /// Records a visit without waiting: folded into an earlier one of the
    /// same minute, else queued for the writer (dropped, counted and logged
    /// when the writer is that far behind).
    pub fn record(&self, visit: Visit) {
        {
            let mut seen = self.seen.lock().expect("audit seen");
            if seen.contains(&visit) {
                return;
            }
            let now = minute_of(SystemTime::now());
            seen.retain(|v| v.minute >= now - 60);
            seen.insert(visit.clone());
        }
        match self.tx.try_send(visit) {
            Ok(()) => {}
            Err(TrySendError::Full(v)) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                crate::metrics::global().audit_dropped.inc();
                tracing::warn!(viewer = v.viewer, stream = %v.stream, "audit log behind: a visit was dropped");
                self.seen.lock().expect("audit seen").remove(&v);
            }
            Err(TrySendError::Disconnected(_)) => tracing::error!("the audit log's writer has stopped"),
        }
    }

    /// Rows committed since this process started.
    pub fn committed(&self) -> u64 {
        self.counts.committed.load(Ordering::Relaxed)
    }

    /// Rows matching `q`, oldest first; a connection of its own, so call it
    /// off the async runtime (`spawn_blocking`).
    pub fn query(&self, q: &Query) -> Result<Vec<Visit>, AuditError> {
        let err = |e: rusqlite::Error| AuditError::Query(e.to_string());
        let conn = Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
        let mut stmt = conn
            .prepare(
                "SELECT viewer, ip, minute, stream, route FROM audit
                 WHERE (?1 IS NULL OR viewer = ?1) AND (?2 IS NULL OR minute >= ?2) AND (?3 IS NULL OR minute <= ?3)
                 ORDER BY minute, viewer, ip, stream LIMIT ?4",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![q.viewer, q.from, q.to, q.limit as i64], |r| {
                Ok(Visit { viewer: r.get(0)?, ip: r.get(1)?, minute: r.get(2)?, stream: r.get(3)?, route: r.get(4)? })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }
}

/// The minute `t` falls in, as Unix seconds.
pub fn minute_of(t: SystemTime) -> i64 {
    let s = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    s - s % 60
}

/// The writer: waits for a visit, takes what else is queued, commits them
/// in one transaction. Ends when every `Audit` is gone.
fn write(mut conn: Connection, rx: Receiver<Visit>, keep: Duration, counts: &Counts) {
    let mut pruned = std::time::Instant::now() - PRUNE_EVERY;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(v) => batch.push(v),
                Err(_) => break,
            }
        }
        match insert(&mut conn, &batch) {
            Ok(()) => {
                counts.committed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                crate::metrics::global().audit_rows.inc_by(batch.len() as u64);
            }
            Err(e) => {
                counts.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                crate::metrics::global().audit_dropped.inc_by(batch.len() as u64);
                tracing::error!("audit log: {} visits not written: {e}", batch.len());
            }
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = std::time::Instant::now();
            let before = minute_of(SystemTime::now() - keep);
            if let Err(e) = conn.execute("DELETE FROM audit WHERE minute < ?1", params![before]) {
                tracing::warn!("audit log: pruning rows past the retention failed: {e}");
            }
        }
    }
}

fn insert(conn: &mut Connection, batch: &[Visit]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached("INSERT OR IGNORE INTO audit (viewer, ip, minute, stream, route) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for v in batch {
            stmt.execute(params![v.viewer, v.ip, v.minute, v.stream, v.route])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(viewer: u32, minute: i64) -> Visit {
        Visit { viewer, ip: "10.0.0.1".into(), minute, stream: "s1".into(), route: "/v1/detect/fast".into() }
    }

    fn wait_for(audit: &Audit, n: u64) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while audit.committed() < n && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn one_row_per_viewer_and_minute_and_queries_filter() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(&dir.path().join("a/audit.sqlite"), Duration::from_secs(86_400)).unwrap();
        let now = minute_of(SystemTime::now());
        for _ in 0..5 {
            audit.record(visit(7, now));
        }
        audit.record(visit(8, now));
        audit.record(visit(7, now - 60));
        wait_for(&audit, 3);
        assert_eq!(audit.committed(), 3);
        let all = audit.query(&Query { limit: 100, ..Default::default() }).unwrap();
        assert_eq!(all.len(), 3);
        let sevens = audit.query(&Query { viewer: Some(7), limit: 100, ..Default::default() }).unwrap();
        assert_eq!(sevens, vec![visit(7, now - 60), visit(7, now)]);
        let recent = audit.query(&Query { from: Some(now), limit: 100, ..Default::default() }).unwrap();
        assert_eq!(recent.len(), 2);
    }
}
