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
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> Arc<MemoryLimits> {
        MemoryLimits::new(LimitsConfig {
            max_connections: max,
            max_connections_per_ip: per_ip,
            ..Default::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// One attempt that fails; returns its penalty.
    async fn fail(l: &Arc<MemoryLimits>, from: &str, account: Option<&str>) -> Duration {
        let a = l.attempt(ip(from), account).await;
        let p = a.penalty;
        l.finish(a, Verdict::Failure).await;
        p
    }

    async fn succeed(l: &Arc<MemoryLimits>, from: &str, account: &str) -> Duration {
        let a = l.attempt(ip(from), Some(account)).await;
        let p = a.penalty;
        l.finish(a, Verdict::Success).await;
        p
    }

    /// The penalty the next attempt would pay, without counting it.
    async fn peek(l: &Arc<MemoryLimits>, from: &str, account: Option<&str>) -> Duration {
        let a = l.attempt(ip(from), account).await;
        let p = a.penalty;
        l.finish(a, Verdict::Unchecked).await;
        p
    }

    #[tokio::test]
    async fn caps_count_in_and_out() {
        let l = limits(3, 2);
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        let a1 = l.connect(a).await.unwrap();
        let _a2 = l.connect(a).await.unwrap();
        assert_eq!(l.connect(a).await.err(), Some(Rejected::PerIp));
        let _b1 = l.connect(b).await.unwrap();
        assert_eq!(l.connect(b).await.err(), Some(Rejected::Global));
        drop(a1);
        let _b2 = l.connect(b).await.unwrap();
        assert_eq!(l.open_connections(), 3);
    }

    #[test]
    fn prefixes() {
        let net = |s: &str, v4, v6| ClientNet::new(ip(s), v4, v6).to_string();
        assert_eq!(net("192.0.2.7", 32, 64), "192.0.2.7");
        assert_eq!(net("192.0.2.7", 24, 64), "192.0.2.0/24");
        assert_eq!(net("::ffff:192.0.2.7", 32, 64), "192.0.2.7");
        assert_eq!(net("2001:db8:1:2:3:4:5:6", 32, 64), "2001:db8:1:2::/64");
        assert_eq!(net("2001:db8:1:2:3:4:5:6", 32, 48), "2001:db8:1::/48");
        assert_eq!(net("2001:db8::1", 32, 128), "2001:db8::1");
        assert_eq!(net("2001:db8::1", 0, 0), "::/0");
        assert_eq!(net("192.0.2.7", 0, 64), "0.0.0.0/0");
    }

    #[tokio::test]
    async fn one_ipv6_64_shares_a_cap_and_other_64s_do_not() {
        let l = limits(100, 2);
        let _a = l.connect(ip("2001:db8:0:1::1")).await.unwrap();
        let _b = l.connect(ip("2001:db8:0:1:ffff::2")).await.unwrap();
        assert_eq!(
            l.connect(ip("2001:db8:0:1:dead:beef:0:3")).await.err(),
            Some(Rejected::PerIp),
            "a third address in the same /64 is one connection too many"
        );
        let _c = l.connect(ip("2001:db8:0:2::1")).await.unwrap();
        let _d = l.connect(ip("2001:db8:0:2::2")).await.unwrap();
    }

    #[tokio::test]
    async fn one_ipv6_64_shares_a_penalty_and_other_64s_do_not() {
        let l = limits(100, 100);
        assert_eq!(fail(&l, "2001:db8:0:1::1", None).await, Duration::ZERO);
        assert_eq!(fail(&l, "2001:db8:0:1::2", None).await, S(2));
        assert_eq!(
            fail(&l, "2001:db8:0:1:ffff:ffff:ffff:ffff", None).await,
            S(4)
        );
        assert_eq!(peek(&l, "2001:db8:0:2::1", None).await, Duration::ZERO);
        // IPv4 is per address by default; /24 when configured.
        assert_eq!(fail(&l, "192.0.2.1", None).await, Duration::ZERO);
        assert_eq!(peek(&l, "192.0.2.2", None).await, Duration::ZERO);
        let l24 = MemoryLimits::new(LimitsConfig {
            ipv4_prefix: 24,
            ..Default::default()
        });
        assert_eq!(fail(&l24, "192.0.2.1", None).await, Duration::ZERO);
        assert_eq!(peek(&l24, "192.0.2.200", None).await, S(2));
        assert_eq!(peek(&l24, "192.0.3.1", None).await, Duration::ZERO);
    }

    #[tokio::test]
    async fn penalty_doubles_and_is_capped() {
        let l = limits(10, 10);
        let bob = Some("bob@a");
        assert_eq!(fail(&l, "192.0.2.1", bob).await, Duration::ZERO);
        assert_eq!(fail(&l, "192.0.2.1", bob).await, S(2));
        assert_eq!(peek(&l, "192.0.2.1", bob).await, S(4));
        // Another address trying the same account is slowed down too.
        assert_eq!(peek(&l, "192.0.2.9", Some("BOB@a")).await, S(4));
        // The same client over IPv4-mapped IPv6 is the same address.
        assert_eq!(peek(&l, "::ffff:192.0.2.1", Some("x")).await, S(4));
        for _ in 0..10 {
            fail(&l, "192.0.2.1", bob).await;
        }
        assert_eq!(peek(&l, "192.0.2.1", bob).await, S(15));
    }

    #[tokio::test]
    async fn success_on_own_mailbox_does_not_clear_the_penalty_for_guessing_another() {
        let l = limits(10, 10);
        let attacker = "198.51.100.7";
        fail(&l, attacker, Some("victim@a")).await;
        fail(&l, attacker, Some("victim@a")).await;
        fail(&l, attacker, Some("victim@a")).await;
        // His own mailbox, right password: pays for his failures, and ...
        assert_eq!(succeed(&l, attacker, "mallory@a").await, S(8));
        // ... the next guess at the victim still pays as much as before.
        assert_eq!(peek(&l, attacker, Some("victim@a")).await, S(8));
        assert_eq!(peek(&l, attacker, Some("other@a")).await, S(8));
        // Logging in to his own mailbox again and again changes nothing.
        for _ in 0..5 {
            succeed(&l, attacker, "mallory@a").await;
        }
        assert_eq!(peek(&l, attacker, Some("victim@a")).await, S(8));
    }

    #[tokio::test]
    async fn parallel_attempts_each_pay() {
        let l = limits(10, 10);
        // Five attempts at once: none finished when the next is counted.
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(l.attempt(ip("203.0.113.5"), Some("victim@a")).await);
        }
        let penalties: Vec<u64> = held.iter().map(|a| a.penalty.as_secs()).collect();
        assert_eq!(penalties, [0, 2, 4, 8, 15]);
        // From elsewhere, against the same account: also slowed.
        let other = l.attempt(ip("203.0.114.5"), Some("victim@a")).await;
        assert_eq!(other.penalty, S(15));
        // And from the same address against other accounts.
        let third = l.attempt(ip("203.0.113.5"), Some("x@a")).await;
        assert_eq!(third.penalty, S(15));
        // Dropped unfinished (the client hung up during the penalty): still
        // counted, as failures.
        drop((held, other, third));
        assert_eq!(peek(&l, "203.0.113.5", None).await, S(15));
    }

    #[tokio::test]
    async fn a_known_good_victim_is_not_delayed_by_failures_from_elsewhere() {
        let l = limits(10, 10);
        let home = "192.0.2.10";
        assert_eq!(succeed(&l, home, "victim@a").await, Duration::ZERO);
        // An attacker guesses from another prefix ...
        for _ in 0..8 {
            fail(&l, "2001:db8:bad::1", Some("victim@a")).await;
        }
        // ... and others behind the victim's NAT fail on their own accounts.
        for _ in 0..4 {
            fail(&l, home, Some("neighbour@a")).await;
        }
        // The victim, from home: no delay.
        assert_eq!(succeed(&l, home, "victim@a").await, Duration::ZERO);
        // From a new place the account-wide record applies.
        assert_eq!(peek(&l, "203.0.113.99", Some("victim@a")).await, S(15));
        // The attacker still pays.
        assert_eq!(peek(&l, "2001:db8:bad::2", Some("victim@a")).await, S(15));
        // The victim's own recent failures from home count.
        assert_eq!(fail(&l, home, Some("victim@a")).await, Duration::ZERO);
        assert_eq!(fail(&l, home, Some("victim@a")).await, S(2));
        assert_eq!(succeed(&l, home, "victim@a").await, S(4));
        assert_eq!(peek(&l, home, Some("victim@a")).await, Duration::ZERO);
    }

    #[tokio::test]
    async fn unchecked_attempts_are_taken_back() {
        let l = limits(10, 10);
        for _ in 0..5 {
            let a = l.attempt(ip("192.0.2.1"), Some("bob@a")).await;
            l.finish(a, Verdict::Unchecked).await;
        }
        assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, Duration::ZERO);
    }

    #[tokio::test]
    async fn names_that_are_no_login_make_no_records() {
        let l = limits(10, 10);
        for _ in 0..1000 {
            fail(&l, "192.0.2.1", None).await;
        }
        assert_eq!(l.failure_records(), 1, "only the address is counted");
    }

    #[tokio::test]
    async fn failure_records_stay_within_their_bound() {
        let bound = 1000;
        let l = MemoryLimits::new(LimitsConfig {
            max_failure_records: bound,
            ..Default::default()
        });
        for i in 0..200_000u32 {
            let name = format!("{i:x}{}@a", "x".repeat(1000));
            let from = format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff);
            fail(&l, &from, Some(&name)).await;
            assert!(
                l.failure_records() <= bound,
                "{} at {i}",
                l.failure_records()
            );
        }
        // What was touched recently is still counted.
        let a = l.attempt(ip("2001:db8:3:d3f::1"), Some("x@a")).await;
        assert_eq!(a.penalty, S(2), "the last prefix's failure is remembered");
    }

    #[tokio::test]
    async fn the_default_bound_holds_for_200000_garbage_names() {
        let l = limits(10, 10);
        for i in 0..200_000u32 {
            let name = format!("{i}-{}@acme.example", "g".repeat(1000));
            fail(&l, "192.0.2.1", Some(&name)).await;
        }
        assert!(
            l.failure_records() <= LimitsConfig::default().max_failure_records,
            "{}",
            l.failure_records()
        );
        // The attacker's address is still counted (touched every time).
        assert_eq!(peek(&l, "192.0.2.1", None).await, S(15));
    }

    #[tokio::test]
    async fn known_good_marks_stay_within_their_bound() {
        let l = MemoryLimits::new(LimitsConfig {
            max_known_good: 100,
            ..Default::default()
        });
        for i in 0..1000 {
            succeed(&l, "192.0.2.1", &format!("u{i}@a")).await;
            assert!(l.known_good_records() <= 100);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn records_expire_after_the_window() {
        let l = limits(10, 10);
        fail(&l, "192.0.2.1", Some("bob@a")).await;
        fail(&l, "192.0.2.1", Some("bob@a")).await;
        assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, S(4));
        tokio::time::advance(Duration::from_secs(15 * 60 + 1)).await;
        assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, Duration::ZERO);
        // Known good lasts 30 days.
        succeed(&l, "192.0.2.1", "bob@a").await;
        for _ in 0..4 {
            fail(&l, "192.0.2.99", Some("bob@a")).await;
        }
        tokio::time::advance(Duration::from_secs(29 * 24 * 3600)).await;
        for _ in 0..4 {
            fail(&l, "192.0.2.99", Some("bob@a")).await;
        }
        assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, Duration::ZERO);
        tokio::time::advance(Duration::from_secs(2 * 24 * 3600)).await;
        for _ in 0..3 {
            fail(&l, "192.0.2.99", Some("bob@a")).await;
        }
        assert_eq!(peek(&l, "192.0.2.1", Some("bob@a")).await, S(8));
    }
}
