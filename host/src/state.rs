//! The state every entry point shares (`Shared`): the snapshot being served
//! and the services that outlive it. It sits below the rooms that use it
//! (server, oip, video, reload) and imports none of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::cache::{Cache, CacheError};
use crate::ratelimit::{Limiter, SystemClock};
use crate::redis::Redis;
use crate::snapshot::Snapshot;
use crate::turns::Turns;
use crate::upstream::Pools;

/// What every entry point shares: the current snapshot (swapped whole on
/// reload), where it was loaded from, the record of reloads, and the services
/// that outlive snapshots (result cache, token buckets, turns to run, upstream pools).
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// The config file reloads read; `None` for a snapshot built in code.
    pub config_path: Option<PathBuf>,
    pub reload: Reloads,
    pub cache: Cache,
    pub limiter: Limiter,
    /// Turns to run a chain (`[server] max_inflight`): a line per route,
    /// served fairly, and admission by predicted wait.
    pub turns: Arc<Turns>,
    /// The certificate being served; unset while TLS is off.
    pub tls: OnceLock<Arc<crate::tls::Status>>,
    /// The pools of nodes that upstream routes forward to and remote models
    /// run on (shared with the connector that builds snapshots).
    pub upstreams: Arc<Pools>,
    next_request: AtomicU64,
}

impl Shared {
    /// Makes the services the config names. With `[redis] url`, a host
    /// starts even while Redis is away: it serves from local state meanwhile.
    pub async fn new(snapshot: Snapshot, config_path: Option<PathBuf>) -> Result<Arc<Self>, CacheError> {
        let pools = Arc::new(Pools::new(&snapshot.config.upstreams));
        Self::new_with_pools(snapshot, config_path, pools).await
    }

    /// Like `new`, with the pools the snapshot's remote models were opened on.
    pub async fn new_with_pools(snapshot: Snapshot, config_path: Option<PathBuf>, pools: Arc<Pools>) -> Result<Arc<Self>, CacheError> {
        let (bytes, clock) = (snapshot.config.cache_bytes, Box::<SystemClock>::default());
        let (cache, limiter) = match &snapshot.config.redis {
            Some(settings) => {
                let redis = Redis::open(settings).map_err(|e| CacheError::Redis { url: crate::redis::without_password(&settings.url), why: e.to_string() })?;
                redis.check().await;
                (Cache::redis(redis.clone(), bytes), Limiter::redis(redis, clock))
            }
            None => (Cache::memory(bytes), Limiter::memory(clock)),
        };
        Ok(Self::assemble(snapshot, config_path, cache, limiter, pools))
    }

    /// With services made by the caller (tests bring a fake clock).
    pub fn with(snapshot: Snapshot, config_path: Option<PathBuf>, cache: Cache, limiter: Limiter) -> Arc<Self> {
        let pools = Arc::new(Pools::new(&snapshot.config.upstreams));
        Self::assemble(snapshot, config_path, cache, limiter, pools)
    }

    fn assemble(snapshot: Snapshot, config_path: Option<PathBuf>, cache: Cache, limiter: Limiter, upstreams: Arc<Pools>) -> Arc<Self> {
        snapshot.announce();
        let turns = Turns::new(snapshot.config.server.max_inflight);
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            config_path,
            reload: Reloads::default(),
            turns,
            cache,
            limiter,
            tls: OnceLock::new(),
            upstreams,
            next_request: AtomicU64::new(1),
        })
    }

    /// A new request id, for the logs (video frames take one each).
    pub fn request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }
}

/// 128 random bits, in hex: the ids of video jobs and streams and the keys
/// of pushed streams, which cannot be guessed, so only who got one can use it.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a reload ended.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Success { generation: u64 },
    RolledBack { reason: String, serving: u64 },
}

/// The last reload, for `/admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub cause: String,
    /// Unix seconds.
    pub at: u64,
    pub took_ms: f64,
}

/// The record of reloads, shared by the watcher and the admin API; the
/// `reload` room writes it.
#[derive(Default)]
pub struct Reloads {
    /// One reload at a time; also holds the last record.
    pub(crate) last: Mutex<Option<Record>>,
    pub(crate) succeeded: AtomicU64,
    pub(crate) rolled_back: AtomicU64,
}

impl Reloads {
    pub fn last(&self) -> Option<Record> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads of this server that succeeded and that rolled back.
    pub fn counts(&self) -> (u64, u64) {
        (self.succeeded.load(Ordering::Relaxed), self.rolled_back.load(Ordering::Relaxed))
    }
}
