//! The process's inference capacity: how many threads ONNX Runtime's one
//! shared intra-op pool has, and how many model runs may be under way at once
//! across every model (the gate below).
//!
//! Without the gate each model's workers would all run as soon as they have
//! work, so three busy models with two sessions each would put six runs on
//! the pool at once: more runs than cores only adds switching and memory (each
//! run holds its activations), it finishes nothing sooner.

use std::sync::{Condvar, Mutex, OnceLock};

/// `[server] inference_threads` and `max_model_runs`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Threads of the shared intra-op pool, the calling run's own thread included.
    pub threads: usize,
    /// Model runs under way at once, all models together.
    pub max_runs: usize,
}

impl Default for PoolSettings {
    /// A lone run may use every core; as many runs as cores may share them.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PoolSettings { threads: cores, max_runs: cores }
    }
}

/// A counting semaphore on model runs. Blocking: only model workers (plain
/// threads, never async ones) enter it.
pub struct Gate {
    state: Mutex<GateState>,
    freed: Condvar,
}

struct GateState {
    running: usize,
    limit: usize,
}

/// Held for one run; leaving frees the place.
pub struct Permit<'a> {
    gate: &'a Gate,
    alone: bool,
}

impl Permit<'_> {
    /// No other model run was under way when this one entered: it may have
    /// every core (`model`: a session on the shared pool).
    pub fn alone(&self) -> bool {
        self.alone
    }
}

impl Gate {
    pub fn new(limit: usize) -> Self {
        Gate { state: Mutex::new(GateState { running: 0, limit: limit.max(1) }), freed: Condvar::new() }
    }

    /// Waits for a free place.
    pub fn enter(&self) -> Permit<'_> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.running >= s.limit {
            s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        let alone = s.running == 0;
        s.running += 1;
        Permit { gate: self, alone }
    }

    /// Changes the limit; runs already under way finish.
    pub fn set_limit(&self, limit: usize) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).limit = limit.max(1);
        self.freed.notify_all();
    }

    pub fn limit(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).limit
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.gate.state.lock().unwrap_or_else(|p| p.into_inner()).running -= 1;
        self.gate.freed.notify_one();
    }
}

/// The gate every model's workers share.
pub fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| Gate::new(PoolSettings::default().max_runs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};

    #[test]
    fn a_full_gate_holds_the_next_run_until_a_place_frees() {
        let gate = Arc::new(Gate::new(1));
        let first = gate.enter();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let _p = gate.enter();
                tx.send(()).unwrap();
            })
        };
        assert!(rx.recv_timeout(std::time::Duration::from_millis(50)).is_err(), "entered a full gate");
        drop(first);
        rx.recv().unwrap();
        waiter.join().unwrap();
    }

    #[test]
    fn no_more_runs_than_the_limit_are_ever_inside() {
        let gate = Arc::new(Gate::new(2));
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _p = gate.enter();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 2, "{} runs inside at once", most.load(Ordering::SeqCst));
    }

    #[test]
    fn a_run_is_alone_only_while_no_other_is_inside() {
        let gate = Gate::new(2);
        let first = gate.enter();
        assert!(first.alone());
        let second = gate.enter();
        assert!(!second.alone(), "entered beside a run");
        drop(first);
        assert!(!gate.enter().alone(), "the second is still inside");
        drop(second);
        assert!(gate.enter().alone());
    }

    #[test]
    fn raising_the_limit_lets_waiting_runs_in() {
        let gate = Arc::new(Gate::new(1));
        let _held = gate.enter();
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || drop(gate.enter()))
        };
        gate.set_limit(2);
        waiter.join().unwrap();
        assert_eq!(gate.limit(), 2);
    }
}
