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
/// The estimates are exponentially weighted means of how long a turn is held
/// (the chain, models included), one sample per turn: one per route, and one
/// of all turns together. Routes differ tenfold (a classification against a
/// YOLO run, or a fusion that runs YOLO twice), so a mean over all of them
/// mispredicts a mix: a soak of every route at once got 504s on the light
/// ones, whose queue ahead was full of heavy ones. So the work waiting is
/// kept as the sum of each waiting request's own route's hold: `slots` turns
/// work through it side by side, so a request gets a turn after about
/// `(work ahead + one mean hold) / slots` (the mean hold: what is left of the
/// turns in flight), and then needs its own route's hold.
///
/// That wait is then scaled by how long recent waits really were against
/// their prediction: whatever else takes the cores (Open Inference Protocol
/// calls and video frames, which hold no turn; another process) makes turns
/// free up later than the holds say, and the ratio learns it.
///
/// A route's own run is predicted as its mean hold plus twice the mean
/// deviation of its holds (as TCP sets its retransmission timeout from the
/// round trip's mean and deviation): a route whose model is shared with
/// other callers varies widely, and a request admitted on the mean alone
/// ran past its deadline about as often as not when the mean was near it.
pub struct Admission {
    /// The mean hold of all turns, in microseconds; 0 until the first ends.
    hold_us: AtomicU64,
    /// The mean hold per route and its mean deviation, in microseconds.
    by_route: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// The sum of the predicted holds of the requests waiting now, in microseconds.
    waiting_us: AtomicU64,
    /// Mean of (real wait / predicted wait), in thousandths.
    late_permille: AtomicU64,
}

impl Default for Admission {
    fn default() -> Self {
        Admission { hold_us: AtomicU64::new(0), by_route: Default::default(), waiting_us: AtomicU64::new(0), late_permille: AtomicU64::new(1000) }
    }
}

/// The bounds of the learnt lateness: a wait may be predicted at most 4
/// times longer (one bad stretch cannot refuse everything for long), and never
/// shorter than half what the holds say.
const LATENESS: (u64, u64) = (500, 4000);

/// Weight of a new sample: the estimate follows a change of load within
/// about eight turns, and one slow request moves it by an eighth.
const NEW_SAMPLE: f64 = 1.0 / 8.0;

fn mean(old: u64, sample: u64) -> u64 {
    match old {
        0 => sample.max(1),
        old => ((old as f64) * (1.0 - NEW_SAMPLE) + (sample as f64) * NEW_SAMPLE).max(1.0) as u64,
    }
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// A request's place among those waiting, its predicted hold counted in
/// the work waiting until it is dropped (it got its turn, or gave up).
pub struct Waiting<'a> {
    admission: &'a Admission,
    hold_us: u64,
    /// Its route's mean deviation of holds, in microseconds.
    spread_us: u64,
    since: std::time::Instant,
    /// The wait the holds predicted (before the lateness), once there was a hold.
    predicted: Option<std::time::Duration>,
}

impl Waiting<'_> {
    /// It got its turn: how late that was against the holds' prediction
    /// (waits of under a millisecond say nothing and are left out).
    pub fn served(self) {
        let waited = self.since.elapsed();
        self.served_after(waited);
    }

    fn served_after(self, waited: std::time::Duration) {
        if let Some(predicted) = self.predicted.filter(|p| *p >= std::time::Duration::from_millis(1)) {
            let ratio = ((waited.as_secs_f64() / predicted.as_secs_f64()) * 1000.0) as u64;
            let sample = ratio.clamp(LATENESS.0, LATENESS.1);
            let _ = self.admission.late_permille.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| Some(mean(old, sample)));
            crate::metrics::global().admission_lateness.set(self.admission.lateness());
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.admission.waiting_us.fetch_sub(self.hold_us, Ordering::AcqRel);
    }
}

impl Admission {
    /// Records how long a turn of `route` was held.
    pub fn record(&self, route: &str, held: std::time::Duration) {
        let sample = micros(held);
        let _ = self.hold_us.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| Some(mean(old, sample)));
        {
            let mut by_route = self.by_route.lock().expect("admission lock");
            match by_route.get_mut(route) {
                Some((hold, spread)) => {
                    // Not `mean`: a deviation of 0 is a value, not "none yet".
                    *spread = ((*spread as f64) * (1.0 - NEW_SAMPLE) + (sample.abs_diff(*hold) as f64) * NEW_SAMPLE) as u64;
                    *hold = mean(*hold, sample);
                }
                None => drop(by_route.insert(route.to_string(), (sample.max(1), 0))),
            }
        }
        crate::metrics::global().turn_seconds.set(self.hold().unwrap_or_default().as_secs_f64());
    }

    /// The mean time a turn is held, once one has been.
    pub fn hold(&self) -> Option<std::time::Duration> {
        match self.hold_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(std::time::Duration::from_micros(us)),
        }
    }

    /// The mean hold of `route`'s turns; the mean of all turns while it has had none.
    pub fn hold_of(&self, route: &str) -> Option<std::time::Duration> {
        let own = self.by_route.lock().expect("admission lock").get(route).map(|(hold, _)| *hold);
        own.map(std::time::Duration::from_micros).or_else(|| self.hold())
    }

    /// The mean deviation of `route`'s holds (zero while it has had none).
    pub fn spread_of(&self, route: &str) -> std::time::Duration {
        std::time::Duration::from_micros(self.by_route.lock().expect("admission lock").get(route).map_or(0, |(_, spread)| *spread))
    }

    /// A request of `route` starts waiting for one of `slots` turns.
    pub fn wait(&self, route: &str, slots: usize) -> Waiting<'_> {
        // One look at the route's figures: its hold and their deviation.
        let own = self.by_route.lock().expect("admission lock").get(route).copied();
        let (hold_us, spread_us) = own.unwrap_or((self.hold().map_or(0, micros), 0));
        let ahead_us = self.waiting_us.fetch_add(hold_us, Ordering::AcqRel);
        // The wait the holds alone predict: the work ahead and what is left
        // of the turns in flight, worked through by `slots` turns side by side.
        let predicted = self.hold().map(|hold| std::time::Duration::from_micros(ahead_us + micros(hold)) / slots.max(1) as u32);
        Waiting { admission: self, hold_us, spread_us, since: std::time::Instant::now(), predicted }
    }

    /// How much longer than the holds predict waits have lately been (1.0: as predicted).
    pub fn lateness(&self) -> f64 {
        self.late_permille.load(Ordering::Acquire) as f64 / 1000.0
    }

    /// When `waiting` would be answered: its wait and its own run, from
    /// now. `None` before any turn was measured.
    pub fn predicted(&self, waiting: &Waiting<'_>) -> Option<(std::time::Duration, std::time::Duration)> {
        let wait = waiting.predicted?.mul_f64(self.lateness());
        Some((wait, wait + std::time::Duration::from_micros(waiting.hold_us + 2 * waiting.spread_us)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Admission;

    #[test]
    fn no_prediction_before_the_first_turn_then_a_mean_that_follows_the_load() {
        let a = Admission::default();
        assert_eq!(a.predicted(&a.wait("/a", 4)), None, "nothing is refused before anything was measured");
        a.record("/a", Duration::from_millis(100));
        assert_eq!(a.hold(), Some(Duration::from_millis(100)));
        // 7 waiting ahead, 4 turns: the 8th in line gets a turn after 2 holds.
        let ahead: Vec<_> = (0..7).map(|_| a.wait("/a", 4)).collect();
        assert_eq!(a.predicted(&a.wait("/a", 4)), Some((Duration::from_millis(200), Duration::from_millis(300))));
        drop(ahead);
        for _ in 0..40 {
            a.record("/a", Duration::from_millis(20));
        }
        let hold = a.hold().unwrap();
        assert!(hold > Duration::from_millis(20) && hold < Duration::from_millis(21), "the mean follows the new load: {hold:?}");
        assert_eq!(a.waiting_us.load(std::sync::atomic::Ordering::Acquire), 0, "those who stopped waiting left no work behind");
    }

    #[test]
    fn a_light_request_behind_heavy_ones_waits_for_their_work_and_then_its_own() {
        let a = Admission::default();
        // One heavy route (YOLO: 1 s a turn) and one light one (0.1 s).
        a.record("/heavy", Duration::from_secs(1));
        for _ in 0..20 {
            a.record("/light", Duration::from_millis(100));
        }
        assert_eq!(a.hold_of("/light"), Some(Duration::from_millis(100)));
        assert_eq!(a.hold_of("/never"), a.hold(), "a route with no turn yet: the mean of all");
        let heavy: Vec<_> = (0..4).map(|_| a.wait("/heavy", 2)).collect();
        let light = a.wait("/light", 2);
        let (wait, answer) = a.predicted(&light).unwrap();
        // (4 x 1 s of work ahead + one mean hold) over 2 turns, then 0.1 s.
        let mean = a.hold().unwrap();
        assert_eq!(wait, (Duration::from_secs(4) + mean) / 2);
        assert_eq!(answer, wait + Duration::from_millis(100));
        drop(heavy);
        let again = a.wait("/light", 2);
        assert_eq!(a.predicted(&again).unwrap().0, (Duration::from_millis(100) + mean) / 2, "only the light one is ahead now");
    }

    #[test]
    fn waits_longer_than_predicted_make_the_next_predictions_longer() {
        let a = Admission::default();
        a.record("/a", Duration::from_millis(10));
        assert_eq!(a.lateness(), 1.0);
        // Each waits 0 work ahead + 10 ms over 1 turn = 10 ms by the holds; really 40+ ms.
        for _ in 0..30 {
            a.wait("/a", 1).served_after(Duration::from_millis(40));
        }
        let late = a.lateness();
        assert!((3.5..=4.0).contains(&late), "four times later than the holds say, at most: {late}");
        let (wait, _) = a.predicted(&a.wait("/a", 1)).unwrap();
        assert!(wait >= Duration::from_millis(35), "{wait:?}");
    }

    #[test]
    fn a_route_whose_holds_vary_is_predicted_its_mean_plus_twice_their_deviation() {
        let a = Admission::default();
        for i in 0..200 {
            a.record("/shared", Duration::from_millis(if i % 2 == 0 { 100 } else { 300 }));
        }
        let (hold, spread) = (a.hold_of("/shared").unwrap(), a.spread_of("/shared"));
        assert!(hold > Duration::from_millis(180) && hold < Duration::from_millis(220), "{hold:?}");
        assert!(spread > Duration::from_millis(80) && spread < Duration::from_millis(120), "{spread:?}");
        let place = a.wait("/shared", 1);
        let (wait, answer) = a.predicted(&place).unwrap();
        assert_eq!(answer - wait, hold + 2 * spread);
    }
}
