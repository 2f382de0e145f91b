"""A Redis that restarts empty forgets every lock; a second session may then
take a mailbox whose first holder does not know yet. The first holder must
find out within a heartbeat and a reconnect (popgate re-verifies every held
lock as soon as its connection works again), not at its next renewal
(ttl/3 later): the window in which two sessions hold one mailbox stays
short. Against a private redis-server that the test restarts."""

from __future__ import annotations

import time

from test_redis_locks import BOB, fleet, login_until_ok, message, private_redis, subjects  # noqa: F401  (fixtures)

LOST = b"-ERR [SYS/TEMP] Mailbox lock lost; no messages were deleted."


def test_a_holder_rechecks_its_lock_as_soon_as_redis_is_back(fleet, private_redis):
    # ttl 15s: the next renewal is up to 5 s away; the holder must not wait
    # for it.
    a, b = fleet(2, private_redis.url, ttl="15s")
    a.drop(BOB, message(1))
    holder = a.session(BOB)
    assert holder.ok("DELE 1")
    # Just after a renewal would be the worst case for the old behaviour:
    # let the login's own write settle, then restart Redis empty.
    time.sleep(0.5)
    private_redis.stop()
    private_redis.start()
    back = time.monotonic()
    second = login_until_ok(b, BOB, timeout=10)
    taken = time.monotonic()
    holder.sock.settimeout(10)
    assert holder.line() == LOST
    noticed = time.monotonic()
    # The holder knew within about a heartbeat (250 ms) and a reconnect of
    # Redis coming back, far from the 5 s a renewal could take.
    assert noticed - back < 2.0, f"lock loss noticed {noticed - back:.2f}s after Redis came back"
    assert noticed - taken < 2.0, f"two holders for {noticed - taken:.2f}s"
    holder.rest_until_eof()
    holder.close()
    # The old holder's DELE was never committed; the new one's QUIT is.
    assert subjects(a.maildir(BOB)) == {b"Subject: m1"}
    assert second.ok("DELE 1")
    assert second.cmd("QUIT") == b"+OK Logging out, 1 messages deleted."
    assert subjects(a.maildir(BOB)) == set()
    assert "re-established" in a.log()
