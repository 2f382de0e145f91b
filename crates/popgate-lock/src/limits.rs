//! Abuse limits: connection caps (per process, and per client IP) and the
//! failed-login penalty (per client IP and per account), in the spirit of
//! Dovecot's auth penalty: each recent failure doubles the delay before the
//! next attempt is even checked, up to a ceiling.
//!
//! [`MemoryLimits`] counts within one process; [`crate::redis_limits`]
//! counts per-IP connections and login failures across the fleet.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// Connections open at once in this process.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// Delay after the first recent failure; doubles with each further one.
    pub penalty_base: Duration,
    /// The longest penalty delay.
    pub penalty_max: Duration,
    /// Failures older than this are forgotten.
    pub penalty_window: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            max_connections_per_ip: 50,
            penalty_base: Duration::from_secs(2),
            penalty_max: Duration::from_secs(15),
            penalty_window: Duration::from_secs(15 * 60),
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

    /// How long to wait before checking a login from `ip` for `account`.
    async fn penalty(&self, ip: IpAddr, account: &str) -> Duration;

    /// Records a failed login.
    async fn failed(&self, ip: IpAddr, account: &str);

    /// A successful login clears the account's and the address's record.
    async fn succeeded(&self, ip: IpAddr, account: &str);
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
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

#[derive(Default)]
struct Conns {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

struct MemoryPermit {
    limits: Arc<MemoryLimits>,
    ip: IpAddr,
}

impl Drop for MemoryPermit {
    fn drop(&mut self) {
        let mut c = self.limits.conns.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl MemoryLimits {
    pub fn new(config: LimitsConfig) -> Arc<Self> {
        Arc::new(MemoryLimits {
            config,
            conns: Mutex::default(),
            failures: Mutex::default(),
        })
    }

    /// Counts a connection in against the process-wide cap, and against the
    /// per-IP cap when `per_ip` is set.
    pub fn connect_local(
        self: &Arc<Self>,
        ip: IpAddr,
        per_ip: bool,
    ) -> Result<ConnectionPermit, Rejected> {
        let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.config.max_connections {
            return Err(Rejected::Global);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if per_ip && *n >= self.config.max_connections_per_ip {
            return Err(Rejected::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnectionPermit::new(MemoryPermit {
            limits: self.clone(),
            ip,
        }))
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    pub fn local_penalty(&self, ip: IpAddr, account: &str) -> Duration {
        let now = Instant::now();
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = |key: &str| match f.get(key) {
            Some(&(n, at)) if now.duration_since(at) < self.config.penalty_window => n,
            _ => 0,
        };
        self.config
            .penalty_for(count(&ip_key(ip)).max(count(&account_key(account))))
    }

    pub fn local_failed(&self, ip: IpAddr, account: &str) {
        let now = Instant::now();
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() > 100_000 {
            let window = self.config.penalty_window;
            f.retain(|_, (_, at)| now.duration_since(*at) < window);
        }
        for key in [ip_key(ip), account_key(account)] {
            let e = f.entry(key).or_insert((0, now));
            if now.duration_since(e.1) >= self.config.penalty_window {
                e.0 = 0;
            }
            e.0 = e.0.saturating_add(1);
            e.1 = now;
        }
    }

    pub fn local_succeeded(&self, ip: IpAddr, account: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(&ip_key(ip));
        f.remove(&account_key(account));
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

    async fn penalty(&self, ip: IpAddr, account: &str) -> Duration {
        self.local_penalty(ip, account)
    }

    async fn failed(&self, ip: IpAddr, account: &str) {
        self.local_failed(ip, account)
    }

    async fn succeeded(&self, ip: IpAddr, account: &str) {
        self.local_succeeded(ip, account)
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

/// The key that counts failures from an address.
pub fn ip_key(ip: IpAddr) -> String {
    format!("ip:{}", canonical_ip(ip))
}

/// The key that counts failures for an account.
pub fn account_key(account: &str) -> String {
    format!("user:{}", account.to_ascii_lowercase())
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

    #[tokio::test]
    async fn caps_count_in_and_out() {
        let l = limits(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = l.connect(a).await.unwrap();
        let _a2 = l.connect(a).await.unwrap();
        assert_eq!(l.connect(a).await.err(), Some(Rejected::PerIp));
        let _b1 = l.connect(b).await.unwrap();
        assert_eq!(l.connect(b).await.err(), Some(Rejected::Global));
        drop(a1);
        let _b2 = l.connect(b).await.unwrap();
        assert_eq!(l.open_connections(), 3);
    }

    #[tokio::test]
    async fn penalty_doubles_and_is_capped_and_cleared() {
        let l = limits(10, 10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(l.penalty(ip, "bob@a").await, Duration::ZERO);
        l.failed(ip, "bob@a").await;
        assert_eq!(l.penalty(ip, "bob@a").await, Duration::from_secs(2));
        l.failed(ip, "bob@a").await;
        assert_eq!(l.penalty(ip, "bob@a").await, Duration::from_secs(4));
        // Another address trying the same account is slowed down too.
        assert_eq!(
            l.penalty("192.0.2.9".parse().unwrap(), "BOB@a").await,
            Duration::from_secs(4)
        );
        // The same client over IPv4-mapped IPv6 is the same address.
        assert_eq!(
            l.penalty("::ffff:192.0.2.1".parse().unwrap(), "x").await,
            Duration::from_secs(4)
        );
        for _ in 0..10 {
            l.failed(ip, "bob@a").await;
        }
        assert_eq!(l.penalty(ip, "bob@a").await, Duration::from_secs(15));
        l.succeeded(ip, "bob@a").await;
        assert_eq!(l.penalty(ip, "bob@a").await, Duration::ZERO);
    }
}
