//! The Lua scripts of the mailbox locks: each one atomic, one round trip,
//! and safe to repeat (a call retried after a lost answer changes nothing).

use std::sync::LazyLock;

use ::redis::Script;

/// Takes the lock if it is free (or already ours: a retried call), and
/// returns the fence as a decimal string, or nil when the mailbox is in use.
/// KEYS: lock, fence. ARGV: owner, ttl ms, fence idle expiry ms.
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if sep and string.sub(cur, sep + 1) == ARGV[1] then
    return string.sub(cur, 1, sep - 1)
  end
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = redis.call('INCR', KEYS[2])
if f < now then
  f = now
  redis.call('SET', KEYS[2], string.format('%.0f', f))
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local fs = string.format('%.0f', f)
if not redis.call('SET', KEYS[1], fs .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return fs
",
    )
});

/// Extends the lock only if it is ours: 1, or 0. KEYS: lock. ARGV: token, ttl ms.
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Deletes the lock only if it is ours: 1, or 0. KEYS: lock. ARGV: token.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// The heartbeat's marker: 1 if it was there (refreshed), 0 if Redis lost
/// it (restarted empty, failed over without it, flushed) or it expired,
/// and then sets it again. KEYS: marker. ARGV: expiry ms.
pub(super) static HEARTBEAT_MARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 1 then
  return 1
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 0
",
    )
});
