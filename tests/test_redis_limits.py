"""Fleet-wide abuse limits in Redis: the per-IP connection cap and the
failed-login penalty hold across popgate processes that share a Redis, and a
crashed process's connection counts lapse."""

from __future__ import annotations

import signal
import socket
import time
import uuid

from popclient import AUTH_FAILED, TIMEOUT
from test_redis_locks import locks_toml, private_redis, resp, shared_redis  # noqa: F401  (fixtures)

USER = "bob@acme.example"


def two(popgate, url: str, **server):
    prefix = f"pgtest-{uuid.uuid4().hex[:12]}"
    extra = locks_toml(url, prefix)
    servers = [popgate(server=dict(server), extra_toml=extra) for _ in range(2)]
    # The fixture's "is it listening" probes were counted too (a freshly
    # started process may take its time to accept them); their entries are
    # removed just after they close. Start from an empty count.
    for srv in servers:
        srv.wait_log("session end")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    key = f"{prefix}:conn:{{127.0.0.1}}"
    deadline = time.monotonic() + TIMEOUT
    while resp("127.0.0.1", port, "ZCARD", key) != 0:
        assert time.monotonic() < deadline, "probe connections still counted"
        time.sleep(0.02)
    return servers


def admitted(srv):
    c = srv.connect()
    assert c.greeting.startswith(b"+OK"), c.greeting
    return c


def rejected(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        return s.recv(200)


def test_per_ip_cap_spans_the_fleet(popgate, shared_redis):
    a, b = two(popgate, shared_redis, max_connections_per_ip=3)
    held = [admitted(a), admitted(a), admitted(b)]
    # The fourth connection from this address is one too many, on either process.
    assert rejected(a.port).startswith(b"-ERR [SYS/TEMP] Too many connections")
    assert rejected(b.port).startswith(b"-ERR [SYS/TEMP] Too many connections")
    held.pop().close()
    time.sleep(0.3)
    with b.connect() as c:
        assert c.greeting.startswith(b"+OK")
    for c in held:
        c.close()


def test_a_crashed_process_does_not_hold_its_counts_forever(popgate, private_redis):
    a, b = two(popgate, private_redis.url, max_connections_per_ip=2)
    a1, a2 = admitted(a), admitted(a)
    assert rejected(b.port).startswith(b"-ERR [SYS/TEMP]")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    a1.close()
    a2.close()
    # Its entries are leases: expire them now instead of waiting a minute, by
    # moving Redis's view of them into the past (what time does to them).
    key = next(k for k in resp("127.0.0.1", private_redis.port, "KEYS", "*:conn:*"))
    for member in resp("127.0.0.1", private_redis.port, "ZRANGE", key, "0", "-1"):
        resp("127.0.0.1", private_redis.port, "ZADD", key, "XX", "1", member)
    with b.connect() as c:
        assert c.greeting.startswith(b"+OK")


def test_failed_logins_on_one_process_slow_down_the_other(popgate, shared_redis):
    a, b = two(popgate, shared_redis, auth_penalty="1s", auth_penalty_max="4s", auth_failure_delay="10ms",
               max_auth_failures=10)
    with a.connect() as c:
        assert c.login(USER, "wrong") == AUTH_FAILED
        assert c.login(USER, "wrong") == AUTH_FAILED
    with b.connect() as c:
        start = time.monotonic()
        assert c.login(USER, "wrong again") == AUTH_FAILED
        # Two failures counted in Redis: the other process waits 2 s first.
        assert time.monotonic() - start >= 1.9
    with b.connect() as c:
        c.login_ok(USER, "secret")
    with a.connect() as c:
        start = time.monotonic()
        assert c.login(USER, "wrong") == AUTH_FAILED
        assert time.monotonic() - start < 0.9, "a success anywhere clears the record"


def test_limits_fall_back_to_the_process_when_redis_is_down(popgate, private_redis):
    a, _ = two(popgate, private_redis.url, max_connections_per_ip=2)
    private_redis.stop()
    # Service goes on (counted in this process) instead of refusing everyone.
    c1, c2 = admitted(a), admitted(a)
    assert rejected(a.port).startswith(b"-ERR [SYS/TEMP] Too many connections")
    c1.close()
    c2.close()
