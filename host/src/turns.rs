//! Turns to run a chain (`[server] max_inflight` of them), shared fairly
//! between the routes that wait for one, and refused at once to a request
//! that could not finish within its deadline anyway, instead of letting it
//! wait the whole deadline for a 504.
//!
//! **Fair between routes.** Each route waits in a line of its own, first come
//! first served within it; a freed turn goes to the waiting route that has
//! had the least turn time (each turn charged its route's mean hold). Routes
//! differ tenfold (a classification against a YOLO run, or a fusion that runs
//! YOLO twice), and deadlines differ too (5 s for the light routes of the
//! default config, 10-15 s for the heavy ones). With one line for all, a
//! 10-minute soak of every route at 2x capacity filled the queue up to what
//! the 15 s routes could wait, and the 5 s routes were refused 100 % of the
//! time (70,283 of 70,506 classifications). With a line per route, each
//! backlogged route gets an equal share of the turn time: a light route gets
//! ten answers where a heavy one gets one, and no route starves another.
//!
//! **Admitted by predicted wait.** A new request's wait is found by playing
//! the queue forward: each turn in flight frees its slot when its route's
//! mean hold is over (counted from when it started), and the slots go to the
//! lines as above until it is the newcomer's turn. Requests that arrive later
//! on a route with less turn time can still overtake it, which the learnt
//! lateness of its route (how much longer its real waits were than
//! predicted) makes up for. Its own run is predicted as its route's mean
//! hold plus twice their mean deviation; wait and run must fit in four
//! fifths of the deadline left (`HEADROOM`). When its turn comes, what is
//! left must cover the mean plus four deviations (`COVER`), as TCP sets its
//! retransmission timeout from the round trip's mean and deviation: a run
//! that overruns is a 504, a run not started is a 503 with `Retry-After`
//! and its turn goes to the next waiter.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::RouteLabel;

/// The share of its deadline left a waiting request's predicted answer must
/// fit in. Under steady overload the queue grows until predictions reach the
/// bound, so the requests let in are those predicted just inside it, and any
/// error makes them late: a 30-minute soak bounded at the deadline itself got
/// 504s on 18 % of the classifications it let in.
const HEADROOM: f64 = 0.8;

/// The bounds of the learnt lateness: a wait may be predicted at most 4
/// times longer (one bad stretch cannot refuse everything for long), and never
/// shorter than half what the holds say.
const LATENESS: (u64, u64) = (500, 4000);

/// How many mean deviations past its route's mean hold a run must have left
/// to be started (TCP's factor). With two, a 30-minute soak on a machine where
/// a run took 0.3 s alone or 0.5 s beside another started 73 light-route runs
/// that then passed their deadline; with four, 14 in the same soak.
const COVER: u64 = 4;

/// Weight of a new sample: the estimate follows a change of load within
/// about eight turns, and one slow request moves it by an eighth.
const NEW_SAMPLE: f64 = 1.0 / 8.0;

/// Why a request got no turn; its words are what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// `max_waiting` requests wait already.
    #[error("{waiting} requests are waiting already; retry shortly")]
    Full { waiting: usize },
    /// Its predicted wait and run would pass the bound its deadline leaves.
    #[error("the predicted wait ({} ms) and run would end in {} ms, past the {} ms this deadline allows", .wait.as_millis(), .answer.as_millis(), .bound.as_millis())]
    WouldMiss { wait: Duration, answer: Duration, bound: Duration },
    /// Its deadline passed while it waited, or what was left of it when its
    /// turn came could not cover its route's run (mean plus `COVER`
    /// deviations): it was never started.
    #[error("it waited {} ms for a turn, and the {} ms left of its deadline could not cover a run of about {} ms; it was not started", .waited.as_millis(), .left.as_millis(), .run.as_millis())]
    NotInTime { waited: Duration, left: Duration, run: Duration },
}

/// A route's figures: its mean hold and their mean deviation, and how much
/// longer than predicted its waits have lately been (thousandths), all in
/// microseconds.
#[derive(Clone, Copy)]
struct Figures {
    hold_us: u64,
    spread_us: u64,
    late_permille: u64,
}

pub struct Turns {
    queue: Mutex<Queue>,
    by_route: Mutex<HashMap<String, Figures>>,
    /// The mean hold of all turns, in microseconds, for a route that has had
    /// none yet; 0 until the first ends.
    hold_us: AtomicU64,
}

/// Who holds a turn and who waits for one.
struct Queue {
    free: usize,
    /// Keys of turns and waiters, in the order they came.
    next: u64,
    waiting: usize,
    /// Each turn held: since when, and its route's mean hold then.
    running: HashMap<u64, (Instant, u64)>,
    lines: HashMap<String, Line>,
}

/// A route's waiters, and the turn time it has had (its mean hold per turn).
#[derive(Default)]
struct Line {
    waiters: VecDeque<Waiter>,
    served_us: u64,
}

struct Waiter {
    key: u64,
    hold_us: u64,
    grant: oneshot::Sender<Turn>,
}

/// A turn being held: dropping it records how long it was held and hands
/// the slot to the next in line.
pub struct Turn {
    turns: Arc<Turns>,
    key: u64,
    route: String,
    since: Instant,
    /// False for a turn granted to a waiter that had gone: it was never held.
    live: bool,
}

impl Turn {
    /// Hands the turn on without using it: nothing ran, so no hold is recorded.
    fn unused(mut self) {
        self.live = false;
        self.turns.pass_on(self.key);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if self.live {
            self.turns.record(&self.route, self.since.elapsed());
            self.turns.pass_on(self.key);
        }
    }
}

impl Turns {
    pub fn new(slots: usize) -> Arc<Self> {
        let queue = Queue { free: slots, next: 0, waiting: 0, running: HashMap::new(), lines: HashMap::new() };
        Arc::new(Turns { queue: Mutex::new(queue), by_route: Default::default(), hold_us: AtomicU64::new(0) })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn figures(&self, route: &str) -> Figures {
        let own = self.by_route.lock().unwrap_or_else(|p| p.into_inner()).get(route).copied();
        own.unwrap_or(Figures { hold_us: self.hold_us.load(Ordering::Acquire), spread_us: 0, late_permille: 1000 })
    }

    /// What must be left of a deadline to start a run of `route`: its mean
    /// hold plus `COVER` deviations.
    fn cover(&self, route: &str) -> Duration {
        let f = self.figures(route);
        Duration::from_micros(f.hold_us + COVER * f.spread_us)
    }

    /// A turn for a request of `route` with `left` of its deadline: at once
    /// when one is free and nobody waits, after its place in the lines
    /// otherwise; refused at once when `max_waiting` wait already or when it
    /// is predicted not to finish in time.
    pub async fn take(self: &Arc<Self>, route: &str, left: Duration, max_waiting: usize) -> Result<Turn, Refused> {
        let figures = self.figures(route);
        // Its own run, as predicted: the route's mean hold plus twice the deviation.
        let run = Duration::from_micros(figures.hold_us + 2 * figures.spread_us);
        let now = Instant::now();
        let (grant, key, predicted) = {
            let mut q = self.queue();
            if q.free > 0 && q.waiting == 0 {
                q.free -= 1;
                q.lines.entry(route.to_string()).or_default().served_us += figures.hold_us;
                return Ok(self.grant(&mut q, route, figures.hold_us, now));
            }
            if q.waiting >= max_waiting {
                return Err(Refused::Full { waiting: q.waiting });
            }
            let predicted = (self.hold_us.load(Ordering::Acquire) > 0).then(|| Duration::from_micros(q.wait_us(route, figures.hold_us, now)));
            if let Some(p) = predicted {
                let wait = p.mul_f64(figures.late_permille as f64 / 1000.0);
                let answer = wait + run;
                let bound = left.mul_f64(HEADROOM);
                if answer > bound {
                    return Err(Refused::WouldMiss { wait, answer, bound });
                }
            }
            q.backlog(route);
            let (tx, rx) = oneshot::channel();
            let key = q.next;
            q.next += 1;
            q.waiting += 1;
            q.lines.get_mut(route).expect("backlog made the line").waiters.push_back(Waiter { key, hold_us: figures.hold_us, grant: tx });
            (rx, key, predicted)
        };
        // However the wait ends, the waiter leaves its line (a no-op once granted).
        let _leave = Leave { turns: self, route, key };
        let not_in_time = |left_now, cover| Refused::NotInTime { waited: now.elapsed(), left: left_now, run: cover };
        match tokio::time::timeout(left, grant).await {
            Ok(Ok(turn)) => {
                if let Some(predicted) = predicted {
                    self.learn(route, predicted, now.elapsed());
                }
                // A run that cannot end in time would only hold the cores for
                // a 504: the turn goes to the next waiter instead. Judged by
                // the route's figures now, not when it came: the first
                // requests after a start come before any turn was measured.
                let cover = self.cover(route);
                let left_now = left.saturating_sub(now.elapsed());
                if left_now < cover {
                    turn.unused();
                    return Err(not_in_time(left_now, cover));
                }
                Ok(turn)
            }
            // The sender is only dropped with the line: never while a waiter is in it.
            Ok(Err(_)) | Err(_) => Err(not_in_time(Duration::ZERO, self.cover(route))),
        }
    }

    /// A turn of `route`, held from `since`.
    fn grant(self: &Arc<Self>, q: &mut Queue, route: &str, hold_us: u64, since: Instant) -> Turn {
        let key = q.next;
        q.next += 1;
        q.running.insert(key, (since, hold_us));
        Turn { turns: self.clone(), key, route: route.to_string(), since, live: true }
    }

    /// Turn `key` ended: its slot goes to the next in line.
    fn pass_on(self: &Arc<Self>, key: u64) {
        let mut q = self.queue();
        q.running.remove(&key);
        q.free += 1;
        while let Some((route, waiter)) = q.pick() {
            q.free -= 1;
            let turn = self.grant(&mut q, &route, waiter.hold_us, Instant::now());
            match waiter.grant.send(turn) {
                Ok(()) => return,
                // Its waiter gave up between being picked and now: the next one.
                Err(mut unused) => {
                    unused.live = false;
                    q.running.remove(&unused.key);
                    q.free += 1;
                }
            }
        }
    }

    /// Records how long a turn of `route` was held.
    fn record(&self, route: &str, held: Duration) {
        let sample = micros(held);
        let _ = self.hold_us.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| Some(mean(old, sample)));
        let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        match by_route.get_mut(route) {
            Some(f) => {
                // Not `mean`: a deviation of 0 is a value, not "none yet".
                f.spread_us = ((f.spread_us as f64) * (1.0 - NEW_SAMPLE) + (sample.abs_diff(f.hold_us) as f64) * NEW_SAMPLE) as u64;
                f.hold_us = mean(f.hold_us, sample);
            }
            None => drop(by_route.insert(route.to_string(), Figures { hold_us: sample.max(1), spread_us: 0, late_permille: 1000 })),
        }
        drop(by_route);
        crate::metrics::global().turn_seconds.set(Duration::from_micros(self.hold_us.load(Ordering::Acquire)).as_secs_f64());
    }

    /// A waiter of `route` got its turn after `waited`, against `predicted`
    /// by the holds: how late its route's waits are (waits predicted under a
    /// millisecond say nothing and are left out).
    fn learn(&self, route: &str, predicted: Duration, waited: Duration) {
        if predicted < Duration::from_millis(1) {
            return;
        }
        let sample = (((waited.as_secs_f64() / predicted.as_secs_f64()) * 1000.0) as u64).clamp(LATENESS.0, LATENESS.1);
        let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = by_route.get_mut(route) {
            f.late_permille = mean(f.late_permille, sample);
            crate::metrics::global().admission_lateness.get_or_create(&RouteLabel { route: route.to_string() }).set(f.late_permille as f64 / 1000.0);
        }
    }
}

/// Takes a waiter out of its line when its wait ends without a turn.
struct Leave<'a> {
    turns: &'a Turns,
    route: &'a str,
    key: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut q = self.turns.queue();
        let Some(line) = q.lines.get_mut(self.route) else { return };
        if let Some(at) = line.waiters.iter().position(|w| w.key == self.key) {
            line.waiters.remove(at);
            q.waiting -= 1;
        }
    }
}

impl Queue {
    /// `route` is about to wait: a line that had nobody waiting starts level
    /// with the least served of those waiting, so a route cannot bank turn
    /// time while it is idle and then take every turn.
    fn backlog(&mut self, route: &str) {
        let least = self.lines.values().filter(|l| !l.waiters.is_empty()).map(|l| l.served_us).min();
        let line = self.lines.entry(route.to_string()).or_default();
        if line.waiters.is_empty() {
            line.served_us = line.served_us.max(least.unwrap_or(0));
        }
    }

    /// The next waiter to get a turn: the head of the line with the least
    /// turn time (the earliest to come on a tie), charged its hold.
    fn pick(&mut self) -> Option<(String, Waiter)> {
        let (route, _) = self
            .lines
            .iter()
            .filter_map(|(route, l)| l.waiters.front().map(|w| (route, (l.served_us, w.key))))
            .min_by_key(|(_, order)| *order)?;
        let route = route.clone();
        let line = self.lines.get_mut(&route).expect("picked from the map");
        let waiter = line.waiters.pop_front().expect("a line with a head");
        line.served_us += waiter.hold_us;
        self.waiting -= 1;
        Some((route, waiter))
    }

    /// How long until a newcomer of `route` (with `hold_us`) would get a
    /// turn, in microseconds: the turns in flight end when their holds are
    /// over, and the slots go to the lines as `pick` gives them.
    fn wait_us(&self, route: &str, hold_us: u64, now: Instant) -> u64 {
        const NEWCOMER: u64 = u64::MAX;
        let mut free: BinaryHeap<Reverse<u64>> = self
            .running
            .values()
            .map(|(since, hold)| Reverse(hold.saturating_sub(micros(now.saturating_duration_since(*since)))))
            .chain(std::iter::repeat_n(Reverse(0), self.free))
            .collect();
        let mut lines: Vec<(u64, VecDeque<(u64, u64)>)> = self
            .lines
            .iter()
            .filter(|(r, l)| !l.waiters.is_empty() && r.as_str() != route)
            .map(|(_, l)| (l.served_us, l.waiters.iter().map(|w| (w.key, w.hold_us)).collect()))
            .collect();
        // The newcomer's line, as `backlog` would make it.
        let least = lines.iter().map(|l| l.0).min();
        let own = match self.lines.get(route) {
            Some(l) if !l.waiters.is_empty() => (l.served_us, l.waiters.iter().map(|w| (w.key, w.hold_us)).collect()),
            Some(l) => (l.served_us.max(least.unwrap_or(0)), VecDeque::new()),
            None => (least.unwrap_or(0), VecDeque::new()),
        };
        lines.push(own);
        lines.last_mut().expect("just pushed").1.push_back((NEWCOMER, hold_us));
        while let Some(Reverse(at)) = free.pop() {
            let Some(next) = lines.iter_mut().filter(|l| !l.1.is_empty()).min_by_key(|l| (l.0, l.1.front().map(|w| w.0))) else { break };
            let (key, hold) = next.1.pop_front().expect("not empty");
            next.0 += hold;
            if key == NEWCOMER {
                return at;
            }
            free.push(Reverse(at + hold));
        }
        0
    }
}

fn mean(old: u64, sample: u64) -> u64 {
    match old {
        0 => sample.max(1),
        old => ((old as f64) * (1.0 - NEW_SAMPLE) + (sample as f64) * NEW_SAMPLE).max(1.0) as u64,
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{Refused, Turns};

    fn record(t: &Turns, route: &str, ms: u64, times: usize) {
        for _ in 0..times {
            t.record(route, Duration::from_millis(ms));
        }
    }

    /// Waiters of `route`, each a task that takes a turn and reports the order it got one in.
    fn waiters(t: &Arc<Turns>, route: &'static str, n: usize, order: &Arc<std::sync::Mutex<Vec<&'static str>>>) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let (t, order) = (t.clone(), order.clone());
                tokio::spawn(async move {
                    let turn = t.take(route, Duration::from_secs(3600), 100).await.unwrap();
                    order.lock().unwrap().push(route);
                    drop(turn);
                })
            })
            .collect()
    }

    // Real time, kept short: the host's tokio has no paused clock (no `test-util`).
    #[tokio::test]
    async fn nothing_is_refused_before_a_turn_was_measured_and_a_waiter_past_its_deadline_leaves() {
        let t = Turns::new(2);
        let (a, b) = (t.take("/a", Duration::from_secs(1), 8).await.unwrap(), t.take("/a", Duration::from_secs(1), 8).await.unwrap());
        // Nothing measured yet: a waiter is let in whatever its deadline.
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.take("/a", Duration::from_millis(300), 8).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(t.queue().waiting, 1);
        assert!(matches!(waiting.await.unwrap(), Err(Refused::NotInTime { .. })));
        assert_eq!(t.queue().waiting, 0, "a waiter whose deadline passed left its line");
        drop((a, b));
        assert_eq!(t.queue().free, 2);
        assert!(t.queue().running.is_empty());
        assert!(t.figures("/a").hold_us > 0, "the two turns were recorded");
    }

    #[tokio::test]
    async fn a_turn_that_comes_too_late_to_finish_is_passed_on_unused() {
        let t = Turns::new(1);
        record(&t, "/a", 100, 20);
        let held = t.take("/a", Duration::from_secs(1), 8).await.unwrap();
        // Predicted: 100 ms wait + 100 ms run, within 4/5 of 300 ms: let in.
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.take("/a", Duration::from_millis(300), 8).await.map(drop) }
        });
        // The turn ahead takes 250 ms instead: 50 ms left cannot cover a run
        // (100 ms, and more with that turn measured).
        tokio::time::sleep(Duration::from_millis(250)).await;
        drop(held);
        let Err(Refused::NotInTime { waited, left, run }) = waiting.await.unwrap() else { panic!("started too late to finish") };
        assert!(waited >= Duration::from_millis(250) && left < run && run > Duration::from_millis(100), "{waited:?} {left:?} {run:?}");
        let q = t.queue();
        assert_eq!((q.free, q.waiting), (1, 0), "the slot is free again");
        drop(q);
        // Only the 250 ms turn was recorded (100 -> 118.75 ms), not the unused one.
        assert!(t.figures("/a").hold_us > 110_000, "{}", t.figures("/a").hold_us);
    }

    #[tokio::test]
    async fn a_waiter_let_in_before_any_turn_was_measured_is_held_to_what_was_measured_since() {
        let t = Turns::new(1);
        let held = t.take("/a", Duration::from_secs(1), 8).await.unwrap();
        // Nothing measured yet: let in, whatever it will need.
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.take("/a", Duration::from_millis(300), 8).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Meanwhile turns of the route were measured at 200 ms each.
        record(&t, "/a", 200, 20);
        tokio::time::sleep(Duration::from_millis(130)).await;
        drop(held);
        let Err(Refused::NotInTime { left, run, .. }) = waiting.await.unwrap() else { panic!("started with 150 ms left for a 200 ms run") };
        assert!(left < run && run >= Duration::from_millis(190), "{left:?} {run:?}");
    }

    #[tokio::test]
    async fn a_turn_must_have_left_the_mean_hold_plus_four_deviations_to_start() {
        let t = Turns::new(1);
        // Holds of 100 and 300 ms, the last 300: mean 207, deviation 107.
        for i in 0..200 {
            t.record("/a", Duration::from_millis(if i % 2 == 0 { 100 } else { 300 }));
        }
        // The turn ahead is another route's, so its hold leaves /a's figures as they are.
        let held = t.take("/b", Duration::from_secs(1), 8).await.unwrap();
        // Predicted: 207 ms wait + a 420 ms run, within 4/5 of 1 s: let in.
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.take("/a", Duration::from_millis(1000), 8).await.map(drop) }
        });
        // The turn ahead takes 500 ms: the 500 ms left would cover the mean
        // plus two deviations (420 ms) but not plus four (633 ms).
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(held);
        let Err(Refused::NotInTime { left, run, .. }) = waiting.await.unwrap() else { panic!("started with too little left") };
        assert!(left < run && (620..650).contains(&run.as_millis()), "{left:?} {run:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_freed_turn_goes_to_the_route_with_the_least_turn_time() {
        let t = Turns::new(1);
        // A heavy route (1 s a turn) and a light one (100 ms).
        record(&t, "/heavy", 1000, 1);
        record(&t, "/light", 100, 1);
        let first = t.take("/heavy", Duration::from_secs(3600), 100).await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = waiters(&t, "/heavy", 2, &order);
        tokio::task::yield_now().await;
        tasks.extend(waiters(&t, "/light", 12, &order));
        tokio::task::yield_now().await;
        assert_eq!(t.queue().waiting, 14);
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        // The heavy line came first (a tie broken by arrival), then ten light
        // turns make up the heavy one's second, then the heavy line again.
        let order = order.lock().unwrap().clone();
        assert_eq!(order[0], "/heavy", "{order:?}");
        assert_eq!(&order[1..11], &["/light"; 10], "{order:?}");
        assert_eq!(order[11], "/heavy", "{order:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_predicted_wait_plays_the_lines_forward_and_refuses_what_would_be_late() {
        let t = Turns::new(1);
        record(&t, "/heavy", 1000, 20);
        record(&t, "/light", 100, 20);
        let _held = t.take("/heavy", Duration::from_secs(3600), 100).await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let _heavy = waiters(&t, "/heavy", 3, &order);
        tokio::task::yield_now().await;
        // One heavy turn in flight (1 s) and three heavy waiters. A light
        // request starts level with the heavy line's turn time, so it gets
        // the second slot to free (the first goes to the earlier arrival on
        // the tie): after 2 s, not after all four heavy turns.
        let wait_of = |route: &str, hold_us: u64| t.queue().wait_us(route, hold_us, Instant::now());
        let light = wait_of("/light", 100_000);
        assert!((1_990_000..=2_000_000).contains(&light), "{light}");
        // A heavy one waits for the three heavy waiters ahead of it.
        let heavy = wait_of("/heavy", 1_000_000);
        assert!((3_990_000..=4_000_000).contains(&heavy), "{heavy}");
        // 2 s wait + 0.1 s run do not fit in 4/5 of 2.5 s.
        let Err(Refused::WouldMiss { wait, answer, bound }) = t.take("/light", Duration::from_millis(2500), 100).await else { panic!("admitted") };
        assert_eq!((answer - wait, bound), (Duration::from_millis(100), Duration::from_secs(2)));
        assert_eq!(t.queue().waiting, 3, "a refused request never waited");
        assert!(matches!(t.take("/x", Duration::from_secs(1), 3).await, Err(Refused::Full { waiting: 3 })));
    }

    #[tokio::test]
    async fn waits_longer_than_predicted_make_that_routes_predictions_longer() {
        let t = Turns::new(1);
        record(&t, "/a", 10, 1);
        for _ in 0..30 {
            t.learn("/a", Duration::from_millis(10), Duration::from_millis(40));
        }
        let late = t.figures("/a").late_permille as f64 / 1000.0;
        assert!((3.5..=4.0).contains(&late), "four times later than the holds say, at most: {late}");
        assert_eq!(t.figures("/b").late_permille, 1000, "another route's predictions are its own");
    }

    #[test]
    fn a_route_whose_holds_vary_is_predicted_its_mean_plus_twice_their_deviation() {
        let t = Turns::new(1);
        for i in 0..200 {
            t.record("/shared", Duration::from_millis(if i % 2 == 0 { 100 } else { 300 }));
        }
        let f = t.figures("/shared");
        assert!((180_000..220_000).contains(&f.hold_us), "{}", f.hold_us);
        assert!((80_000..120_000).contains(&f.spread_us), "{}", f.spread_us);
    }
}
