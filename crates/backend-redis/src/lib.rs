//! Everything Redis: the fleet-wide mailbox locks ([`RedisLocks`], the
//! `MailboxLocks` seam of `popgate-lock`) and the fleet-wide abuse limits
//! ([`RedisLimits`], its `Limits` seam), on one connection.

pub mod fleet;
pub mod limits;
pub mod locks;

pub use fleet::RedisFleet;
pub use limits::RedisLimits;
pub use locks::{Endpoint, RedisLocks, RedisLocksConfig, SentinelEndpoint};
