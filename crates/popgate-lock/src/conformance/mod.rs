//! The conformance kit of the lock seam: the behaviour every
//! [`MailboxLocks`](crate::MailboxLocks) and every [`Limits`](crate::limits::Limits)
//! backend must show, as their traits' documentation promises it.
//!
//! A backend's test implements [`LockBackend`] (or [`LimitsBackend`]): how
//! to make one more instance of it, as another process of the fleet (or
//! this one restarted) would, and what only a test can do to it (take a
//! lock away behind its holder's back). It then calls [`run_locks`] (or
//! [`run_limits`]) from inside its own tokio test; the kit panics with a
//! description of the first broken rule. `MemoryLocks` and `MemoryLimits`
//! run it in this crate's tests, `RedisLocks` and `RedisLimits` in
//! `backend-redis`'s.
//!
//! Compiled only with the `conformance` feature (a backend enables it in
//! its `[dev-dependencies]`), never into the binary.

mod limits;
mod locks;

pub use limits::{LimitsBackend, run_limits};
pub use locks::{LockBackend, run_locks};
