"""Fleet-wide mailbox locks in Redis: several popgate processes, one Maildir
root, one Redis.

Most tests use the shared Redis at $POPGATE_TEST_REDIS (default
redis://127.0.0.1:6379), each under its own key prefix. Tests that stop or
restart Redis start a private `redis-server` on a free port; the shared one
is never stopped. Without a reachable Redis the tests are skipped, unless
POPGATE_REQUIRE_REDIS=1 (scripts/test sets it), where they fail.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from datetime import datetime
from urllib.parse import urlparse

import pytest

REDIS_URL = os.environ.get("POPGATE_TEST_REDIS", "redis://127.0.0.1:6379")
REQUIRED = os.environ.get("POPGATE_REQUIRE_REDIS", "1") == "1"

BOB = "bob@acme.example"
DAVE = "dave@acme.example"
EVE = "eve@globex.example"


# --------------------------------------------------------------------------
# a little RESP client, enough for GET/PTTL/PING


def resp(host: str, port: int, *args: str | bytes, password: str | None = None, timeout: float = 5.0):
    """Sends one command (after AUTH when given a password); returns the reply."""
    def encode(parts) -> bytes:
        out = b"*%d\r\n" % len(parts)
        for p in parts:
            p = p.encode() if isinstance(p, str) else p
            out += b"$%d\r\n%s\r\n" % (len(p), p)
        return out

    def read(f):
        kind, rest = f.read(1), f.readline()[:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [read(f) for _ in range(n)]
        raise RuntimeError(f"unexpected RESP {kind!r}{rest!r}")

    with socket.create_connection((host, port), timeout=timeout) as s:
        f = s.makefile("rb")
        if password is not None:
            s.sendall(encode(["AUTH", password]))
            read(f)
        s.sendall(encode(list(args)))
        return read(f)


def redis_alive(host: str, port: int) -> bool:
    try:
        return resp(host, port, "PING", timeout=1) == "PONG"
    except (OSError, RuntimeError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SHARED = urlparse(REDIS_URL)
SHARED_HOST, SHARED_PORT = SHARED.hostname or "127.0.0.1", SHARED.port or 6379


@pytest.fixture
def shared_redis():
    if not redis_alive(SHARED_HOST, SHARED_PORT):
        if REQUIRED:
            pytest.fail(f"POPGATE_REQUIRE_REDIS=1 but no Redis answers at {REDIS_URL}")
        pytest.skip(f"no Redis answers at {REDIS_URL}")
    return REDIS_URL


class PrivateRedis:
    """A redis-server of the test's own, without persistence."""

    def __init__(self, workdir):
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_alive("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        if REQUIRED:
            pytest.fail("POPGATE_REQUIRE_REDIS=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    d = tmp_path / "redis"
    d.mkdir()
    r = PrivateRedis(d)
    r.start()
    yield r
    r.stop()


def locks_toml(url: str, prefix: str, ttl: str = "30s", **more) -> str:
    text = f'\n[locks]\nbackend = "redis"\nurl = "{url}"\nttl = "{ttl}"\nkey_prefix = "{prefix}"\n'
    for k, v in more.items():
        text += f'{k} = "{v}"\n'
    return text


@pytest.fixture
def fleet(popgate):
    """Factory: `fleet(n, url, ttl=...)` starts n popgate processes that
    share the first one's Maildir roots and one Redis key prefix. Every
    process logs the lock module's debug lines (the lock audit reads them)."""

    def make(n: int, url: str, ttl: str = "30s", prefix: str | None = None):
        prefix = prefix or f"pgtest-{uuid.uuid4().hex[:12]}"
        extra = locks_toml(url, prefix, ttl)
        server = {"log_level": "info,backend_redis=debug"}
        first = popgate(server=server, extra_toml=extra)
        procs = [first]
        for _ in range(n - 1):
            shared_store = {
                name: {"store": {"kind": "maildir", "path": f"{first.root}/{name}/%d/%n/Maildir"}}
                for name in ("acme", "globex")
            }
            procs.append(popgate(server=server, tenants=shared_store, extra_toml=extra))
        for p in procs:
            p.redis_prefix = prefix
        return procs

    return make


def lock_key(prefix: str, mailbox: str) -> str:
    """The lock of a mailbox, by the store's name for it (a Maildir's path)."""
    return f"{prefix}:{{{mailbox}}}:lock"


def fence_of(token: str | None) -> int:
    assert token, "no lock key"
    return int(token.split(":", 1)[0])


def message(i: int) -> bytes:
    return b"Subject: m%d\r\nMessage-Id: <%d@test>\r\n\r\nbody %d\r\n" % (i, i, i)


def subjects(maildir) -> set[bytes]:
    out = set()
    for sub in ("new", "cur"):
        d = maildir / sub
        if d.is_dir():
            for name in os.listdir(d):
                out.add((d / name).read_bytes().split(b"\r\n", 1)[0])
    return out


def login_until_ok(srv, user: str, timeout: float = 15.0):
    """Logs in, retrying while the mailbox is in use; returns the client."""
    deadline = time.monotonic() + timeout
    while True:
        c = srv.connect()
        r = c.login(user, srv.password(user))
        if r.startswith(b"+OK"):
            return c
        c.close()
        assert r.startswith(b"-ERR [IN-USE]"), r
        assert time.monotonic() < deadline, f"{user} still in use after {timeout}s"
        time.sleep(0.1)


# --------------------------------------------------------------------------


def test_a_second_process_sees_the_mailbox_in_use_until_quit(fleet, shared_redis):
    a, b = fleet(2, shared_redis)
    a.drop(BOB, message(1))
    key = lock_key(a.redis_prefix, f"maildir:{a.maildir(BOB)}")
    with a.session(BOB) as first, b.connect() as second:
        token = resp(SHARED_HOST, SHARED_PORT, "GET", key)
        assert fence_of(token) > 0
        assert 0 < resp(SHARED_HOST, SHARED_PORT, "PTTL", key) <= 30_000
        r = second.login(BOB, "secret")
        assert r.startswith(b"-ERR [IN-USE] "), r
        # Another mailbox on the same process is free.
        with b.session(DAVE) as other:
            assert other.cmd("STAT").startswith(b"+OK")
            assert other.cmd("QUIT").startswith(b"+OK")
        assert first.cmd("QUIT").startswith(b"+OK")
        first.rest_until_eof()
        assert resp(SHARED_HOST, SHARED_PORT, "GET", key) is None, "QUIT releases the lock"
        assert second.login(BOB, "secret").startswith(b"+OK Logged in, 1 messages")
        assert fence_of(resp(SHARED_HOST, SHARED_PORT, "GET", key)) > fence_of(token), "fences grow"
        assert second.cmd("QUIT").startswith(b"+OK")


def test_a_dropped_connection_releases_the_lock_for_the_fleet(fleet, shared_redis):
    a, b = fleet(2, shared_redis)
    c = a.session(BOB)
    c.close()
    login_until_ok(b, BOB, timeout=10).close()


def test_a_paused_holder_loses_the_mailbox_and_deletes_nothing(fleet, shared_redis):
    a, b = fleet(2, shared_redis, ttl="2s")
    for i in (1, 2, 3):
        a.drop(BOB, message(i))
    key = lock_key(a.redis_prefix, f"maildir:{a.maildir(BOB)}")

    stale = a.session(BOB)
    assert stale.ok("DELE 1") and stale.ok("DELE 3")
    stale_fence = fence_of(resp(SHARED_HOST, SHARED_PORT, "GET", key))
    os.kill(a.pid, signal.SIGSTOP)
    try:
        # While the holder is frozen its lock expires; the other process
        # takes the mailbox and commits.
        newer = login_until_ok(b, BOB, timeout=10)
        new_fence = fence_of(resp(SHARED_HOST, SHARED_PORT, "GET", key))
        assert new_fence > stale_fence
        assert newer.ok("DELE 2")
        assert newer.cmd("QUIT") == b"+OK Logging out, 1 messages deleted."
        newer.rest_until_eof()
        # The stale client's QUIT waits in the socket until the holder resumes.
        stale.send("QUIT\r\n")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    r = stale.line()
    assert r.startswith(b"-ERR [SYS/TEMP]"), r
    stale.rest_until_eof()
    assert subjects(a.maildir(BOB)) == {b"Subject: m1", b"Subject: m3"}, "only the newer holder's DELE happened"
    assert int((a.maildir(BOB) / "popgate-fence").read_text()) == new_fence
    assert resp(SHARED_HOST, SHARED_PORT, "GET", key) is None, "the stale release spared nothing it did not own"
    a.wait_log("mailbox lock lost")
    # Both processes go on serving the mailbox.
    with login_until_ok(a, BOB) as c:
        assert c.cmd("STAT").startswith(b"+OK 2 ")
        assert c.cmd("QUIT").startswith(b"+OK")


def test_a_resumed_holder_answers_nothing_while_another_holds_the_mailbox(fleet, shared_redis):
    """A process stopped past its ttl comes back with commands waiting in its
    sockets: it must not answer them as the holder (found by scripts/chaos,
    which saw a resumed replica answer +OK for up to 2 s while another
    session held the mailbox), whichever of its tasks runs first."""
    a, b = fleet(2, shared_redis, ttl="1s")
    for i in (1, 2):
        a.drop(BOB, message(i))
    stales = [a.session(BOB)]
    for user in (DAVE, EVE):
        stales.append(a.session(user))
    os.kill(a.pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # past the ttl: the locks expire in Redis
        newer = [login_until_ok(b, user, timeout=10) for user in (BOB, DAVE, EVE)]
        for c in stales:
            c.send("STAT\r\nRETR 1\r\n")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    for c in stales:
        r = c.line()
        assert r.startswith(b"-ERR [SYS/TEMP]"), f"a stale holder answered {r!r}"
        c.rest_until_eof()
    for c in newer:
        assert c.cmd("STAT").startswith(b"+OK")
        c.ok("QUIT")


def test_the_store_refuses_a_fence_older_than_one_committed(fleet, shared_redis):
    """The last line of defence, for a lock lost between the check and the
    commit: the Maildir keeps the newest committed fence and refuses older."""
    (a,) = fleet(1, shared_redis)
    a.drop(BOB, message(1))
    key = lock_key(a.redis_prefix, f"maildir:{a.maildir(BOB)}")
    with a.session(BOB) as c:
        fence = fence_of(resp(SHARED_HOST, SHARED_PORT, "GET", key))
        # As if a newer holder had committed meanwhile.
        (a.maildir(BOB) / "popgate-fence").write_text(f"{fence + 1}\n")
        assert c.ok("DELE 1")
        r = c.cmd("QUIT")
        assert r.startswith(b"-ERR [SYS/TEMP]"), r
    assert subjects(a.maildir(BOB)) == {b"Subject: m1"}


def test_redis_down_at_login_and_back(fleet, private_redis):
    (a,) = fleet(1, private_redis.url, ttl="3s")
    a.drop(BOB, message(1))
    private_redis.stop()
    with a.connect() as c:
        started = time.monotonic()
        r = c.login(BOB, "secret")
        assert r.startswith(b"-ERR [SYS/TEMP]"), r
        assert time.monotonic() - started < 10
        # Still in AUTHORIZATION: the client may try again.
        assert c.cmd("NOOP").startswith(b"-ERR")
        private_redis.start()
        deadline = time.monotonic() + 15
        while not (r := c.login(BOB, "secret")).startswith(b"+OK"):
            assert r.startswith(b"-ERR [SYS/TEMP]"), r
            assert time.monotonic() < deadline, "no login after Redis came back"
            time.sleep(0.2)
        assert c.ok("DELE 1")
        assert c.cmd("QUIT") == b"+OK Logging out, 1 messages deleted."


def test_redis_restarted_mid_session_ends_it_without_deleting(fleet, private_redis):
    (a,) = fleet(1, private_redis.url, ttl="2s")
    a.drop(BOB, message(1))
    c = a.session(BOB)
    assert c.ok("DELE 1")
    # A restart without persistence forgets the lock: someone else could take
    # it, so the session must not commit.
    private_redis.stop()
    private_redis.start()
    r = c.line()  # unsolicited, once the renewal finds the key gone
    assert r == b"-ERR [SYS/TEMP] Mailbox lock lost; no messages were deleted.", r
    c.rest_until_eof()
    c.close()
    assert subjects(a.maildir(BOB)) == {b"Subject: m1"}
    with login_until_ok(a, BOB) as c2:
        assert c2.ok("DELE 1")
        assert c2.cmd("QUIT") == b"+OK Logging out, 1 messages deleted."
    assert subjects(a.maildir(BOB)) == set()


def test_lock_settings_are_checked_before_listening(popgate):
    srv = popgate(extra_toml='\n[locks]\nbackend = "redis"\n', start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"locks.url" in r.stderr, r.stderr
    srv.extra_toml = locks_toml("redis://127.0.0.1:1", "p", ttl="100ms")
    srv.write_config()
    r = srv.check_config()
    assert r.returncode == 2 and b"locks.ttl" in r.stderr, r.stderr
    # The password comes from the environment; Redis need not be up to start.
    srv.extra_toml = locks_toml("redis://127.0.0.1:1", "p", ttl="5s")
    srv.write_config()
    r = srv.check_config(env={"POPGATE_LOCKS__URL": "redis://:pw@127.0.0.1:1"})
    assert r.returncode == 0, r.stderr
    srv.env["POPGATE_LOCKS__URL"] = "redis://:s3cret@127.0.0.1:1"
    srv.start()
    with srv.connect() as c:
        assert c.login(BOB, "secret").startswith(b"-ERR [SYS/TEMP]")
    assert "s3cret" not in srv.log()


# --------------------------------------------------------------------------
# stress

STRESS_SECONDS = 20
MAILBOXES = [BOB, DAVE, EVE]
PER_MAILBOX = 400
WORKERS_PER_PROCESS = 3

# tracing's text format: TIMESTAMP LEVEL [session{...}:] target: message fields...
_LOG_LINE = re.compile(
    r"^(?P<ts>\S+)\s+\w+\s+(?:\S+\{[^}]*\}:\s+)?backend_redis\S*: (?P<event>lock acquired|lock releasing|mailbox lock lost)"
    r".*?mailbox=\"?(?P<mailbox>[^\s\"]+)\"? fence=(?P<fence>\d+)"
)


def parse_ts(text: str) -> float:
    # 2026-11-26T17:41:00.123456Z
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def audit_intervals(logs: list[str]) -> dict[str, list[tuple[float, float, int]]]:
    """mailbox -> [(acquired, released, fence)] from the processes' debug logs."""
    starts: dict[tuple[str, int], float] = {}
    out: dict[str, list[tuple[float, float, int]]] = {}
    for text in logs:
        for line in text.splitlines():
            m = _LOG_LINE.match(line)
            if not m:
                continue
            mailbox, fence, ts = m["mailbox"], int(m["fence"]), parse_ts(m["ts"])
            if m["event"] == "lock acquired":
                starts[(mailbox, fence)] = ts
            else:
                start = starts.pop((mailbox, fence), None)
                if start is not None:
                    out.setdefault(mailbox, []).append((start, ts, fence))
    return out


def test_stress_three_processes_share_mailboxes_without_overlap(fleet, shared_redis):
    procs = fleet(3, shared_redis, ttl="5s")
    first = procs[0]
    for user in MAILBOXES:
        for i in range(PER_MAILBOX):
            first.drop(user, message(i))
    initial = {user: subjects(first.maildir(user)) for user in MAILBOXES}
    assert all(len(s) == PER_MAILBOX for s in initial.values())

    lock = threading.Lock()
    committed: dict[str, list[set[bytes]]] = {u: [] for u in MAILBOXES}  # what each +OK QUIT deleted
    holding: dict[str, list[tuple[float, float]]] = {u: [] for u in MAILBOXES}  # client-side intervals
    counts = {"logins": 0, "in_use": 0, "quit_ok": 0, "quit_err": 0, "dropped": 0, "rset": 0}
    errors: list[str] = []
    stop_at = time.monotonic() + STRESS_SECONDS

    def count(what: str) -> None:
        with lock:
            counts[what] += 1

    def one_session(rng: random.Random, srv) -> None:
        user = rng.choice(MAILBOXES)
        with srv.connect() as c:
            r = c.login(user, srv.password(user))
            if r.startswith(b"-ERR [IN-USE]"):
                count("in_use")
                return
            assert r.startswith(b"+OK"), r
            got = time.monotonic()
            count("logins")
            # Number -> subject, from the headers (TOP n 0).
            listing = c.listing("LIST")
            numbers = [int(line.split()[0]) for line in listing]
            subject = {}
            marked: set[int] = set()
            for _ in range(rng.randint(1, 4)):
                action = rng.random()
                if numbers and action < 0.7:
                    n = rng.choice(numbers)
                    if n not in subject:
                        assert c.cmd(f"TOP {n} 0").startswith(b"+OK")
                        subject[n] = c.body().split(b"\r\n", 1)[0]
                    r = c.cmd(f"DELE {n}")
                    if n in marked:
                        assert r.startswith(b"-ERR"), r
                    else:
                        assert r.startswith(b"+OK"), r
                        marked.add(n)
                elif action < 0.8:
                    assert c.cmd("RSET").startswith(b"+OK")
                    marked.clear()
                    count("rset")
                else:
                    assert c.cmd("NOOP").startswith(b"+OK")
                time.sleep(rng.random() * 0.05)
            ending = rng.random()
            end = time.monotonic()
            if ending < 0.25:
                # Drop the connection: nothing may be deleted.
                with lock:
                    holding[user].append((got, end))
                count("dropped")
                return
            r = c.cmd("QUIT")
            with lock:
                holding[user].append((got, end))
                if r.startswith(b"+OK"):
                    counts["quit_ok"] += 1
                    if marked:
                        assert r == b"+OK Logging out, %d messages deleted." % len(marked), r
                        committed[user].append({subject[n] for n in marked})
                else:
                    counts["quit_err"] += 1

    def worker(seed: int, srv) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            try:
                one_session(rng, srv)
            except Exception as e:  # noqa: BLE001 - collected and reported below
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                return
            time.sleep(rng.random() * 0.02)

    threads = [
        threading.Thread(target=worker, args=(i * 100 + j, srv))
        for i, srv in enumerate(procs)
        for j in range(WORKERS_PER_PROCESS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=STRESS_SECONDS + 60)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors[:5]
    print("stress:", counts, "left:", {u: len(subjects(first.maildir(u))) for u in MAILBOXES})
    assert counts["logins"] > 20 and counts["in_use"] > 0 and counts["quit_ok"] > 5, counts

    for user in MAILBOXES:
        claims = committed[user]
        every_claim = [s for claim in claims for s in claim]
        assert len(every_claim) == len(set(every_claim)), f"{user}: a message deleted by two committed QUITs"
        final = subjects(first.maildir(user))
        assert final == initial[user] - set(every_claim), (
            f"{user}: present {len(final)}, expected {len(initial[user] - set(every_claim))}"
        )
        # Client-side audit: no two clients were logged in at once.
        spans = sorted(holding[user])
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            assert e1 <= s2, f"{user}: two sessions overlapped: {(s1, e1)} and {(s2, e2)}"

    # Server-side audit: every process's acquire .. release of each mailbox,
    # from its debug log; no two holders at once, fences growing over time.
    time.sleep(0.5)
    intervals = audit_intervals([p.log() for p in procs])
    assert set(intervals) >= {f"maildir:{first.maildir(u)}" for u in MAILBOXES}, intervals.keys()
    audited = sum(len(s) for s in intervals.values())
    print("lock audit:", {m: len(s) for m, s in intervals.items()})
    assert audited >= counts["logins"], (audited, counts)
    for mailbox, spans in intervals.items():
        spans.sort()
        for (s1, e1, f1), (s2, e2, f2) in zip(spans, spans[1:]):
            assert e1 <= s2, f"{mailbox}: holders {f1} and {f2} overlapped"
            assert f2 > f1, f"{mailbox}: fence {f2} after {f1}"
    for p in procs:
        assert "mailbox lock lost" not in p.log()
