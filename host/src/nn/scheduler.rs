//! Per-model scheduling: a bounded first-come, first-served queue in front of
//! the model's sessions, with dynamic batching (Triton's `dynamic_batching`).
//!
//! Each session is owned by one worker thread. A worker takes the oldest
//! request, then, when batching is on, waits up to `max_delay` for more
//! requests of the same shape and runs them as one batch, splitting the
//! outputs back, once the process-wide gate (`pool`) has a place for one more
//! run. Callers wait on a reply channel from blocking threads, never
//! from async workers. A full queue is refused at once (the host answers 429);
//! a request whose deadline passed while queued is dropped unrun (504).

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::tensor::{Tensor, TensorData};
use super::NnError;

/// How requests to one model are queued and batched (from the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most requests run as one batch; 1 turns batching off.
    pub max_batch: usize,
    /// How long the first request of a batch may wait for others.
    pub max_delay: Duration,
    /// Requests that may wait; one more is refused.
    pub queue_size: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { max_batch: 1, max_delay: Duration::ZERO, queue_size: 64 }
    }
}

pub type Inputs = Vec<(String, Tensor)>;
type Reply = Result<Inputs, NnError>;

struct Job {
    inputs: Inputs,
    deadline: Option<Instant>,
    enqueued: Instant,
    reply: SyncSender<Reply>,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// The queue shared by the callers and the workers of one model.
pub struct Scheduler {
    model: String,
    batching: Batching,
    queue: Mutex<Queue>,
    arrived: Condvar,
}

/// What a worker runs a batch with: the model's sessions, or a stand-in in tests.
pub trait Runner: Send + 'static {
    /// `alone`: no other model run in the process is under way (`pool::Permit::alone`).
    fn run(&mut self, inputs: &Inputs, alone: bool) -> Result<Inputs, NnError>;
}

impl Scheduler {
    pub fn new(model: &str, batching: Batching) -> Arc<Self> {
        Arc::new(Scheduler {
            model: model.to_string(),
            batching,
            queue: Mutex::new(Queue { jobs: VecDeque::new(), closed: false }),
            arrived: Condvar::new(),
        })
    }

    /// Starts one worker thread per runner; they stop after `close`.
    pub fn start<R: Runner>(self: &Arc<Self>, runners: Vec<R>) {
        for (i, runner) in runners.into_iter().enumerate() {
            let me = self.clone();
            std::thread::Builder::new()
                .name(format!("osprey-{}-{i}", self.model))
                .spawn(move || me.work(runner))
                .expect("spawn model worker");
        }
    }

    /// Queues a request and waits for its outputs. Blocking.
    pub fn submit(&self, inputs: Inputs, deadline: Option<Instant>) -> Reply {
        let (tx, rx): (SyncSender<Reply>, Receiver<Reply>) = sync_channel(1);
        {
            let mut q = self.lock();
            if q.jobs.len() >= self.batching.queue_size {
                return Err(NnError::QueueFull { model: self.model.clone(), size: self.batching.queue_size });
            }
            q.jobs.push_back(Job { inputs, deadline, enqueued: Instant::now(), reply: tx });
            crate::metrics::global().queue_depth(&self.model).set(q.jobs.len() as i64);
        }
        self.arrived.notify_one();
        rx.recv().unwrap_or_else(|_| Err(NnError::Runtime(format!("model '{}' was unloaded", self.model))))
    }

    /// Lets the workers finish what is queued, then stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn work<R: Runner>(&self, mut runner: R) {
        while let Some(batch) = self.next_batch() {
            self.run(&mut runner, batch);
        }
        // The model was unloaded (a reload replaced it): its session goes now,
        // so this is when its memory can go back to the system.
        drop(runner);
        super::runtime::trim_allocator();
    }

    /// The oldest job and, with batching on, the jobs of its shape that arrive
    /// within `max_delay`. `None` once closed and drained.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let mut q = self.lock();
        let first = loop {
            if let Some(job) = q.jobs.pop_front() {
                break job;
            }
            if q.closed {
                return None;
            }
            q = self.arrived.wait(q).unwrap_or_else(|p| p.into_inner());
        };
        let mut batch = vec![first];
        let until = Instant::now() + self.batching.max_delay;
        while batch.len() < self.batching.max_batch {
            match q.jobs.iter().position(|j| same_shape(&j.inputs, &batch[0].inputs)) {
                Some(i) => batch.push(q.jobs.remove(i).expect("position is in range")),
                None => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() || q.closed {
                        break;
                    }
                    q = self.arrived.wait_timeout(q, left).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        crate::metrics::global().queue_depth(&self.model).set(q.jobs.len() as i64);
        Some(batch)
    }

    fn run<R: Runner>(&self, runner: &mut R, batch: Vec<Job>) {
        // Wait for a place among all models' runs before looking at the
        // deadlines, so a request that ran out of time meanwhile is not run.
        let permit = super::pool::gate().enter();
        let alone = permit.alone();
        let now = Instant::now();
        let (live, late): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline.is_none_or(|d| d > now));
        for job in late {
            let _ = job.reply.send(Err(NnError::Deadline { model: self.model.clone() }));
        }
        if live.is_empty() {
            return;
        }
        let metrics = crate::metrics::global();
        for job in &live {
            metrics.queue_wait(&self.model).observe(now.duration_since(job.enqueued).as_secs_f64());
        }
        metrics.batch_size(&self.model).observe(live.len() as f64);
        let started = Instant::now();
        if live.len() == 1 {
            let job = live.into_iter().next().expect("one job");
            let _ = job.reply.send(runner.run(&job.inputs, alone));
        } else {
            let merged = merge(live.iter().map(|j| &j.inputs).collect());
            let split = runner.run(&merged, alone).and_then(|out| split(out, live.len()));
            match split {
                Ok(parts) => live.into_iter().zip(parts).for_each(|(j, p)| drop(j.reply.send(Ok(p)))),
                Err(e) => live.into_iter().for_each(|j| drop(j.reply.send(Err(e.clone())))),
            }
        }
        metrics.inference(&self.model).observe(started.elapsed().as_secs_f64());
    }
}

/// Two requests batch together when every input has batch 1 and the same
/// type and trailing dimensions.
fn same_shape(a: &Inputs, b: &Inputs) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, ta), (nb, tb))| {
            na == nb && ta.ty() == tb.ty() && ta.dims.first() == Some(&1) && ta.dims == tb.dims
        })
}

/// Stacks batch-1 inputs along the first dimension.
fn merge(parts: Vec<&Inputs>) -> Inputs {
    let n = parts.len() as u32;
    (0..parts[0].len())
        .map(|i| {
            let name = parts[0][i].0.clone();
            let mut dims = parts[0][i].1.dims.clone();
            dims[0] = n;
            let data = concat(parts.iter().map(|p| &p[i].1.data));
            (name, Tensor { dims, data })
        })
        .collect()
}

fn concat<'a>(mut items: impl Iterator<Item = &'a TensorData>) -> TensorData {
    let first = items.next().expect("at least one tensor").clone();
    items.fold(first, |mut acc, t| {
        match (&mut acc, t) {
            (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
            (TensorData::F64(a), TensorData::F64(b)) => a.extend_from_slice(b),
            (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
            (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
            (TensorData::I64(a), TensorData::I64(b)) => a.extend_from_slice(b),
            _ => unreachable!("same_shape checked the types"),
        }
        acc
    })
}

/// Cuts each output of a batch of `n` back into `n` batch-1 outputs.
fn split(outputs: Inputs, n: usize) -> Result<Vec<Inputs>, NnError> {
    let mut parts: Vec<Inputs> = (0..n).map(|_| Vec::with_capacity(outputs.len())).collect();
    for (name, t) in outputs {
        if t.dims.first().copied() != Some(n as u32) {
            return Err(NnError::Runtime(format!("batched output '{name}' has dimensions {:?}, not a batch of {n}", t.dims)));
        }
        let mut dims = t.dims.clone();
        dims[0] = 1;
        let each = t.data.len() / n;
        for (i, part) in parts.iter_mut().enumerate() {
            part.push((name.clone(), Tensor { dims: dims.clone(), data: t.data.slice(i * each, each) }));
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Doubles its one input and records the batch sizes it saw.
    struct Doubler(Arc<Mutex<Vec<u32>>>);

    impl Runner for Doubler {
        fn run(&mut self, inputs: &Inputs, _alone: bool) -> Result<Inputs, NnError> {
            let (name, t) = &inputs[0];
            self.0.lock().unwrap().push(t.dims[0]);
            let TensorData::F32(v) = &t.data else { panic!("f32") };
            Ok(vec![(format!("{name}-out"), Tensor { dims: t.dims.clone(), data: TensorData::F32(v.iter().map(|x| x * 2.0).collect()) })])
        }
    }

    fn one(v: f32) -> Inputs {
        vec![("x".into(), Tensor { dims: vec![1, 2], data: TensorData::F32(vec![v, v + 0.5]) })]
    }

    fn start(batching: Batching) -> (Arc<Scheduler>, Arc<Mutex<Vec<u32>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Scheduler::new("test", batching);
        s.start(vec![Doubler(seen.clone())]);
        (s, seen)
    }

    #[test]
    fn concurrent_requests_run_as_one_batch_and_get_their_own_rows() {
        let (s, seen) = start(Batching { max_batch: 8, max_delay: Duration::from_millis(200), queue_size: 16 });
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || (i, s.submit(one(i as f32), None).unwrap()))
            })
            .collect();
        for t in threads {
            let (i, out) = t.join().unwrap();
            assert_eq!(out[0].1.dims, vec![1, 2]);
            assert_eq!(out[0].1.data, TensorData::F32(vec![i as f32 * 2.0, i as f32 * 2.0 + 1.0]));
        }
        let sizes = seen.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<u32>(), 4);
        assert!(sizes.iter().any(|&n| n > 1), "no batch formed: {sizes:?}");
        s.close();
    }

    #[test]
    fn a_full_queue_is_refused_at_once() {
        // No worker: the queue only fills.
        let s = Scheduler::new("full", Batching { max_batch: 1, max_delay: Duration::ZERO, queue_size: 1 });
        let waiting = {
            let s = s.clone();
            std::thread::spawn(move || s.submit(one(1.0), None))
        };
        while s.lock().jobs.is_empty() {
            std::thread::yield_now();
        }
        assert!(matches!(s.submit(one(2.0), None), Err(NnError::QueueFull { size: 1, .. })));
        s.close();
        s.start(vec![Doubler(Arc::new(Mutex::new(Vec::new())))]);
        assert!(waiting.join().unwrap().is_ok());
    }

    #[test]
    fn a_request_past_its_deadline_is_not_run() {
        let (s, seen) = start(Batching::default());
        let past = Instant::now() - Duration::from_millis(1);
        assert!(matches!(s.submit(one(1.0), Some(past)), Err(NnError::Deadline { .. })));
        assert!(seen.lock().unwrap().is_empty());
        s.close();
    }
}
