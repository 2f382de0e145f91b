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
//! computed from the values they had before ([`Attempt::penalty`]). So N
//! parallel attempts from one prefix or against one account see 0, 1, ...,
//! N-1 earlier attempts, and that is the most each may have to wait. An
//! attempt whose connection goes away before it is finished stays counted,
//! as a failure.
//!
//! Only failures are penalised, though: a NAT'd office, or a load balancer
//! without PROXY, is one address with many logins in flight at once.
//! [`Limits::settle`] waits until the attempts counted ahead of this one
//! (in this process) have ended, or its penalty has passed, and returns
//! what is left of the penalty of the failures among and before them. N
//! parallel logins that all succeed pay nothing; N parallel guesses that all
//! fail pay 0, base, 2 × base, ... as before, because each waits for the
//! failures ahead of it. The front end checks the credentials of an
//! attempt with no recorded failures before it ([`Attempt::upfront`] zero)
//! at once and holds the answer back by `settle` (the time of the answer
//! does not depend on whether the check succeeded, so it tells an attacker
//! nothing sooner); with recorded failures it sits `settle` out before the
//! check, so that guesses under penalty cost no hashing. A fleet-wide
//! backend cannot tell attempts in flight on other instances from failures
//! there: those count as failures.
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

mod generations;
mod ids;
mod memory;

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use ids::{AccountId, ClientNet, PairId, canonical_ip};
pub use memory::MemoryLimits;

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

impl Prior {
    /// Each count plus the other's; `known_good` stays.
    fn plus(self, other: Prior) -> Prior {
        Prior {
            net: self.net.saturating_add(other.net),
            account: self.account.saturating_add(other.account),
            pair: self.pair.saturating_add(other.pair),
            known_good: self.known_good,
        }
    }

    /// Each count less the other's (at least 0); `known_good` stays.
    fn less(self, other: Prior) -> Prior {
        Prior {
            net: self.net.saturating_sub(other.net),
            account: self.account.saturating_sub(other.account),
            pair: self.pair.saturating_sub(other.pair),
            known_good: self.known_good,
        }
    }
}

/// A login attempt counted in by [`Limits::attempt`]. If [`Attempt::upfront`]
/// is not zero (recorded failures), sit out [`Limits::settle`] before
/// checking the credentials; otherwise check them at once and sit it out
/// before answering. Then hand it to [`Limits::finish`]. Dropped unfinished
/// (the client went away, the login timed out), it counts as a failure.
#[derive(Debug)]
pub struct Attempt {
    /// The most it waits: the penalty of everything counted before it,
    /// failures and attempts in flight alike.
    pub penalty: Duration,
    net: ClientNet,
    account: Option<AccountId>,
    /// Counted by a fleet-wide backend as well as in this process (set by
    /// that backend's `attempt`, read by its `finish`).
    pub remote: bool,
    /// When it was counted in.
    started: tokio::time::Instant,
    /// The counts before it, as the backend that counted it has them.
    prior: Prior,
    /// This process's counts before it ...
    local_prior: Prior,
    /// ... and how many of them were attempts in flight here.
    local_ahead: Prior,
    /// What a fleet-wide backend counted besides this process's attempts:
    /// other instances' failures and attempts in flight.
    remote_other: Prior,
    /// The penalty of the failures recorded before it (not of attempts in
    /// flight here).
    upfront: Duration,
    /// Its place among this process's attempts in flight.
    ticket: Option<memory::Ticket>,
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

    /// The penalty of the failures recorded before it. Zero means the
    /// credentials may be checked at once, the answer held back by
    /// [`Limits::settle`] for what the attempts in flight ahead turn out to
    /// be; otherwise the wait comes before the check, so that an attacker's
    /// guesses cost no hashing before their penalty.
    pub fn upfront(&self) -> Duration {
        self.upfront
    }

    /// Sets the counts a fleet-wide backend returned, and the penalties
    /// that follow from them. `started_since` is how many attempts this
    /// process counted in after this one before the backend answered (they
    /// may have reached it first). Attempts in flight on other instances
    /// cannot be told from failures there: they count as failures.
    pub fn counted_remotely(&mut self, config: &LimitsConfig, prior: Prior, started_since: u32) {
        let reordered = Prior {
            net: started_since,
            account: started_since,
            pair: started_since,
            known_good: false,
        };
        self.prior = prior;
        self.remote_other = prior.less(self.local_prior).less(reordered);
        self.penalty = config.attempt_penalty(prior);
        let mut before = self
            .local_prior
            .less(self.local_ahead)
            .plus(self.remote_other);
        before.known_good = prior.known_good;
        self.upfront = config.attempt_penalty(before);
        self.remote = true;
    }

    /// The penalty once the attempts ahead of it here have ended: this
    /// process's failures now (`local_now`) and what the fleet counted
    /// besides, never more than [`Attempt::penalty`]. Returns what is left
    /// of it.
    fn settled(
        &self,
        config: &LimitsConfig,
        local_now: Prior,
        now: tokio::time::Instant,
    ) -> Duration {
        let mut effective = local_now.plus(self.remote_other);
        effective.known_good = self.prior.known_good || local_now.known_good;
        let penalty = config.attempt_penalty(effective).min(self.penalty);
        (self.started + penalty).saturating_duration_since(now)
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
    /// The configuration in force now.
    fn config(&self) -> Arc<LimitsConfig>;

    /// Replaces the configuration (a reload): connections and login
    /// attempts counted from now on use it; what is counted stays (the
    /// open connections, the failures and known-good marks, which lapse
    /// by the new lifetimes; records of a client prefix whose length
    /// changed are no longer found, and expire).
    fn reconfigure(&self, config: LimitsConfig);

    /// Counts a connection from `ip` in, unless a cap is reached.
    async fn connect(&self, ip: IpAddr) -> Result<ConnectionPermit, Rejected>;

    /// Counts a login attempt from `ip` for `account` in, before it is
    /// checked, and says how long to wait before checking it. `account` is
    /// `None` for a name that is no valid login of any tenant.
    async fn attempt(&self, ip: IpAddr, account: Option<&str>) -> Attempt;

    /// Waits until the attempts counted in ahead of this one (in this
    /// process) have ended, or its [`Attempt::penalty`] has passed, and
    /// returns how much longer to wait before answering it: what is left
    /// of the penalty of the failures among and before them. Logins that
    /// succeed cost the attempts after them nothing.
    async fn settle(&self, attempt: &Attempt) -> Duration;

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

#[cfg(test)]
mod tests;
