//! The password-hashing pool: a fixed number of slots in which password
//! checks run, on threads of their own, shared by every tenant's directory,
//! with the cost caps that stored hashes must keep to.
//!
//! The binary makes one [`HashPool`] from its configuration and hands each
//! tenant's directory a [`Hashing`] handle for that tenant. These rules keep
//! hashing from being turned against the service:
//! - at most `slots` checks run at once, on `slots` threads of the pool's
//!   own (started at the first check), so memory for argon2 is bounded by
//!   `slots` times [`CostLimits::argon2_max_memory_kib`]: what the
//!   allocator keeps after a check stays in those threads' arenas, not in
//!   those of every thread of tokio's blocking pool;
//! - those threads run `nice` steps below the rest of the process (Linux),
//!   so a flood of logins hashing on every core slows logins down, not the
//!   sessions already in: the runtime's workers win the CPU when they need
//!   it;
//! - a login waits at most `wait` for a slot, then fails with an
//!   [`AuthError`] (POP3 `-ERR [SYS/TEMP]`) instead of queueing without end;
//! - one tenant holds at most `tenant_slots` slots at once (by default all
//!   but one), so a flood of logins to one tenant always leaves a slot that
//!   the other tenants' logins reach.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::AuthError;
use crate::scheme::CostLimits;

/// The pool's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashPoolConfig {
    /// Password checks that run at once.
    pub slots: usize,
    /// The most slots one tenant holds at once; `None`: `slots - 1` (at
    /// least 1).
    pub tenant_slots: Option<usize>,
    /// How long a login waits for a slot before it fails with [SYS/TEMP].
    pub wait: Duration,
    /// What a stored hash may cost.
    pub limits: CostLimits,
    /// How many nice steps below the process the hashing threads run
    /// (0 to 19; 0: the same priority as the sessions). Linux only.
    pub nice: u8,
}

impl HashPoolConfig {
    /// The default `nice`: a hashing thread gets about a tenth of a core
    /// that a session's work also wants, and all of an idle one.
    pub const DEFAULT_NICE: u8 = 10;

    /// The default number of slots: one per CPU this process may use
    /// (cgroup quotas count), at least 2 and at most 8, so that the default
    /// argon2 cap (64 MiB) times the slots stays at 512 MiB or less.
    pub fn default_slots() -> usize {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8)
    }

    /// The slots one tenant may hold at once.
    pub fn tenant_share(&self) -> usize {
        let slots = self.slots.max(1);
        self.tenant_slots
            .unwrap_or(slots.saturating_sub(1))
            .clamp(1, slots)
    }
}

impl Default for HashPoolConfig {
    fn default() -> Self {
        HashPoolConfig {
            slots: HashPoolConfig::default_slots(),
            tenant_slots: None,
            wait: Duration::from_secs(5),
            limits: CostLimits::DEFAULT,
            nice: HashPoolConfig::DEFAULT_NICE,
        }
    }
}

/// The process's hashing slots.
pub struct HashPool {
    config: HashPoolConfig,
    slots: Arc<Semaphore>,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Checks waiting for their tenant's share or a slot.
    waiting: AtomicUsize,
    threads: Mutex<Threads>,
}

/// A password check, with the slot it holds, for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads and their queue. A job is queued only by a caller
/// holding a slot, so the queue never holds more than `slots` jobs.
struct Threads {
    queue: mpsc::Sender<Job>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    started: usize,
}

impl HashPool {
    pub fn new(config: HashPoolConfig) -> Arc<HashPool> {
        let config = HashPoolConfig {
            slots: config.slots.max(1),
            ..config
        };
        let (queue, jobs) = mpsc::channel();
        Arc::new(HashPool {
            slots: Arc::new(Semaphore::new(config.slots)),
            config,
            tenants: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            threads: Mutex::new(Threads {
                queue,
                jobs: Arc::new(Mutex::new(jobs)),
                started: 0,
            }),
        })
    }

    /// Hashing threads running now (they start with the first check, and
    /// end when the pool is dropped).
    pub fn threads(&self) -> usize {
        self.lock_threads().started
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, Threads> {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` for a hashing thread, starting the threads that are
    /// not running yet. Fails only when not one thread can be started.
    fn submit(&self, job: Job) -> Result<(), AuthError> {
        let mut threads = self.lock_threads();
        let mut failed = None;
        while threads.started < self.config.slots {
            let jobs = threads.jobs.clone();
            let nice = self.config.nice;
            let spawned = std::thread::Builder::new()
                .name(format!("popgate-hash-{}", threads.started))
                .spawn(move || hashing_thread(&jobs, nice));
            match spawned {
                Ok(_) => threads.started += 1,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if threads.started == 0 {
            let e = failed.map_or_else(String::new, |e| e.to_string());
            return Err(AuthError(format!(
                "cannot start a password-hashing thread: {e}"
            )));
        }
        threads
            .queue
            .send(job)
            .map_err(|_| AuthError("password hashing threads gone".into()))
    }

    pub fn config(&self) -> &HashPoolConfig {
        &self.config
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Slots in use now.
    pub fn busy(&self) -> usize {
        self.config.slots.saturating_sub(self.available())
    }

    /// Password checks waiting now for a slot or for their tenant's share.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The handle a tenant's directory hashes through. Handles of one
    /// tenant name share that tenant's share of the slots.
    pub fn for_tenant(self: &Arc<Self>, tenant: &str) -> Hashing {
        let share = self
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.tenant_share())))
            .clone();
        Hashing {
            pool: self.clone(),
            share,
            tenant: tenant.into(),
        }
    }
}

impl fmt::Debug for HashPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashPool")
            .field("config", &self.config)
            .field("available", &self.available())
            .finish_non_exhaustive()
    }
}

/// One tenant's way into the [`HashPool`].
#[derive(Clone)]
pub struct Hashing {
    pool: Arc<HashPool>,
    share: Arc<Semaphore>,
    tenant: Arc<str>,
}

impl Hashing {
    /// A pool of its own with the default settings: for tools and tests.
    /// A server passes every directory a handle of its one shared pool.
    pub fn standalone() -> Hashing {
        HashPool::new(HashPoolConfig::default()).for_tenant("")
    }

    /// What a stored hash may cost.
    pub fn limits(&self) -> &CostLimits {
        &self.pool.config.limits
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn pool(&self) -> &Arc<HashPool> {
        &self.pool
    }

    /// Runs `f` (a password check, and the file access that comes with it)
    /// in a slot, on one of the pool's hashing threads. Waits at most the
    /// pool's `wait` for the tenant's share and a slot, then fails. The
    /// slot is held until `f` returns, even when the caller stops waiting.
    /// A panic in `f` fails this check only.
    pub async fn run<T, F>(&self, f: F) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let wait = self.pool.config.wait;
        // Counted as waiting until the permits are had, the wait times out,
        // or the caller gives up (the future is dropped).
        let queued = Queued::enter(&self.pool.waiting);
        let acquire = async {
            let share = self.share.clone().acquire_owned().await?;
            let slot = self.pool.slots.clone().acquire_owned().await?;
            Ok::<_, tokio::sync::AcquireError>((share, slot))
        };
        let acquired = tokio::time::timeout(wait, acquire).await;
        drop(queued);
        let permits = match acquired {
            Ok(Ok(permits)) => permits,
            Ok(Err(_)) => return Err(AuthError("password hashing pool closed".into())),
            Err(_) => {
                return Err(AuthError(format!(
                    "no password-hashing slot free within {wait:?} ({} slots, all busy or \
                     this tenant's share of {} in use)",
                    self.pool.config.slots,
                    self.pool.config.tenant_share()
                )));
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pool.submit(Box::new(move || {
            let out = f();
            drop(permits);
            let _ = tx.send(out);
        }))?;
        rx.await
            .map_err(|_| AuthError("password check aborted: it panicked".into()))
    }
}

/// A hashing thread: lowers its priority, then runs jobs until the pool is
/// dropped.
fn hashing_thread(jobs: &Mutex<mpsc::Receiver<Job>>, nice: u8) {
    lower_priority(nice);
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return;
        };
        // The slot and the caller's channel are dropped while unwinding.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// Puts the calling thread `steps` nice values below where it is (at most
/// 19). Linux keeps a nice value per thread; elsewhere `setpriority` would
/// lower the whole process, so this does nothing there. Raising one's own
/// nice value needs no privilege; should it fail anyway, the thread keeps
/// the process's priority.
fn lower_priority(steps: u8) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if steps > 0
        && let Ok(now) = rustix::process::getpriority_process(None)
    {
        let _ = rustix::process::setpriority_process(None, (now + i32::from(steps)).min(19));
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = steps;
}

/// One entry of [`HashPool::waiting`], left when dropped.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Queued(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Hashing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hashing")
            .field("tenant", &self.tenant)
            .field("pool", &self.pool)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_share_leaves_a_slot() {
        let share = |slots, tenant_slots| {
            HashPoolConfig {
                slots,
                tenant_slots,
                ..HashPoolConfig::default()
            }
            .tenant_share()
        };
        assert_eq!(share(1, None), 1);
        assert_eq!(share(2, None), 1);
        assert_eq!(share(8, None), 7);
        assert_eq!(share(8, Some(4)), 4);
        assert_eq!(share(8, Some(0)), 1);
        assert_eq!(share(2, Some(5)), 2);
        assert!((2..=8).contains(&HashPoolConfig::default_slots()));
    }

    #[tokio::test]
    async fn busy_slots_and_waiting_checks_are_counted() {
        let pool = HashPool::new(HashPoolConfig {
            slots: 1,
            wait: Duration::from_secs(10),
            ..HashPoolConfig::default()
        });
        let (a, b) = (pool.for_tenant("a"), pool.for_tenant("b"));
        assert_eq!((pool.busy(), pool.waiting()), (0, 0));
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn(async move { a.run(move || hold_rx.recv().is_ok()).await });
        while pool.busy() == 0 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn(async move { b.run(|| true).await });
        while pool.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!((pool.busy(), pool.waiting()), (1, 1));
        // A waiting check whose caller gives up is no longer counted.
        second.abort();
        let _ = second.await;
        assert_eq!(pool.waiting(), 0);
        hold_tx.send(()).unwrap();
        assert!(first.await.unwrap().unwrap());
        assert_eq!((pool.busy(), pool.waiting()), (0, 0));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn checks_run_on_the_pools_own_threads_below_the_process() {
        let pool = HashPool::new(HashPoolConfig {
            slots: 3,
            nice: 5,
            ..HashPoolConfig::default()
        });
        assert_eq!(pool.threads(), 0);
        let hashing = pool.for_tenant("a");
        let (name, nice) = hashing
            .run(|| {
                let nice = rustix::process::getpriority_process(None).unwrap();
                (std::thread::current().name().map(str::to_owned), nice)
            })
            .await
            .unwrap();
        assert_eq!(pool.threads(), 3);
        assert!(name.unwrap().starts_with("popgate-hash-"));
        // This (test) thread keeps its priority; the hashing thread is 5
        // steps below it.
        let ours = rustix::process::getpriority_process(None).unwrap();
        assert_eq!(nice, (ours + 5).min(19));
        // Many checks later, still the same three threads.
        for _ in 0..20 {
            hashing.run(|| ()).await.unwrap();
        }
        assert_eq!(pool.threads(), 3);
    }

    #[tokio::test]
    async fn a_panicking_check_fails_alone_and_frees_its_slot() {
        let pool = HashPool::new(HashPoolConfig {
            slots: 1,
            ..HashPoolConfig::default()
        });
        let hashing = pool.for_tenant("a");
        let err = hashing
            .run(|| -> bool { panic!("a broken check") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        assert_eq!(pool.busy(), 0);
        assert!(hashing.run(|| true).await.unwrap());
    }
}
