//! The state every entry point shares (`Shared`): the snapshot being served
//! and the services that outlive it. It sits below the rooms that use it
//! (server, oip, video, reload) and imports none of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::cache::{Cache, CacheError};
use crate::ratelimit::{Limiter, SystemClock};
use crate::redis::Redis;
use crate::snapshot::Snapshot;
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
    /// Turns to run a chain (`[server] max_inflight`), first come first served.
    pub inflight: Arc<Semaphore>,
    /// Requests waiting for a turn (bounded by `[server] max_waiting`).
    pub waiting: AtomicUsize,
    /// How long a turn is held lately: what a new request's wait is predicted from.
    pub admission: Admission,
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
        let inflight = Arc::new(Semaphore::new(snapshot.config.server.max_inflight));
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            config_path,
            reload: Reloads::default(),
            inflight,
            waiting: AtomicUsize::new(0),
            admission: Admission::default(),
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

/// Admission by predicted wait: a request that would wait for a turn is
/// refused at once when it could not finish within its deadline anyway,
/// instead of waiting the whole deadline and getting a 504 at its end.
///
/// The estimate is an exponentially weighted mean of how long a turn is held
/// (the chain, models included), one sample per turn, all routes together.
/// `slots` turns free up at `slots / hold` a second, so the request behind
/// `ahead` others gets one after about `(ahead + 1) x hold / slots`, and then
/// needs about `hold` itself.
#[derive(Default)]
pub struct Admission {
    /// The mean hold in microseconds; 0 until the first turn ends.
    hold_us: AtomicU64,
}

/// Weight of a new sample: the estimate follows a change of load within
/// about eight turns, and one slow request moves it by an eighth.
const NEW_SAMPLE: f64 = 1.0 / 8.0;

impl Admission {
    /// Records how long a turn was held.
    pub fn record(&self, held: std::time::Duration) {
        let sample = held.as_micros().min(u128::from(u64::MAX)) as u64;
        let _ = self.hold_us.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
            Some(match old {
                0 => sample.max(1),
                old => ((old as f64) * (1.0 - NEW_SAMPLE) + (sample as f64) * NEW_SAMPLE).max(1.0) as u64,
            })
        });
        crate::metrics::global().turn_seconds.set(self.hold().unwrap_or_default().as_secs_f64());
    }

    /// The mean time a turn is held, once one has been.
    pub fn hold(&self) -> Option<std::time::Duration> {
        match self.hold_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(std::time::Duration::from_micros(us)),
        }
    }

    /// When a request behind `ahead` waiting others, for one of `slots`
    /// turns, would be answered: its wait and its own run, from now.
    pub fn predicted(&self, ahead: usize, slots: usize) -> Option<(std::time::Duration, std::time::Duration)> {
        let hold = self.hold()?;
        let wait = hold.mul_f64((ahead + 1) as f64 / slots.max(1) as f64);
        Some((wait, wait + hold))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Admission;

    #[test]
    fn no_prediction_before_the_first_turn_then_a_mean_that_follows_the_load() {
        let a = Admission::default();
        assert_eq!(a.predicted(10, 4), None, "nothing is refused before anything was measured");
        a.record(Duration::from_millis(100));
        assert_eq!(a.hold(), Some(Duration::from_millis(100)));
        // 7 waiting ahead, 4 turns: the 8th in line gets a turn after 2 holds.
        assert_eq!(a.predicted(7, 4), Some((Duration::from_millis(200), Duration::from_millis(300))));
        for _ in 0..40 {
            a.record(Duration::from_millis(20));
        }
        let hold = a.hold().unwrap();
        assert!(hold > Duration::from_millis(20) && hold < Duration::from_millis(21), "the mean follows the new load: {hold:?}");
    }
}
