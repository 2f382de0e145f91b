//! The answers an auth hook allowed, reused for a short time.
//!
//! Keyed by a SHA-256 of a random per-process key, the login, the password
//! and the client address: the cache never holds a password, and a
//! different password, client or login is a miss. Only "allow" answers
//! are kept: a deny, an error or a timeout is asked again next time, so a
//! fixed password works at once and an outage is not remembered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use popgate_auth::UserInfo;
use sha2::{Digest, Sha256};

/// The most entries kept; beyond it, new answers are not cached until
/// old ones expire.
const MAX_ENTRIES: usize = 10_000;

pub(crate) struct Cache {
    ttl: Duration,
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], (Instant, UserInfo)>>,
}

impl Cache {
    pub(crate) fn new(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        // Without randomness the key is fixed; entries stay hashes.
        let _ = getrandom::fill(&mut key);
        Cache {
            ttl,
            key,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The entry's key. Lengths go in first, so that no two different
    /// logins or passwords hash the same bytes.
    pub(crate) fn key(&self, user: &str, password: &[u8], client: Option<IpAddr>) -> [u8; 32] {
        let client = client.map(|c| c.to_string()).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(self.key);
        for part in [user.as_bytes(), password, client.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<UserInfo> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, info) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| info.clone())
    }

    pub(crate) fn put(&self, key: [u8; 32], info: &UserInfo) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        }
        if entries.len() < MAX_ENTRIES {
            entries.insert(key, (Instant::now(), info.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_different_password_client_or_login_misses() {
        let cache = Cache::new(Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let key = cache.key("bob@x", b"pw", Some(ip));
        cache.put(key, &UserInfo::default());
        assert!(cache.get(&key).is_some());
        assert!(cache.get(&cache.key("bob@x", b"pw2", Some(ip))).is_none());
        assert!(cache.get(&cache.key("bob@x", b"pw", None)).is_none());
        assert!(cache.get(&cache.key("bob@y", b"pw", Some(ip))).is_none());
        // Moving a byte between login and password is another key.
        assert_ne!(cache.key("ab", b"c", None), cache.key("a", b"bc", None));
    }

    #[test]
    fn entries_expire_and_zero_caches_nothing() {
        let cache = Cache::new(Duration::from_millis(1));
        let key = cache.key("bob", b"pw", None);
        cache.put(key, &UserInfo::default());
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get(&key).is_none());
        let off = Cache::new(Duration::ZERO);
        off.put(key, &UserInfo::default());
        assert!(off.get(&key).is_none());
    }
}
