//! [`MemoryLimits`]: the limits counted in this process, and the local half
//! of a fleet-wide [`Limits`].

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
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
    /// Woken whenever an attempt in flight ends.
    ended: Notify,
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
    /// The tickets of the attempts in flight, per key they are counted on:
    /// at most three entries per attempt in flight, gone when it ends.
    in_flight: HashMap<Key, BTreeSet<u64>>,
    next_ticket: u64,
}

impl Records {
    /// The failures recorded on `key`: its count less the attempts in flight.
    fn failures(&self, key: &Key, now: Instant) -> u32 {
        let open = self.in_flight.get(key).map_or(0, BTreeSet::len);
        let open = u32::try_from(open).unwrap_or(u32::MAX);
        self.failures.get(key, now).saturating_sub(open)
    }

    /// Whether an attempt counted on `key` before `ticket` is still in flight.
    fn ahead_in_flight(&self, key: &Key, ticket: u64) -> bool {
        self.in_flight
            .get(key)
            .is_some_and(|t| t.range(..ticket).next().is_some())
    }
}

/// An attempt's place among those in flight; dropping it (the attempt
/// ended, or was abandoned) takes it out and wakes those that wait.
pub(super) struct Ticket {
    limits: Arc<MemoryLimits>,
    id: u64,
    keys: Keys,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("id", &self.id).finish()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut r = self.limits.records();
        for key in self.keys.iter() {
            if let Some(t) = r.in_flight.get_mut(&key) {
                t.remove(&self.id);
                if t.is_empty() {
                    r.in_flight.remove(&key);
                }
            }
        }
        drop(r);
        self.limits.ended.notify_waiters();
    }
}

/// The keys an attempt is counted on: the prefix, and for a login the
/// account and the pair.
#[derive(Clone, Copy)]
struct Keys {
    net: ClientNet,
    account: Option<(AccountId, PairId)>,
}

impl Keys {
    fn of(net: ClientNet, account: Option<AccountId>) -> Self {
        Keys {
            net,
            account: account.map(|a| (a, a.pair(&net))),
        }
    }

    fn iter(self) -> impl Iterator<Item = Key> {
        std::iter::once(Key::Net(self.net)).chain(
            self.account
                .into_iter()
                .flat_map(|(a, p)| [Key::Account(a), Key::Pair(p)]),
        )
    }
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
            in_flight: HashMap::new(),
            next_ticket: 0,
        };
        Arc::new(MemoryLimits {
            config: RwLock::new(Arc::new(config)),
            conns: Mutex::default(),
            records: Mutex::new(records),
            ended: Notify::new(),
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

    /// Keys with attempts in flight now.
    #[cfg(test)]
    pub(super) fn in_flight_keys(&self) -> usize {
        self.records().in_flight.len()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an attempt in, in this process.
    pub fn local_attempt(self: &Arc<Self>, ip: IpAddr, account: Option<&str>) -> Attempt {
        let config = self.current();
        let net = config.net(ip);
        let account = account.map(AccountId::of);
        let keys = Keys::of(net, account);
        let now = Instant::now();
        let mut r = self.records();
        let id = r.next_ticket;
        r.next_ticket += 1;
        let mut prior = Prior::default();
        let mut ahead = Prior::default();
        for key in keys.iter() {
            let n = r.failures.bump(key, now);
            let t = r.in_flight.entry(key).or_default();
            let open = u32::try_from(t.len()).unwrap_or(u32::MAX);
            t.insert(id);
            match key {
                Key::Net(_) => (prior.net, ahead.net) = (n, open),
                Key::Account(_) => (prior.account, ahead.account) = (n, open),
                Key::Pair(p) => {
                    (prior.pair, ahead.pair) = (n, open);
                    prior.known_good = r.known_good.get(&p, now) > 0;
                }
            }
        }
        drop(r);
        Attempt {
            penalty: config.attempt_penalty(prior),
            net,
            account,
            remote: false,
            started: now,
            prior,
            local_prior: prior,
            local_ahead: ahead,
            remote_other: Prior::default(),
            upfront: config.attempt_penalty(prior.less(ahead)),
            ticket: Some(Ticket {
                limits: self.clone(),
                id,
                keys,
            }),
        }
    }

    /// How many attempts this process counted in after `attempt`.
    pub fn started_since(&self, attempt: &Attempt) -> u32 {
        let Some(ticket) = &attempt.ticket else {
            return 0;
        };
        let next = self.records().next_ticket;
        u32::try_from(next.saturating_sub(ticket.id + 1)).unwrap_or(u32::MAX)
    }

    /// Waits for the attempts ahead of `attempt` in this process (see
    /// [`Limits::settle`]); what is left of its penalty then.
    pub async fn local_settle(&self, attempt: &Attempt) -> Duration {
        let deadline = attempt.started + attempt.penalty;
        let Some(ticket) = &attempt.ticket else {
            return deadline.saturating_duration_since(Instant::now());
        };
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let now = Instant::now();
            if let Some(local_now) = self.failures_once_ahead_ended(ticket, now) {
                return attempt.settled(&self.current(), local_now, now);
            }
            if now >= deadline {
                return Duration::ZERO;
            }
            tokio::select! {
                () = &mut ended => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The failures recorded on the ticket's keys, once no attempt counted
    /// before it on any of them is in flight.
    fn failures_once_ahead_ended(&self, ticket: &Ticket, now: Instant) -> Option<Prior> {
        let r = self.records();
        if ticket.keys.iter().any(|k| r.ahead_in_flight(&k, ticket.id)) {
            return None;
        }
        let mut f = Prior::default();
        for key in ticket.keys.iter() {
            let n = r.failures(&key, now);
            match key {
                Key::Net(_) => f.net = n,
                Key::Account(_) => f.account = n,
                Key::Pair(p) => {
                    f.pair = n;
                    f.known_good = r.known_good.get(&p, now) > 0;
                }
            }
        }
        Some(f)
    }

    /// Records how an attempt ended, in this process, and takes it out of
    /// the attempts in flight.
    pub fn local_finish(&self, attempt: &mut Attempt, verdict: Verdict) {
        self.record_end(attempt, verdict);
        drop(attempt.ticket.take());
    }

    fn record_end(&self, attempt: &Attempt, verdict: Verdict) {
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

    async fn settle(&self, attempt: &Attempt) -> Duration {
        self.local_settle(attempt).await
    }

    async fn finish(&self, mut attempt: Attempt, verdict: Verdict) {
        self.local_finish(&mut attempt, verdict)
    }
}
