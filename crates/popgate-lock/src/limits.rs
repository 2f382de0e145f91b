//! Abuse limits: connection caps (per process, and per client address
//! prefix), the pre-login bounds a session enforces, and the failed-login
//! penalty, in the spirit of Dovecot's auth penalty and anvil and of
//! Weakforced: each recent failure doubles the delay before the next attempt
//! is even checked, up to a ceiling.
//!
//! # Clients are address prefixes
//!
//! One host with an IPv6 /64 has 2^64 addresses, so everything here counts
//! a client by its [`ClientNet`]: the address (after PROXY, IPv4-mapped IPv6
//! as IPv4) cut to [`LimitsConfig::ipv6_prefix`] bits (default /64) or
//! [`LimitsConfig::ipv4_prefix`] bits (default /32).
//!
//! # Login attempts
//!
//! [`Limits::attempt`] counts an attempt *before* it is checked, in one
//! atomic step: it increments the client prefix's counter, the account's
//! counter and the (account, prefix) pair's counter, and returns the penalty
//! computed from the values they had before. So N parallel attempts from
//! one prefix or against one account see 0, 1, ..., N-1 earlier attempts and
//! each pays its own, growing, delay: parallel connections do not outrun the
//! penalty. An attempt whose connection goes away before it is finished
//! stays counted, as a failure.
//!
//! [`Limits::finish`] then says how it went:
//!
//! - **success**: this attempt's own pre-counts on the prefix and account
//!   counters are taken back (nothing else on them is cleared: a success on
//!   the attacker's own mailbox does not reset his penalty for guessing
//!   others), the pair's record is cleared, and the pair is marked *known
//!   good* for [`LimitsConfig::known_good_for`] (30 days);
//! - **failure**: the pre-counts stay;
//! - **unchecked** (the directory could not answer): all pre-counts are
//!   taken back; the client learnt nothing.
//!
//! The penalty of an attempt whose pair is known good is that of the pair's
//! own recent failures only: a user logging in from where they usually do
//! is not slowed by an attacker's failures on their account from elsewhere,
//! nor by other users' failures behind the same NAT. Any other attempt pays
//! for `max(prefix failures, account failures)` ([`LimitsConfig::penalty_for`]).
//! A login name that is no valid login of a tenant counts on the prefix only
//! (the caller passes no account), so attacker-chosen names make no records.
//!
//! # Bounds
//!
//! Accounts are kept as fixed-length digests ([`AccountId`], 16 bytes of
//! SHA-256), never as the names clients send. The in-memory records live in
//! two generations each (see `Generations`): failure records in at most
//! [`LimitsConfig::max_failure_records`] entries (default 200,000; 48 bytes
//! and a control byte each, so about 13 MB of table at the bound; measured,
//! 400,000 failures for distinct names grow the RSS by 20 MB and no more),
//! known-good marks in at most [`LimitsConfig::max_known_good`] (default
//! 200,000, 40 bytes each; only successful logins make them). A failure
//! makes at most three records (prefix, account, pair), a name that is no
//! login one (the prefix's, shared by all its attempts). Every update is O(1):
//! when the current generation is full, or a record lifetime has passed
//! since it was started, the older generation is dropped whole (a single
//! free: entries have no destructors) and the current one becomes the older.
//! A lookup falls back to the older generation and moves what it touches
//! into the current one. Rotation by time only drops records that had
//! expired anyway; rotation because a generation is full (a flood) drops
//! the least recently touched half, which is the price of the bound.
//!
//! [`MemoryLimits`] counts within one process; `backend_redis::RedisLimits`
//! counts per-prefix connections and login attempts across the fleet.

use std::any::Any;
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// Connections open at once in this process.
    pub max_connections: usize,
    /// Connections open at once from one client prefix ([`ClientNet`]).
    pub max_connections_per_ip: usize,
    /// IPv4 clients are grouped by this many leading bits (1..=32).
    pub ipv4_prefix: u8,
    /// IPv6 clients are grouped by this many leading bits (1..=128).
    pub ipv6_prefix: u8,
    /// Delay after the first recent failure; doubles with each further one.
    pub penalty_base: Duration,
    /// The longest penalty delay.
    pub penalty_max: Duration,
    /// Failures older than this (since the record's last update) are forgotten.
    pub penalty_window: Duration,
    /// How long a successful (account, prefix) pair stays known good.
    pub known_good_for: Duration,
    /// At most this many failure records in memory (both generations).
    pub max_failure_records: usize,
    /// At most this many known-good marks in memory (both generations).
    pub max_known_good: usize,
    /// The whole AUTHORIZATION state, from the greeting to a verified
    /// login, must end within this time, whatever the client sends.
    pub login_timeout: Duration,
    /// Command lines (SASL lines included) a client may send before it has
    /// logged in; the next one closes the session.
    pub max_login_commands: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            max_connections_per_ip: 50,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            penalty_base: Duration::from_secs(2),
            penalty_max: Duration::from_secs(15),
            penalty_window: Duration::from_secs(15 * 60),
            known_good_for: Duration::from_secs(30 * 24 * 3600),
            max_failure_records: 200_000,
            max_known_good: 200_000,
            // Real clients log in within seconds; this leaves room for a
            // full penalty (15 s), a slow TLS handshake and a slow directory.
            login_timeout: Duration::from_secs(60),
            // fetchmail, Thunderbird and Outlook send fewer than 10
            // (CAPA, STLS, CAPA, AUTH and its lines, a retry or two).
            max_login_commands: 32,
        }
    }
}

impl LimitsConfig {
    /// The penalty for a number of recent failures.
    pub fn penalty_for(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(16);
        self.penalty_base
            .saturating_mul(factor)
            .min(self.penalty_max)
    }

    /// The penalty of an attempt, from what was counted before it.
    pub fn attempt_penalty(&self, prior: Prior) -> Duration {
        if prior.known_good {
            self.penalty_for(prior.pair)
        } else {
            self.penalty_for(prior.net.max(prior.account))
        }
    }

    /// The prefix `ip` is counted under.
    pub fn net(&self, ip: IpAddr) -> ClientNet {
        ClientNet::new(ip, self.ipv4_prefix, self.ipv6_prefix)
    }
}

/// What the counters held before an attempt was counted in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prior {
    /// Attempts from the client prefix not taken back: failures and attempts
    /// in flight.
    pub net: u32,
    /// The same for the account, from anywhere.
    pub account: u32,
    /// The same for the account from this prefix.
    pub pair: u32,
    /// Whether the account logged in from this prefix recently.
    pub known_good: bool,
}

/// A client address cut to its counted prefix: `192.0.2.7` (a /32 shows as
/// the address), `2001:db8:1:2::/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientNet {
    addr: IpAddr,
    len: u8,
}

impl ClientNet {
    /// `ip` (IPv4-mapped IPv6 as IPv4) cut to `ipv4_prefix` or `ipv6_prefix` bits.
    pub fn new(ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> Self {
        match canonical_ip(ip) {
            IpAddr::V4(a) => {
                let len = ipv4_prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                ClientNet {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = ipv6_prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                ClientNet {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    len,
                }
            }
        }
    }

    /// The first address of the prefix.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    fn is_host(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => self.len == 32,
            IpAddr::V6(_) => self.len == 128,
        }
    }
}

impl fmt::Display for ClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// An account as the limits know it: 16 bytes of the SHA-256 of its
/// lower-cased name. Fixed length whatever the name, and the same in every
/// replica (it names Redis keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountId([u8; 16]);

impl AccountId {
    pub fn of(account: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"popgate account\0");
        h.update(account.to_ascii_lowercase().as_bytes());
        AccountId(truncate(&h.finalize()))
    }

    /// The (account, prefix) pair.
    pub fn pair(&self, net: &ClientNet) -> PairId {
        let mut h = Sha256::new();
        h.update(b"popgate pair\0");
        h.update(self.0);
        match net.addr {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
        h.update([net.len]);
        PairId(truncate(&h.finalize()))
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

/// An (account, client prefix) pair: 16 bytes of SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PairId([u8; 16]);

impl PairId {
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

fn truncate(digest: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A login attempt counted in by [`Limits::attempt`]: sleep `penalty`, check
/// the credentials, then hand it to [`Limits::finish`]. Dropped unfinished
/// (the client went away, the login timed out), it counts as a failure.
#[derive(Debug)]
pub struct Attempt {
    /// How long to wait before checking the credentials.
    pub penalty: Duration,
    net: ClientNet,
    account: Option<AccountId>,
    /// Counted by a fleet-wide backend as well as in this process (set by
    /// that backend's `attempt`, read by its `finish`).
    pub remote: bool,
}

impl Attempt {
    /// The client prefix it was counted under.
    pub fn net(&self) -> ClientNet {
        self.net
    }

    /// The account it was counted for, if the name was a login.
    pub fn account(&self) -> Option<AccountId> {
        self.account
    }
}

/// How a login attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials were right.
    Success,
    /// Wrong password, unknown user, or a name that is no login.
    Failure,
    /// The directory could not say (it is down): not counted.
    Unchecked,
}

/// Why a connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    Global,
    PerIp,
}

impl Rejected {
    pub fn reason(self) -> &'static str {
        match self {
            Rejected::Global => "max_connections",
            Rejected::PerIp => "max_connections_per_ip",
        }
    }
}

/// The limits a front end consults.
#[async_trait::async_trait]
pub trait Limits: Send + Sync {
    fn config(&self) -> &LimitsConfig;

    /// Counts a connection from `ip` in, unless a cap is reached.
    async fn connect(&self, ip: IpAddr) -> Result<ConnectionPermit, Rejected>;

    /// Counts a login attempt from `ip` for `account` in, before it is
    /// checked, and says how long to wait before checking it. `account` is
    /// `None` for a name that is no valid login of any tenant.
    async fn attempt(&self, ip: IpAddr, account: Option<&str>) -> Attempt;

    /// Records how the attempt ended.
    async fn finish(&self, attempt: Attempt, verdict: Verdict);
}

/// A counted connection; dropping it counts it out, wherever it was counted.
pub struct ConnectionPermit {
    _held: Box<dyn Any + Send + Sync>,
}

impl ConnectionPermit {
    pub fn new(held: impl Any + Send + Sync) -> Self {
        ConnectionPermit {
            _held: Box::new(held),
        }
    }
}

/// Limits counted in this process only.
pub struct MemoryLimits {
    config: LimitsConfig,
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

/// A count and when it was last raised.
#[derive(Clone, Copy, Debug)]
struct Count {
    n: u32,
    at: Instant,
}

// What the bounds in the module documentation assume: a record (with
// hashbrown's control byte, at its 7/8 load) stays under 64 bytes.
const _: () = assert!(std::mem::size_of::<(Key, Count)>() <= 48);
const _: () = assert!(std::mem::size_of::<(PairId, Count)>() <= 48);
// Dropping a generation must be one free, not a walk over its entries.
const _: () = assert!(!std::mem::needs_drop::<(Key, Count)>());
const _: () = assert!(!std::mem::needs_drop::<(PairId, Count)>());

/// Records that expire `life` after their last update, in at most `2 *
/// per_generation` entries with O(1) work per operation (see the module
/// documentation).
struct Generations<K> {
    current: HashMap<K, Count>,
    older: HashMap<K, Count>,
    /// When `current` was started.
    started: Instant,
    per_generation: usize,
    life: Duration,
}

impl<K: Copy + Eq + Hash> Generations<K> {
    fn new(bound: usize, life: Duration) -> Self {
        Generations {
            current: HashMap::new(),
            older: HashMap::new(),
            started: Instant::now(),
            per_generation: (bound / 2).max(1),
            life,
        }
    }

    fn len(&self) -> usize {
        self.current.len() + self.older.len()
    }

    fn fresh(&self, c: &Count, now: Instant) -> bool {
        now.saturating_duration_since(c.at) < self.life
    }

    /// The live count of `key`.
    fn get(&self, key: &K, now: Instant) -> u32 {
        self.current
            .get(key)
            .or_else(|| self.older.get(key))
            .filter(|c| self.fresh(c, now))
            .map_or(0, |c| c.n)
    }

    /// Drops the older generation when the current one is full (and `key`
    /// would be a new entry) or a lifetime old.
    fn rotate_if_due(&mut self, key: &K, now: Instant) {
        let full = self.current.len() >= self.per_generation && !self.current.contains_key(key);
        if full || now.saturating_duration_since(self.started) >= self.life {
            self.older = std::mem::take(&mut self.current);
            self.started = now;
        }
    }

    /// The live record of `key` in the current generation, made (or moved up
    /// from the older one) if need be; an expired one starts again at 0.
    fn entry(&mut self, key: K, now: Instant) -> &mut Count {
        self.rotate_if_due(&key, now);
        let life = self.life;
        let c = match self.current.entry(key) {
            MapEntry::Occupied(o) => o.into_mut(),
            MapEntry::Vacant(v) => {
                let moved = self.older.remove(&key);
                v.insert(moved.unwrap_or(Count { n: 0, at: now }))
            }
        };
        if now.saturating_duration_since(c.at) >= life {
            *c = Count { n: 0, at: now };
        }
        c
    }

    /// Raises the count of `key`; returns what it was.
    fn bump(&mut self, key: K, now: Instant) -> u32 {
        let c = self.entry(key, now);
        let prior = c.n;
        c.n = c.n.saturating_add(1);
        c.at = now;
        prior
    }

    /// Takes one back from the count of `key`, if it is still live.
    fn undo(&mut self, key: &K, now: Instant) {
        let life = self.life;
        let c = match self.current.get_mut(key) {
            Some(c) => Some(c),
            None => self.older.get_mut(key),
        };
        if let Some(c) = c
            && now.saturating_duration_since(c.at) < life
        {
            c.n = c.n.saturating_sub(1);
        }
    }

    fn remove(&mut self, key: &K) {
        self.current.remove(key);
        self.older.remove(key);
    }
}

impl MemoryLimits {
    pub fn new(config: LimitsConfig) -> Arc<Self> {
        let records = Records {
            failures: Generations::new(config.max_failure_records, config.penalty_window),
            known_good: Generations::new(config.max_known_good, config.known_good_for),
        };
        Arc::new(MemoryLimits {
            config,
            conns: Mutex::default(),
            records: Mutex::new(records),
        })
    }

    /// Counts a connection in against the process-wide cap, and against the
    /// per-prefix cap when `per_net` is set.
    pub fn connect_local(
        self: &Arc<Self>,
        ip: IpAddr,
        per_net: bool,
    ) -> Result<ConnectionPermit, Rejected> {
        let net = self.config.net(ip);
        let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.config.max_connections {
            return Err(Rejected::Global);
        }
        let n = c.per_net.get(&net).copied().unwrap_or(0);
        if per_net && n >= self.config.max_connections_per_ip {
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
        let net = self.config.net(ip);
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
            penalty: self.config.attempt_penalty(prior),
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
    fn config(&self) -> &LimitsConfig {
        &self.config
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

/// An address as counted: an IPv4 client seen as IPv4-mapped IPv6 is the
/// same client.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
