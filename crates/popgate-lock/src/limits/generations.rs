//! Records that expire, in two generations: at most a bound of entries,
//! O(1) work per update, and a whole generation dropped with one free (see
//! the [module documentation](super)).

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// A count and when it was last raised.
#[derive(Clone, Copy, Debug)]
pub(super) struct Count {
    pub(super) n: u32,
    pub(super) at: Instant,
}

/// Records that expire `life` after their last update, in at most `2 *
/// per_generation` entries with O(1) work per operation (see the module
/// documentation).
pub(super) struct Generations<K> {
    current: HashMap<K, Count>,
    older: HashMap<K, Count>,
    /// When `current` was started.
    started: Instant,
    per_generation: usize,
    life: Duration,
}

impl<K: Copy + Eq + Hash> Generations<K> {
    pub(super) fn new(bound: usize, life: Duration) -> Self {
        Generations {
            current: HashMap::new(),
            older: HashMap::new(),
            started: Instant::now(),
            per_generation: (bound / 2).max(1),
            life,
        }
    }

    /// New bounds: the entry bound applies from the next rotation, the
    /// lifetime at once.
    pub(super) fn retune(&mut self, bound: usize, life: Duration) {
        self.per_generation = (bound / 2).max(1);
        self.life = life;
    }

    pub(super) fn len(&self) -> usize {
        self.current.len() + self.older.len()
    }

    fn fresh(&self, c: &Count, now: Instant) -> bool {
        now.saturating_duration_since(c.at) < self.life
    }

    /// The live count of `key`.
    pub(super) fn get(&self, key: &K, now: Instant) -> u32 {
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
    pub(super) fn entry(&mut self, key: K, now: Instant) -> &mut Count {
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
    pub(super) fn bump(&mut self, key: K, now: Instant) -> u32 {
        let c = self.entry(key, now);
        let prior = c.n;
        c.n = c.n.saturating_add(1);
        c.at = now;
        prior
    }

    /// Takes one back from the count of `key`, if it is still live.
    pub(super) fn undo(&mut self, key: &K, now: Instant) {
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

    pub(super) fn remove(&mut self, key: &K) {
        self.current.remove(key);
        self.older.remove(key);
    }
}
