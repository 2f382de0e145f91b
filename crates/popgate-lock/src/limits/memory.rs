//! [`MemoryLimits`]: the limits counted in this process, and the local half
//! of a fleet-wide [`Limits`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use tokio::time::Instant;

use super::generations::{Count, Generations};
use super::{
    AccountId, Attempt, ClientNet, ConnectionPermit, Limits, LimitsConfig, PairId, Prior, Rejected,
    Verdict,
};

/// Limits counted in this process only.
pub struct MemoryLimits {
    config: RwLock<Arc<LimitsConfig>>,
    conns: Mutex<Conns>,
    records: Mutex<Records>,
}

#[derive(Default)]
struct Conns {
    total: usize,
    /// One entry per prefix with open connections: bounded by `total`.
    per_net: HashMap<ClientNet, usize>,
}

struct MemoryPermit {
    limits: Arc<MemoryLimits>,
    net: ClientNet,
}

impl Drop for MemoryPermit {
    fn drop(&mut self) {
        let mut c = self.limits.conns.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_net.get_mut(&self.net) {
            *n -= 1;
            if *n == 0 {
                c.per_net.remove(&self.net);
            }
        }
    }
}

/// What a failure counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Net(ClientNet),
    Account(AccountId),
    Pair(PairId),
}

struct Records {
    failures: Generations<Key>,
    known_good: Generations<PairId>,
}

// What the bounds in the module documentation assume: a record (with
// hashbrown's control byte, at its 7/8 load) stays under 64 bytes.
const _: () = assert!(std::mem::size_of::<(Key, Count)>() <= 48);
const _: () = assert!(std::mem::size_of::<(PairId, Count)>() <= 48);
// Dropping a generation must be one free, not a walk over its entries.
const _: () = assert!(!std::mem::needs_drop::<(Key, Count)>());
const _: () = assert!(!std::mem::needs_drop::<(PairId, Count)>());

impl MemoryLimits {
    pub fn new(config: LimitsConfig) -> Arc<Self> {
        let records = Records {
            failures: Generations::new(config.max_failure_records, config.penalty_window),
            known_good: Generations::new(config.max_known_good, config.known_good_for),
        };
        Arc::new(MemoryLimits {
            config: RwLock::new(Arc::new(config)),
            conns: Mutex::default(),
            records: Mutex::new(records),
        })
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<LimitsConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration; see [`Limits::reconfigure`].
    pub fn reconfigure(&self, config: LimitsConfig) {
        {
            let mut r = self.records();
            r.failures
                .retune(config.max_failure_records, config.penalty_window);
            r.known_good
                .retune(config.max_known_good, config.known_good_for);
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// Counts a connection in against the process-wide cap, and against the
    /// per-prefix cap when `per_net` is set.
    pub fn connect_local(
        self: &Arc<Self>,
        ip: IpAddr,
        per_net: bool,
    ) -> Result<ConnectionPermit, Rejected> {
        let config = self.current();
        let net = config.net(ip);
        let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= config.max_connections {
            return Err(Rejected::Global);
        }
        let n = c.per_net.get(&net).copied().unwrap_or(0);
        if per_net && n >= config.max_connections_per_ip {
            return Err(Rejected::PerIp);
        }
        c.per_net.insert(net, n + 1);
        c.total += 1;
        Ok(ConnectionPermit::new(MemoryPermit {
            limits: self.clone(),
            net,
        }))
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Failure records held now (both generations).
    pub fn failure_records(&self) -> usize {
        self.records().failures.len()
    }

    /// Known-good marks held now (both generations).
    pub fn known_good_records(&self) -> usize {
        self.records().known_good.len()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an attempt in, in this process.
    pub fn local_attempt(&self, ip: IpAddr, account: Option<&str>) -> Attempt {
        let config = self.current();
        let net = config.net(ip);
        let account = account.map(AccountId::of);
        let now = Instant::now();
        let mut r = self.records();
        let mut prior = Prior {
            net: r.failures.bump(Key::Net(net), now),
            ..Prior::default()
        };
        if let Some(a) = account {
            let pair = a.pair(&net);
            prior.account = r.failures.bump(Key::Account(a), now);
            prior.pair = r.failures.bump(Key::Pair(pair), now);
            prior.known_good = r.known_good.get(&pair, now) > 0;
        }
        drop(r);
        Attempt {
            penalty: config.attempt_penalty(prior),
            net,
            account,
            remote: false,
        }
    }

    /// Records how an attempt ended, in this process.
    pub fn local_finish(&self, attempt: &Attempt, verdict: Verdict) {
        if verdict == Verdict::Failure {
            return;
        }
        let now = Instant::now();
        let mut r = self.records();
        r.failures.undo(&Key::Net(attempt.net), now);
        let Some(a) = attempt.account else {
            return;
        };
        r.failures.undo(&Key::Account(a), now);
        let pair = a.pair(&attempt.net);
        match verdict {
            Verdict::Success => {
                r.failures.remove(&Key::Pair(pair));
                let c = r.known_good.entry(pair, now);
                *c = Count { n: 1, at: now };
            }
            _ => r.failures.undo(&Key::Pair(pair), now),
        }
    }
}

#[async_trait::async_trait]
impl Limits for Arc<MemoryLimits> {
    fn config(&self) -> Arc<LimitsConfig> {
        self.current()
    }

    fn reconfigure(&self, config: LimitsConfig) {
        MemoryLimits::reconfigure(self, config)
    }

    async fn connect(&self, ip: IpAddr) -> Result<ConnectionPermit, Rejected> {
        self.connect_local(ip, true)
    }

    async fn attempt(&self, ip: IpAddr, account: Option<&str>) -> Attempt {
        self.local_attempt(ip, account)
    }

    async fn finish(&self, attempt: Attempt, verdict: Verdict) {
        self.local_finish(&attempt, verdict)
    }
}
