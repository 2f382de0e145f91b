"""One client must not hold the service: the whole login phase is bounded in
time and in commands, clients are counted by address prefix (IPv6 /64 by
default, shown here with PROXY v2 headers carrying IPv6 sources), and the
brute-force penalty can be neither reset nor outrun, while a user logging in
from where they usually do is not punished for an attacker's failures."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
import uuid

import pytest

from popclient import AUTH_FAILED, TIMEOUT, Pop3
from test_metrics import metrics_server, scrape
from test_redis_locks import locks_toml, shared_redis  # noqa: F401  (a fixture)

TOO_LONG = b"-ERR Disconnected: login took too long."
BUDGET = b"-ERR Too many commands before login, closing."
VICTIM, VICTIM_PW = "bob@acme.example", "secret"
OWN, OWN_PW = "dave@acme.example", "davepw"


def read_until_closed(c: Pop3, limit: float) -> tuple[bytes, float]:
    """Everything until the server closes (at most `limit` s), and when."""
    start = time.monotonic()
    c.sock.settimeout(limit)
    data = bytes(c.buf)
    c.buf.clear()
    try:
        while chunk := c.sock.recv(4096):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data, time.monotonic() - start


# --------------------------------------------------------------------------
# the login phase is bounded in time


def test_capa_every_short_interval_is_disconnected_at_the_login_timeout(popgate):
    # auth_timeout (idle time) stays 60 s: only the new total bound applies.
    srv = popgate(server={"login_timeout": "2s", "auth_timeout": "60s"})
    start = time.monotonic()
    c = srv.connect()
    sent = 0
    got = b""
    try:
        while time.monotonic() - start < 10:
            c.send(b"CAPA\r\n" if sent % 3 else b"USER bob\r\n")
            sent += 1
            time.sleep(0.25)
            c.sock.settimeout(0.05)
            try:
                chunk = c.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    except OSError:
        pass  # the server closed while we were writing
    rest, _ = read_until_closed(c, 2)
    got += rest
    elapsed = time.monotonic() - start
    c.close()
    assert TOO_LONG + b"\r\n" in got, got[-300:]
    assert got.endswith(TOO_LONG + b"\r\n"), got[-300:]
    assert 1.8 <= elapsed < 4, elapsed
    assert sent >= 6, "the client was active all along"
    srv.wait_log('outcome="timeout"')


def test_an_idle_client_and_a_sasl_exchange_end_at_the_login_timeout(popgate):
    srv = popgate(server={"login_timeout": "2s", "auth_timeout": "60s"})
    # A SASL exchange that never ends: AUTH, '*', AUTH, '*', ...
    with srv.connect() as c:
        start = time.monotonic()
        got = b""
        rounds = 0
        try:
            while not got and rounds < 40:
                for line, expected in ((b"AUTH PLAIN", b"+ "), (b"*", b"-ERR Authentication cancelled.")):
                    r = c.cmd(line)
                    if r != expected:
                        got = r
                        break
                rounds += 1
                time.sleep(0.2)
        except (EOFError, OSError):
            pass
        rest, _ = read_until_closed(c, 3)
        assert (got + b"\r\n" + rest if got else rest).startswith(TOO_LONG), (got, rest)
        assert time.monotonic() - start < 4
        assert rounds >= 5, "the exchange went on until the timeout"
    # Saying nothing at all.
    with srv.connect() as c:
        data, took = read_until_closed(c, 5)
        assert data == TOO_LONG + b"\r\n", data
        assert 1.8 <= took < 4, took


def test_the_login_timeout_covers_a_stalled_stls_handshake(popgate, tmp_path):
    from test_tls import make_cert

    cert, key = make_cert(tmp_path, "abuse", "pop.test", ["pop.test", "127.0.0.1"])
    srv = popgate(
        listener={"tls": "starttls", "plaintext_auth": False},
        server={"login_timeout": "2s", "command_timeout": "30s"},
        extra_toml=f'\n[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n',
    )
    with srv.connect() as c:
        start = time.monotonic()
        assert c.cmd("STLS").startswith(b"+OK")
        # Never start the handshake: command_timeout (30 s) would wait it out.
        data, _ = read_until_closed(c, 10)
        took = time.monotonic() - start
        assert data == b"", data
        assert took < 4, f"STLS handshake held the connection {took:.1f}s"
    # A client that does its TLS and logs in in time is served.
    with srv.connect() as c:
        c.ok("STLS")
        ctx = ssl.create_default_context(cafile=cert)
        c.sock = ctx.wrap_socket(c.sock, server_hostname="pop.test")
        c.login_ok(VICTIM, VICTIM_PW)
        time.sleep(2.5)  # past the login timeout: logged in, it no longer applies
        c.ok("NOOP")
        c.ok("QUIT")


def test_a_login_within_the_timeout_is_served_and_then_the_session_stays(popgate):
    srv = popgate(server={"login_timeout": "2s"})
    with srv.connect() as c:
        time.sleep(1.2)
        c.login_ok(VICTIM, VICTIM_PW)
        time.sleep(1.5)
        c.ok("STAT")
        c.ok("QUIT")


def test_login_timeout_must_exceed_the_penalty_ceiling(popgate):
    srv = popgate(server={"login_timeout": "10s", "auth_penalty_max": "15s"}, start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"server.login_timeout" in r.stderr, r.stderr
    srv = popgate(server={"max_login_commands": 0}, start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"server.max_login_commands" in r.stderr, r.stderr
    srv = popgate(extra_toml="\n[limits]\nipv6_prefix = 129\n", start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"limits.ipv6_prefix" in r.stderr, r.stderr


# --------------------------------------------------------------------------
# the login phase is bounded in commands


def test_pre_login_commands_have_a_budget(popgate):
    srv = popgate(server={"max_login_commands": 5})
    with srv.connect() as c:
        # Pipelined, none a bad command or a login attempt.
        c.send(b"CAPA\r\nUSER a\r\nUSER b\r\nAUTH\r\nCAPA\r\nCAPA\r\nCAPA\r\n")
        data, _ = read_until_closed(c, 5)
    lines = data.split(b"\r\n")
    assert lines[-2:] == [BUDGET, b""], lines[-4:]
    assert lines.count(b"+OK Send your password.") == 2
    assert sum(1 for ln in lines if ln.startswith(b"+OK Capability")) == 2, lines
    srv.wait_log('outcome="abuse"')


def test_failed_logins_and_bad_commands_do_not_spend_the_budget(popgate):
    srv = popgate(server={"max_login_commands": 4, "max_auth_failures": 5, "auth_failure_delay": "10ms"})
    with srv.connect() as c:
        for _ in range(3):
            assert c.login(VICTIM, "wrong") == AUTH_FAILED
            assert c.cmd("BOGUS").startswith(b"-ERR")
        c.ok("CAPA")
        c.multi()
        c.ok("CAPA")
        c.multi()
        # Lines 3 and 4 of the budget.
        c.login_ok(VICTIM, VICTIM_PW)
        for _ in range(50):
            c.ok("NOOP")  # after login the budget does not apply
        c.ok("QUIT")


def test_a_real_client_is_well_within_the_defaults(popgate):
    srv = popgate()
    with srv.connect() as c:
        c.ok("CAPA")
        c.multi()
        c.ok("AUTH")
        c.multi()
        assert c.cmd("AUTH LOGIN") == b"+ VXNlcm5hbWU6"
        assert c.cmd("Ym9iQGFjbWUuZXhhbXBsZQ==") == b"+ UGFzc3dvcmQ6"
        assert c.cmd("c2VjcmV0").startswith(b"+OK Logged in")
        c.ok("QUIT")


# --------------------------------------------------------------------------
# clients are counted by prefix (IPv6 sources through PROXY v2)


def proxy_v2(src: str, sport: int) -> bytes:
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if ":" in src:
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "2001:db8::110")
        return sig + bytes([0x21, 0x21]) + struct.pack("!H", 36) + body + struct.pack("!HH", sport, 110)
    body = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", sport, 110)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", 12) + body


def proxied(srv, src: str, sport: int = 40000) -> Pop3:
    c = Pop3(srv.port, greeting=False)
    c.send(proxy_v2(src, sport))
    c.greeting = c.line()
    return c


def proxy_server(popgate, **server):
    return popgate(listener={"proxy_protocol": True, "trusted_proxies": ["127.0.0.1"]}, server=server)


def test_one_ipv6_64_shares_the_connection_cap_and_other_64s_do_not(popgate):
    srv = proxy_server(popgate, max_connections_per_ip=2)
    a = proxied(srv, "2001:db8:1:2::1")
    b = proxied(srv, "2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert a.greeting.startswith(b"+OK") and b.greeting.startswith(b"+OK")
    third = proxied(srv, "2001:db8:1:2:dead:beef:0:3")
    assert third.greeting == b"-ERR [SYS/TEMP] Too many connections, try again later.", third.greeting
    third.close()
    other = proxied(srv, "2001:db8:1:3::1")
    assert other.greeting.startswith(b"+OK"), "another /64 is another client"
    # IPv4 stays per address.
    v4 = [proxied(srv, "192.0.2.1"), proxied(srv, "192.0.2.1")]
    assert proxied(srv, "192.0.2.1").greeting.startswith(b"-ERR [SYS/TEMP]")
    v4.append(proxied(srv, "192.0.2.2"))
    assert v4[-1].greeting.startswith(b"+OK")
    a.close()
    time.sleep(0.3)
    with proxied(srv, "2001:db8:1:2::77") as again:
        assert again.greeting.startswith(b"+OK"), "a freed slot of the /64 is usable again"
    for c in (b, other, *v4):
        c.close()


def test_a_configured_prefix_groups_wider(popgate):
    srv = popgate(
        listener={"proxy_protocol": True, "trusted_proxies": ["127.0.0.1"]},
        server={"max_connections_per_ip": 1},
        extra_toml="\n[limits]\nipv4_prefix = 24\nipv6_prefix = 48\n",
    )
    held = [proxied(srv, "192.0.2.1"), proxied(srv, "2001:db8:1:1::1")]
    assert proxied(srv, "192.0.2.200").greeting.startswith(b"-ERR [SYS/TEMP]")
    assert proxied(srv, "2001:db8:1:ffff::1").greeting.startswith(b"-ERR [SYS/TEMP]")
    with proxied(srv, "2001:db8:2::1") as c:
        assert c.greeting.startswith(b"+OK")
    for c in held:
        c.close()


def timed_login(srv, src: str, user: str, password: str) -> tuple[bytes, float]:
    with proxied(srv, src) as c:
        assert c.cmd(f"USER {user}").startswith(b"+OK")
        start = time.monotonic()
        r = c.cmd(f"PASS {password}")
        return r, time.monotonic() - start


def test_one_ipv6_64_shares_the_penalty_and_other_64s_do_not(popgate):
    srv = proxy_server(popgate, auth_penalty="1s", auth_penalty_max="2s", auth_failure_delay="10ms")
    # A name that is no login of any tenant: counted on the address prefix only.
    r, took = timed_login(srv, "2001:db8:5:6::1", "nobody@nowhere.example", "x")
    assert r == AUTH_FAILED and took < 0.9
    r, took = timed_login(srv, "2001:db8:5:6:1234::99", "nobody@nowhere.example", "x")
    assert r == AUTH_FAILED and took >= 0.9, f"same /64: penalised ({took:.2f}s)"
    r, took = timed_login(srv, "2001:db8:5:7::1", "nobody@nowhere.example", "x")
    assert r == AUTH_FAILED and took < 0.9, f"another /64: not penalised ({took:.2f}s)"


# --------------------------------------------------------------------------
# the penalty cannot be reset or outrun


def test_a_success_on_the_attackers_own_mailbox_does_not_reset_his_penalty(popgate):
    srv = popgate(server={"auth_penalty": "1s", "auth_penalty_max": "2s", "auth_failure_delay": "10ms",
                          "max_auth_failures": 10})
    # Password spraying: one guess per account, so no account's own record grows.
    with srv.connect() as c:
        for user in ("alice@acme.example", "carol@acme.example", "frank"):
            assert c.login(user, "guess") == AUTH_FAILED
    # His own mailbox, right password (once slowed, then known good) ...
    for _ in range(2):
        with srv.connect() as c:
            c.login_ok(OWN, OWN_PW)
            c.ok("QUIT")
    # ... and the next guess at another account still waits the ceiling.
    with srv.connect() as c:
        start = time.monotonic()
        assert c.login("eve@globex.example", "guess") == AUTH_FAILED
        assert time.monotonic() - start >= 1.9


def test_parallel_attempts_each_pay(popgate):
    srv = popgate(server={"auth_penalty": "1s", "auth_penalty_max": "4s", "auth_failure_delay": "10ms"})
    n = 4
    conns = [srv.connect() for _ in range(n)]
    for c in conns:
        assert c.cmd(f"USER {VICTIM}").startswith(b"+OK")
    took = [0.0] * n
    answers = [b""] * n
    go = threading.Barrier(n)

    def attempt(i: int) -> None:
        go.wait()
        start = time.monotonic()
        answers[i] = conns[i].cmd("PASS wrong")
        took[i] = time.monotonic() - start

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT + 10)
    for c in conns:
        c.close()
    assert answers == [AUTH_FAILED] * n, answers
    took.sort()
    # Each was counted in before any was checked: 0, 1, 2, 4 s.
    assert took[0] < 0.9, took
    assert took[1] >= 0.9 and took[2] >= 1.9 and took[3] >= 3.9, took


PENALTIES = "popgate_login_penalty_delay_seconds_count"


@pytest.mark.parametrize("limits", ["process", "redis"])
def test_parallel_logins_from_one_address_that_succeed_pay_no_penalty(popgate, request, limits):
    # A NAT'd office (or a load balancer without PROXY): 32 people log in at
    # once from one address. A penalty would be 5 s and up, and counted.
    extra = ""
    if limits == "redis":
        extra = locks_toml(request.getfixturevalue("shared_redis"), f"pgtest-{uuid.uuid4().hex[:12]}")
    srv = metrics_server(
        popgate,
        server={"auth_penalty": "5s", "auth_penalty_max": "15s", "max_connections_per_ip": 64},
        start=False,
    )
    srv.extra_toml += extra
    srv.write_config()
    n = 32
    users = [(f"office{i}@acme.example", f"pw{i}") for i in range(n + 1)]
    path = srv.passwd["acme"]
    path.write_text(path.read_text() + "".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users))
    srv.start()
    conns = [srv.connect() for _ in range(n)]
    for c, (user, _) in zip(conns, users[:n]):
        assert c.cmd(f"USER {user}").startswith(b"+OK")
    answers = [b""] * n
    go = threading.Barrier(n)

    def login(i: int) -> None:
        go.wait()
        answers[i] = conns[i].cmd(f"PASS {users[i][1]}")

    threads = [threading.Thread(target=login, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT + 30)
    for c in conns:
        c.close()
    assert all(a.startswith(b"+OK Logged in") for a in answers), answers
    assert scrape(srv).get(PENALTIES) == 0, "a successful login was made to wait"
    # The penalty is still there for failures, and counted: one wrong
    # password, then the next login from the address (by someone who has
    # not logged in from here before) pays for it.
    with srv.connect() as c:
        assert c.login(users[0][0], "wrong") == AUTH_FAILED
    with srv.connect() as c:
        c.login_ok(*users[n])
    assert scrape(srv).get(PENALTIES) == 1


def test_a_known_good_user_is_not_slowed_by_an_attacker_elsewhere(popgate):
    srv = proxy_server(popgate, auth_penalty="1s", auth_penalty_max="2s", auth_failure_delay="10ms")
    home = "2001:db8:aa:1::10"
    r, took = timed_login(srv, home, VICTIM, VICTIM_PW)
    assert r.startswith(b"+OK Logged in"), r
    # An attacker on another network guesses the victim's password ...
    for i in range(3):
        r, _ = timed_login(srv, f"2001:db8:bb:1::{i + 1}", VICTIM, "guess")
        assert r == AUTH_FAILED
    # ... and a neighbour behind the victim's /64 fails on his own account.
    for _ in range(2):
        assert timed_login(srv, "2001:db8:aa:1::99", "carol@acme.example", "x")[0] == AUTH_FAILED
    # The victim, from home (another address of the same /64): no delay.
    r, took = timed_login(srv, "2001:db8:aa:1::11", VICTIM, VICTIM_PW)
    assert r.startswith(b"+OK Logged in"), r
    assert took < 0.9, f"the victim waited {took:.2f}s"
    # From a place never seen, the account's record applies.
    r, took = timed_login(srv, "2001:db8:cc:1::1", VICTIM, VICTIM_PW)
    assert r.startswith(b"+OK Logged in") and took >= 1.9, (r, took)
    # And the attacker still waits.
    r, took = timed_login(srv, "2001:db8:bb:1::9", VICTIM, "guess")
    assert r == AUTH_FAILED and took >= 1.9, took
