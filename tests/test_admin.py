"""`popgate who` and `popgate kick`: the fleet's live sessions, listed and
ended from any replica through its metrics port, with the bearer token.

The fleet tests run two popgate processes on one Maildir root and the
shared Redis (a key prefix of their own); one test runs a single process
with in-memory locks. Every CLI call is the real `popgate` binary reading
the replica's own configuration for the address and the token."""

from __future__ import annotations

import json
import socket
import time
import uuid

from conftest import free_port, run_popgate
from popclient import TIMEOUT
from test_redis_locks import BOB, DAVE, EVE, locks_toml, message, shared_redis  # noqa: F401  (fixture)

TOKEN = "adm1n-t0ken"
SYS_TEMP_KICK = b"-ERR [SYS/TEMP] Session ended by the administrator; no messages were deleted."


def metrics_toml(port: int, token: str | None) -> str:
    text = f'\n[metrics]\naddress = "127.0.0.1:{port}"\n'
    if token is not None:
        text += f'bearer_token = "{token}"\n'
    return text


def replica(popgate, locks: str = "", token: str | None = TOKEN, tenants=None):
    port = free_port()
    srv = popgate(tenants=tenants, extra_toml=locks + metrics_toml(port, token))
    srv.metrics_port = port
    return srv


def two_replicas(popgate, url: str):
    """Two processes sharing one Maildir root, one Redis prefix, each with
    its own metrics port and the same admin token."""
    locks = locks_toml(url, f"pgtest-{uuid.uuid4().hex[:12]}")
    a = replica(popgate, locks)
    shared_store = {
        name: {"store": {"kind": "maildir", "path": f"{a.root}/{name}/%d/%n/Maildir"}} for name in ("acme", "globex")
    }
    b = replica(popgate, locks, tenants=shared_store)
    return a, b


def cli(srv, *args: str):
    return run_popgate([args[0], "--config", str(srv.config_path), *args[1:]])


def who_json(srv, *args: str) -> dict:
    r = cli(srv, "who", "--json", *args)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def wait_listed(srv, users: set[str], *args: str, timeout: float = TIMEOUT) -> dict:
    """`who --json` until exactly `users` are listed."""
    deadline = time.monotonic() + timeout
    while True:
        listing = who_json(srv, *args)
        if {s["user"] for s in listing["sessions"]} == users:
            return listing
        assert time.monotonic() < deadline, f"wanted {users}, listed {listing}"
        time.sleep(0.05)


def client_addr(c) -> str:
    host, port = c.sock.getsockname()[:2]
    return f"{host}:{port}"


def raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


# --------------------------------------------------------------------------


def test_who_lists_the_sessions_of_every_replica(popgate, shared_redis):
    a, b = two_replicas(popgate, shared_redis)
    a.drop(BOB, message(1) + b"x" * 100_000 + b"\r\n")
    with a.session(BOB) as bob, b.session(EVE) as eve:
        started = time.time()
        for srv in (a, b):
            listing = wait_listed(srv, {BOB, EVE})
            by_user = {s["user"]: s for s in listing["sessions"]}
            assert by_user[BOB]["replica"] != by_user[EVE]["replica"], listing
            assert len(listing["replicas"]) == 2, listing
            assert by_user[BOB]["tenant"] == "acme" and by_user[EVE]["tenant"] == "globex"
            assert by_user[BOB]["client"] == client_addr(bob)
            assert by_user[EVE]["client"] == client_addr(eve)
            for s in listing["sessions"]:
                assert started - 60 < s["since"] <= time.time() + 1, s
                assert s["bytes_sent"] > 0, s
                # The id is the one in the replica's log.
                assert s["id"].startswith(s["replica"] + "-"), s
            assert listing["errors"] == []
        bob_id = by_user[BOB]["id"]
        assert f"id={bob_id}" in a.log()

        # Filters, on either replica.
        assert [s["user"] for s in who_json(b, "--tenant", "globex")["sessions"]] == [EVE]
        assert [s["user"] for s in who_json(b, "--user", BOB)["sessions"]] == [BOB]
        assert who_json(a, "--tenant", "acme", "--user", EVE)["sessions"] == []

        # Bytes sent grow while the session runs.
        before = {s["user"]: s["bytes_sent"] for s in who_json(a)["sessions"]}[BOB]
        status, _ = bob.retr(1)
        assert status.startswith(b"+OK")
        after = {s["user"]: s["bytes_sent"] for s in who_json(a)["sessions"]}[BOB]
        assert after >= before + 100_000, (before, after)

        # The table: a header, a row per session, a total.
        r = cli(a, "who")
        assert r.returncode == 0, r.stderr.decode()
        lines = r.stdout.decode().splitlines()
        assert lines[0].split()[:4] == ["REPLICA", "HOST", "TENANT", "USER"], lines
        assert any(BOB in line and client_addr(bob) in line for line in lines), lines
        assert any(EVE in line for line in lines), lines
        assert lines[-1] == "2 session(s) on 2 replica(s)", lines

    # Ended sessions leave the listing.
    wait_listed(a, set())
    wait_listed(b, set())


def test_kick_user_ends_the_session_on_the_other_replica(popgate, shared_redis):
    a, b = two_replicas(popgate, shared_redis)
    base = a.drop(BOB, message(1))
    with b.session(BOB) as bob, b.session(DAVE) as dave:
        assert bob.cmd("DELE 1").startswith(b"+OK")
        wait_listed(a, {BOB, DAVE})
        r = cli(a, "kick", "--user", BOB)
        assert r.returncode == 0, r.stderr.decode()
        out = r.stdout.decode()
        assert BOB in out and "1 session(s) asked to end" in out, out
        assert bob.line() == SYS_TEMP_KICK
        assert bob.rest_until_eof() == b""
        # Nothing was deleted, and the mailbox is free at once, on either replica.
        assert base in a.bases(BOB)
        with a.connect() as again:
            assert again.login(BOB, a.password(BOB)).startswith(b"+OK Logged in, 1 messages")
            assert again.cmd("QUIT").startswith(b"+OK")
        # Dave, on the same replica, was not touched.
        assert dave.cmd("STAT").startswith(b"+OK")
        b.wait_log('outcome="kicked"')
        wait_listed(a, {DAVE})


def test_kick_tenant_ends_that_tenants_sessions_on_every_replica(popgate, shared_redis):
    a, b = two_replicas(popgate, shared_redis)
    with a.session(BOB) as bob, b.session(DAVE) as dave, a.session(EVE) as eve:
        wait_listed(b, {BOB, DAVE, EVE})
        r = cli(b, "kick", "--tenant", "acme")
        assert r.returncode == 0, r.stderr.decode()
        assert "2 session(s) asked to end" in r.stdout.decode()
        assert bob.line() == SYS_TEMP_KICK
        assert dave.line() == SYS_TEMP_KICK
        assert eve.cmd("STAT").startswith(b"+OK"), "another tenant's session goes on"
        wait_listed(a, {EVE})
        # A kick that matches nothing is no error.
        r = cli(a, "kick", "--tenant", "acme")
        assert r.returncode == 0 and "0 session(s) asked to end" in r.stdout.decode()


def test_memory_locks_replica_lists_and_kicks_its_own_sessions(popgate):
    srv = replica(popgate)
    base = srv.drop(BOB, message(1))
    with srv.session(BOB) as bob, srv.session(EVE) as eve:
        assert bob.cmd("DELE 1").startswith(b"+OK")
        listing = wait_listed(srv, {BOB, EVE})
        assert len(listing["replicas"]) == 1
        r = cli(srv, "kick", "--user", BOB)
        assert r.returncode == 0, r.stderr.decode()
        assert bob.line() == SYS_TEMP_KICK
        assert base in srv.bases(BOB), "the DELE was not committed"
        with srv.session(BOB) as again:
            assert again.cmd("STAT").startswith(b"+OK 1 ")
            wait_listed(srv, {BOB, EVE})
        assert eve.cmd("NOOP").startswith(b"+OK")


def test_wrong_or_missing_token_is_refused(popgate, tmp_path):
    srv = replica(popgate)
    url = f"http://127.0.0.1:{srv.metrics_port}"
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    with srv.session(BOB) as bob:
        for cmd in (["who"], ["kick", "--user", BOB]):
            r = run_popgate([*cmd, "--url", url, "--token-file", str(wrong)])
            assert r.returncode == 3, r
            assert b"refused the token" in r.stderr, r.stderr
        # Raw requests without a token.
        for req in (b"GET /admin/sessions HTTP/1.0\r\n\r\n", b"POST /admin/kick?user=bob%40acme.example HTTP/1.0\r\n\r\n"):
            answer = raw_http(srv.metrics_port, req)
            assert answer.startswith(b"HTTP/1.1 401 "), answer
        assert bob.cmd("NOOP").startswith(b"+OK"), "nothing was kicked"
        # The right token, from a file, works.
        good = tmp_path / "token"
        good.write_text(TOKEN + "\n")
        r = run_popgate(["who", "--url", url, "--token-file", str(good), "--json"])
        assert r.returncode == 0, r.stderr
        assert [s["user"] for s in json.loads(r.stdout)["sessions"]] == [BOB]

    # A replica without a token keeps its admin endpoints off.
    open_srv = replica(popgate, token=None)
    r = run_popgate(["who", "--url", f"http://127.0.0.1:{open_srv.metrics_port}", "--token-file", str(wrong)])
    assert r.returncode == 3, r
    assert b"metrics.bearer_token" in r.stderr, r.stderr
    answer = raw_http(open_srv.metrics_port, b"GET /admin/sessions HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    # Its own config has no token to send either.
    r = cli(open_srv, "who")
    assert r.returncode == 2 and b"no token" in r.stderr, r

    # Nobody listening.
    r = run_popgate(["who", "--url", f"http://127.0.0.1:{free_port()}", "--token-file", str(wrong)])
    assert r.returncode == 1 and b"cannot reach" in r.stderr, r


def test_admin_is_not_reachable_on_the_pop3_port(popgate):
    srv = replica(popgate)
    with srv.session(BOB) as bob:
        for req in (
            f"GET /admin/sessions HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode(),
            f"POST /admin/kick?user=bob%40acme.example HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode(),
        ):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
                f = s.makefile("rb")
                assert f.readline().startswith(b"+OK"), "a POP3 greeting"
                s.sendall(req)
                answer = f.readline()
                assert answer.startswith(b"-ERR"), answer
                assert b"HTTP/" not in answer and BOB.encode() not in answer
        assert bob.cmd("NOOP").startswith(b"+OK"), "the POP3 port kicked nothing"
