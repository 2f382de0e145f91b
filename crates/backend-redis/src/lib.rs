//! Everything Redis: the fleet-wide mailbox locks ([`RedisLocks`], the
//! `MailboxLocks` seam of `popgate-lock`) and the fleet-wide abuse limits
//! ([`RedisLimits`], its `Limits` seam), on one connection.

pub mod limits;
pub mod locks;

pub use limits::RedisLimits;
pub use locks::{Endpoint, RedisLocks, RedisLocksConfig, SentinelEndpoint};
