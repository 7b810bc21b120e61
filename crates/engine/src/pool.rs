//! A small fork-join pool for the forward pass: persistent workers that spin briefly between
//! jobs, and tasks claimed from an atomic counter.
//!
//! Why not rayon: a decode step is ~100 short parallel regions (a few microseconds of work each
//! on two cores), and rayon's sleep/wake path cost a quarter of decode time (perf: `__schedule`,
//! `sched_yield`, `finish_task_switch` at 25% of samples for SmolLM2 decode). Workers here keep
//! spinning for a short while after each job, so the next region starts without a wake-up, and
//! only park when the engine is idle.
//!
//! A task that panics does not take the pool down: every thread catches its tasks' panics, the
//! submitter waits for all workers to finish with the job (they borrow its closure), and only
//! then re-raises the first panic to its caller. The pool stays usable.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// How long an idle worker spins before parking (iterations of `spin_loop`, ~tens of µs).
const SPIN: u32 = 20_000;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    epoch: AtomicU64,
    job: UnsafeCell<Option<Job>>,
    next: AtomicUsize,
    n_tasks: AtomicUsize,
    finished: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
    /// The first panic a worker caught in the current job.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

// SAFETY: `job` is written only by the submitting thread while it holds `submit` and before it
// publishes a new epoch (Release); workers read it after observing that epoch (Acquire) and the
// submitter does not return (so the closure stays alive) until every worker has finished.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// The pool.
pub struct Pool {
    shared: Arc<Shared>,
    workers: usize,
    submit: Mutex<()>,
}

impl Pool {
    /// A pool with `threads` threads of compute in total (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            next: AtomicUsize::new(0),
            n_tasks: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            panic: Mutex::new(None),
        });
        let workers = threads.max(1) - 1;
        for i in 0..workers {
            let s = shared.clone();
            std::thread::Builder::new().name(format!("shovel-compute-{i}")).spawn(move || worker(s)).expect("spawning a compute thread");
        }
        Pool { shared, workers, submit: Mutex::new(()) }
    }

    /// Threads of compute, the caller included.
    pub fn threads(&self) -> usize {
        self.workers + 1
    }

    /// Runs `f(0..n)` across the pool and returns when all calls have finished.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if n == 0 {
            return;
        }
        if self.workers == 0 || n == 1 {
            (0..n).for_each(f);
            return;
        }
        let _g = self.submit.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: see `Shared`; the lifetime is erased only for the duration of this call.
        unsafe {
            *s.job.get() = Some(std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f));
        }
        s.next.store(0, Ordering::Relaxed);
        s.n_tasks.store(n, Ordering::Relaxed);
        s.finished.store(0, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        {
            let _l = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let own = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            let i = s.next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            f(i);
        }));
        // Even after a panic here: the workers may still be running `f`, which borrows the
        // caller's stack; this call must not return or unwind before they are done.
        while s.finished.load(Ordering::Acquire) < self.workers {
            std::hint::spin_loop();
        }
        // SAFETY: every worker is done with the job.
        unsafe {
            *s.job.get() = None;
        }
        let theirs = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Err(p) = own {
            std::panic::resume_unwind(p);
        }
        if let Some(p) = theirs {
            std::panic::resume_unwind(p);
        }
    }

    /// Splits `data` into chunks of `chunk` elements and runs `f(index, chunk)` on each in
    /// parallel.
    pub fn chunks<T: Send>(&self, data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
        let chunk = chunk.max(1);
        let n = data.len().div_ceil(chunk);
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.run(n, &|i| {
            let start = i * chunk;
            let end = (start + chunk).min(len);
            let p = base;
            // SAFETY: chunks are disjoint ranges of `data`, which outlives `run`.
            let c = unsafe { std::slice::from_raw_parts_mut(p.0.add(start), end - start) };
            f(i, c)
        });
    }
}

struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: used only to hand disjoint sub-slices to pool threads.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.epoch.fetch_add(1, Ordering::Release);
        let _l = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.wake.notify_all();
    }
}

fn worker(s: Arc<Shared>) {
    // Epoch 0 is the pool's birth: a job published before this thread first runs is still seen.
    let mut seen = 0;
    loop {
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
            } else {
                let g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
                if s.epoch.load(Ordering::Acquire) == seen {
                    drop(s.wake.wait(g).unwrap_or_else(|e| e.into_inner()));
                }
            }
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: the epoch we observed was published after the job was written.
        let job = unsafe { *s.job.get() };
        if let Some(job) = job {
            let n = s.n_tasks.load(Ordering::Relaxed);
            loop {
                let i = s.next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                // SAFETY: the submitter keeps the closure alive until we report finished.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*job)(i) }));
                if let Err(p) = r {
                    s.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(p);
                }
            }
        }
        s.finished.fetch_add(1, Ordering::Release);
    }
}

static GLOBAL: OnceLock<Pool> = OnceLock::new();

/// Sets the number of compute threads (before first use; later calls are ignored). Returns
/// whether this call configured the pool.
pub fn init(threads: usize) -> bool {
    GLOBAL.set(Pool::new(threads)).is_ok()
}

/// The process-wide pool: as many threads as cores unless [`init`] said otherwise.
pub fn global() -> &'static Pool {
    GLOBAL.get_or_init(|| Pool::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_and_chunks_are_disjoint() {
        let pool = Pool::new(3);
        for round in 0..200 {
            let n = round % 17 + 1;
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
        let mut v = vec![0usize; 1001];
        pool.chunks(&mut v, 10, |ci, c| c.iter_mut().enumerate().for_each(|(j, x)| *x += ci * 10 + j));
        assert!(v.iter().enumerate().all(|(i, &x)| x == i));
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_stays_usable() {
        let pool = Pool::new(2);
        // Which thread runs the panicking task varies: try it at every place, many times.
        for round in 0..64 {
            let bad = round % 8;
            let ran = AtomicUsize::new(0);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.run(8, &|i| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    assert!(i != bad, "task {i} fails");
                })
            }));
            let msg = r.unwrap_err().downcast::<String>().map(|s| *s).unwrap_or_default();
            assert_eq!(msg, format!("task {bad} fails"));
            // Every task ran: the others were not abandoned.
            assert_eq!(ran.load(Ordering::Relaxed), 8);
            let hits: Vec<AtomicUsize> = (0..8).map(|_| AtomicUsize::new(0)).collect();
            pool.run(8, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn concurrent_submitters_are_serialised() {
        let pool = Arc::new(Pool::new(2));
        let total = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let (p, t) = (pool.clone(), total.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        p.run(8, &|_| {
                            t.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(total.load(Ordering::Relaxed), 3 * 100 * 8);
    }
}
