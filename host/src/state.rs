//! The state every entry point shares (`Shared`): the snapshot being served
//! and the services that outlive it. It sits below the rooms that use it
//! (server, oip, video, reload) and imports none of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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
/// of all turns together (for a route that has had no turn yet). Routes
/// differ tenfold (a classification against a YOLO run, or a fusion that runs
/// YOLO twice), so every figure is the route's own.
///
/// A new request's wait is found by playing the queue forward: each turn in
/// flight frees its slot when its route's hold is over (counted from when it
/// started), and the requests waiting ahead, first come first served as the
/// semaphore serves them, each take the slot that frees first for their own
/// route's hold; the new one gets the next slot to free. An earlier version
/// kept only the sum of the work waiting and counted the turns in flight as
/// one mean hold: a 30-minute soak of every route at once then predicted a
/// classification behind two fusions (two YOLO runs each) a tenth of its real
/// wait, the learnt lateness (below) sat at its cap, and the light routes
/// were refused nearly always.
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
    by_route: Mutex<HashMap<String, (u64, u64)>>,
    /// The turns held and the requests waiting for one, now.
    queue: Mutex<Queue>,
    /// Mean of (real wait / predicted wait), in thousandths.
    late_permille: AtomicU64,
}

/// Who holds a turn and who waits for one, each with the hold its route
/// predicts (microseconds), keyed by the order they arrived in.
#[derive(Default)]
struct Queue {
    next: u64,
    running: HashMap<u64, (Instant, u64)>,
    waiting: BTreeMap<u64, u64>,
}

impl Queue {
    /// How long until a request arriving now gets one of `slots` turns, in
    /// microseconds: the turns in flight end when their holds are over, and
    /// those waiting take the first slot to free, in order.
    fn wait_us(&self, slots: usize, now: Instant) -> u64 {
        let slots = slots.max(1);
        let mut free: BinaryHeap<Reverse<u64>> = self
            .running
            .values()
            .map(|(since, hold)| Reverse(hold.saturating_sub(micros(now.saturating_duration_since(*since)))))
            .collect();
        // Free slots (fewer turns held than there are) free at once.
        while free.len() < slots {
            free.push(Reverse(0));
        }
        while free.len() > slots {
            free.pop();
        }
        for hold in self.waiting.values() {
            let Reverse(at) = free.pop().expect("at least one slot");
            free.push(Reverse(at + hold));
        }
        free.peek().map_or(0, |Reverse(at)| *at)
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission { hold_us: AtomicU64::new(0), by_route: Default::default(), queue: Default::default(), late_permille: AtomicU64::new(1000) }
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

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// A request's place among those waiting, in the queue until it is dropped
/// (it got its turn, or gave up).
pub struct Waiting<'a> {
    admission: &'a Admission,
    key: u64,
    hold_us: u64,
    /// Its route's mean deviation of holds, in microseconds.
    spread_us: u64,
    since: Instant,
    /// The wait the holds predicted (before the lateness), once there was a hold.
    predicted: Option<Duration>,
}

impl Waiting<'_> {
    /// It got its turn: how late that was against the holds' prediction
    /// (waits of under a millisecond say nothing and are left out).
    pub fn served(self) {
        let waited = self.since.elapsed();
        self.served_after(waited);
    }

    fn served_after(self, waited: Duration) {
        if let Some(predicted) = self.predicted.filter(|p| *p >= Duration::from_millis(1)) {
            let ratio = ((waited.as_secs_f64() / predicted.as_secs_f64()) * 1000.0) as u64;
            let sample = ratio.clamp(LATENESS.0, LATENESS.1);
            let _ = self.admission.late_permille.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| Some(mean(old, sample)));
            crate::metrics::global().admission_lateness.set(self.admission.lateness());
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.admission.queue().waiting.remove(&self.key);
    }
}

/// A turn being held: its route's hold is recorded when it is dropped.
pub struct Running<'a> {
    admission: &'a Admission,
    key: u64,
    route: &'a str,
    since: Instant,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.admission.queue().running.remove(&self.key);
        self.admission.record(self.route, self.since.elapsed());
    }
}

impl Admission {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mean hold of `route` and its mean deviation, in microseconds; the
    /// mean of all turns (and no deviation) while it has had none.
    fn figures(&self, route: &str) -> (u64, u64) {
        let own = self.by_route.lock().unwrap_or_else(|p| p.into_inner()).get(route).copied();
        own.unwrap_or((self.hold_us.load(Ordering::Acquire), 0))
    }

    /// Records how long a turn of `route` was held.
    pub fn record(&self, route: &str, held: Duration) {
        let sample = micros(held);
        let _ = self.hold_us.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| Some(mean(old, sample)));
        {
            let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
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

    /// A request of `route` got a turn: it counts as in flight until dropped,
    /// and its hold is recorded then.
    pub fn start<'a>(&'a self, route: &'a str) -> Running<'a> {
        self.start_at(route, Instant::now())
    }

    fn start_at<'a>(&'a self, route: &'a str, since: Instant) -> Running<'a> {
        let (hold_us, _) = self.figures(route);
        let mut q = self.queue();
        let key = q.next;
        q.next += 1;
        q.running.insert(key, (since, hold_us));
        Running { admission: self, key, route, since }
    }

    /// The mean time a turn is held, once one has been.
    pub fn hold(&self) -> Option<Duration> {
        match self.hold_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The mean hold of `route`'s turns; the mean of all turns while it has had none.
    pub fn hold_of(&self, route: &str) -> Option<Duration> {
        match self.figures(route).0 {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The mean deviation of `route`'s holds (zero while it has had none).
    pub fn spread_of(&self, route: &str) -> Duration {
        Duration::from_micros(self.figures(route).1)
    }

    /// A request of `route` starts waiting for one of `slots` turns.
    pub fn wait(&self, route: &str, slots: usize) -> Waiting<'_> {
        let (hold_us, spread_us) = self.figures(route);
        let now = Instant::now();
        let mut q = self.queue();
        let predicted = self.hold().map(|_| Duration::from_micros(q.wait_us(slots, now)));
        let key = q.next;
        q.next += 1;
        q.waiting.insert(key, hold_us);
        Waiting { admission: self, key, hold_us, spread_us, since: now, predicted }
    }

    /// How much longer than the holds predict waits have lately been (1.0: as predicted).
    pub fn lateness(&self) -> f64 {
        self.late_permille.load(Ordering::Acquire) as f64 / 1000.0
    }

    /// When `waiting` would be answered: its wait and its own run, from
    /// now. `None` before any turn was measured.
    pub fn predicted(&self, waiting: &Waiting<'_>) -> Option<(Duration, Duration)> {
        let wait = waiting.predicted?.mul_f64(self.lateness());
        Some((wait, wait + Duration::from_micros(waiting.hold_us + 2 * waiting.spread_us)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Admission;

    #[test]
    fn no_prediction_before_the_first_turn_then_a_mean_that_follows_the_load() {
        let a = Admission::default();
        assert_eq!(a.predicted(&a.wait("/a", 4)), None, "nothing is refused before anything was measured");
        a.record("/a", Duration::from_millis(100));
        assert_eq!(a.hold(), Some(Duration::from_millis(100)));
        // 7 waiting ahead, 4 turns free: 4 of them run at once, 3 after the
        // first hold, and the 8th in line takes the fourth slot then.
        let ahead: Vec<_> = (0..7).map(|_| a.wait("/a", 4)).collect();
        assert_eq!(a.predicted(&a.wait("/a", 4)), Some((Duration::from_millis(100), Duration::from_millis(200))));
        drop(ahead);
        for _ in 0..40 {
            a.record("/a", Duration::from_millis(20));
        }
        let hold = a.hold().unwrap();
        assert!(hold > Duration::from_millis(20) && hold < Duration::from_millis(21), "the mean follows the new load: {hold:?}");
        assert!(a.queue().waiting.is_empty(), "those who stopped waiting left no work behind");
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
        // Two heavy ones at once, two more after them, then the light one's 0.1 s.
        assert_eq!(wait, Duration::from_secs(2));
        assert_eq!(answer, wait + Duration::from_millis(100));
        drop(heavy);
        let again = a.wait("/light", 2);
        assert_eq!(a.predicted(&again).unwrap().0, Duration::ZERO, "only the light one is ahead now, and a slot is free");
    }

    #[test]
    fn waits_longer_than_predicted_make_the_next_predictions_longer() {
        let a = Admission::default();
        a.record("/a", Duration::from_millis(10));
        assert_eq!(a.lateness(), 1.0);
        // Each waits for the one turn in flight: 10 ms by the holds; really 40 ms.
        let _held = a.start("/a");
        for _ in 0..30 {
            a.wait("/a", 1).served_after(Duration::from_millis(40));
        }
        let late = a.lateness();
        assert!((3.5..=4.0).contains(&late), "four times later than the holds say, at most: {late}");
        let (wait, _) = a.predicted(&a.wait("/a", 1)).unwrap();
        assert!(wait >= Duration::from_millis(30), "{wait:?}");
    }

    #[test]
    fn turns_in_flight_free_their_slots_when_their_own_holds_are_over() {
        let a = Admission::default();
        // Fusion runs YOLO twice (0.8 s); classification is light (60 ms) and
        // far more frequent, so the mean of all turns is light too.
        a.record("/fusion", Duration::from_millis(800));
        for _ in 0..40 {
            a.record("/classify", Duration::from_millis(60));
        }
        assert!(a.hold().unwrap() < Duration::from_millis(70));
        let now = Instant::now();
        let _f1 = a.start_at("/fusion", now - Duration::from_millis(100));
        let _f2 = a.start_at("/fusion", now - Duration::from_millis(300));
        let (wait, answer) = a.predicted(&a.wait("/classify", 2)).unwrap();
        // The fusion that started first frees its slot in 0.5 s.
        assert!(wait > Duration::from_millis(495) && wait <= Duration::from_millis(500), "{wait:?}");
        assert_eq!(answer, wait + Duration::from_millis(60));
        // A turn that has run past its hold is counted as about to end.
        let _late = a.start_at("/classify", now - Duration::from_millis(200));
        let (wait, _) = a.predicted(&a.wait("/classify", 3)).unwrap();
        assert_eq!(wait, Duration::ZERO);
        drop((_f1, _f2, _late));
        assert!(a.queue().running.is_empty());
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
