"""Memory under abuse (issue 14): for a bounded time, hostile clients of
every kind the abuse tests meet one at a time come back again and again,
all at once, next to good sessions. The good sessions keep completing, and
once the hostile clients are gone the server's RSS is back within a few MB
of where it was before them. The figures are printed.

The hostile kinds: silent after connecting, a login dripped a byte at a
time, a big RETR never read, a big RETR reset (RST) part way, TLS garbage
and truncated handshakes on the TLS port, PROXY headers on a plain port,
and overlong lines before and after login."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time

from conftest import free_port
from popclient import Pop3, wire_body
from test_abuse import proxy_v2
from test_tls import make_cert

SOAK_SECONDS = 40
BIG = 8 * 1024 * 1024
# Mailboxes with one big message each: a never-reading or a resetting client holds one at a time.
BIG_USERS = {"big@acme.example": "bigpw", "compat1@acme.example": "compat", "compat2@acme.example": "compat"}
GOOD = [("dave@acme.example", "davepw"), ("bob@globex.example", "globex-secret"), ("eve@globex.example", "evepw")]
SMALL = b"Subject: good\r\n\r\n" + b"a good session's message\r\n" * 40


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def big_message(user: str) -> bytes:
    line = b"%s: a line of a big message, never read to the end .....\n" % user.encode()
    return b"Subject: big\n\n" + line * (BIG // len(line))


class Soak:
    def __init__(self, srv, tls_port: int):
        self.srv, self.tls_port = srv, tls_port
        self.stop = threading.Event()
        self.counts: dict[str, int] = {}
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def count(self, name: str) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def loop(self, name: str, fn, *args) -> threading.Thread:
        def run():
            rng = random.Random(name)
            while not self.stop.is_set():
                try:
                    fn(rng, *args)
                    self.count(name)
                except (OSError, EOFError):
                    self.count(name)  # the server closed on it: what it should do, sooner or later
                except AssertionError as e:
                    with self.lock:
                        self.failures.append(f"{name}: {e}")
        t = threading.Thread(target=run, daemon=True, name=name)
        t.start()
        return t

    def raw(self, port: int | None = None) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port or self.srv.port), timeout=10)

    def hold(self, sock: socket.socket, seconds: float) -> None:
        """Keeps a connection without reading, until `seconds` or the end."""
        self.stop.wait(seconds)
        sock.close()

    # -- the hostile kinds ----------------------------------------------
    def silent(self, rng):
        self.hold(self.raw(), rng.uniform(1, 6))

    def drip(self, rng):
        s = self.raw()
        for b in b"USER dave@acme.example\r\nPASS dav":
            if self.stop.wait(0.3):
                break
            s.sendall(bytes([b]))
        s.close()

    def never_reads(self, rng, user, password):
        c = Pop3(self.srv.port)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        r = c.login(user, password)
        if not r.startswith(b"+OK"):
            c.close()
            self.stop.wait(0.3)  # the other hostile kind has this mailbox now
            return
        c.send(b"RETR 1\r\n")
        self.hold(c.sock, rng.uniform(2, 8))

    def resets_mid_retr(self, rng, user, password):
        c = Pop3(self.srv.port)
        r = c.login(user, password)
        if r.startswith(b"+OK"):
            c.send(b"RETR 1\r\n")
            got, want = 0, rng.randint(1, 4 * 1024 * 1024)
            while got < want:
                chunk = c.sock.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        self.stop.wait(0.1)

    def tls_garbage(self, rng):
        s = self.raw(self.tls_port)
        if rng.random() < 0.5:
            s.sendall(os.urandom(rng.randint(1, 20000)))
        else:
            # A ClientHello record header promising 16 kB, then a few bytes, then nothing.
            s.sendall(b"\x16\x03\x01\x40\x00\x01\x00\x3f\xfc\x03\x03" + os.urandom(rng.randint(0, 200)))
            self.stop.wait(rng.uniform(0, 3))
        s.close()

    def proxy_on_plain(self, rng):
        s = self.raw()
        s.sendall(proxy_v2(f"192.0.2.{rng.randint(1, 254)}", 40000) if rng.random() < 0.5
                  else b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 110\r\n")
        s.settimeout(5)
        while s.recv(4096):
            pass
        s.close()

    def overlong(self, rng):
        c = Pop3(self.srv.port)
        if rng.random() < 0.5:
            c.login("frank", "frankpw")  # after login, unless another overlong client has frank now
        c.send(b"NOOP " + b"x" * rng.randint(10_000, 1_000_000))
        c.sock.settimeout(5)
        while c.sock.recv(65536):
            pass
        c.close()

    # -- the good sessions ----------------------------------------------
    def good(self, rng, user, password):
        start = time.monotonic()
        try:
            with Pop3(self.srv.port) as c:
                c.login_ok(user, password)
                assert c.cmd("STAT").startswith(b"+OK 1 "), "the good mailbox has its one message"
                assert c.retr(1)[1] == wire_body(SMALL)
                c.ok("QUIT")
        except (OSError, EOFError) as e:
            raise AssertionError(f"a good session of {user} failed: {e!r}") from e
        took = time.monotonic() - start
        assert took < 5, f"a good session of {user} took {took:.1f}s"
        self.stop.wait(0.05)


def test_hostile_clients_leave_memory_where_it_was_and_good_sessions_go_on(popgate, tmp_path, capsys):
    cert, key = make_cert(tmp_path, "soak", "pop.test", ["pop.test", "127.0.0.1"])
    tls_port = free_port()
    srv = popgate(
        server={"login_timeout": "4s", "auth_timeout": "3s", "send_timeout": "3s", "command_timeout": "3s",
                "max_connections_per_ip": 1000, "max_bad_commands": 5},
        extra_toml=(f'\n[[listeners]]\naddress = "127.0.0.1:{tls_port}"\ntls = "implicit"\n'
                    f'default_tenant = "acme"\n\n[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n'),
    )
    for user in BIG_USERS:
        srv.drop(user, big_message(user), sizes=True)
    for user, _ in GOOD:
        srv.drop(user, SMALL)
    soak = Soak(srv, tls_port)

    # The baseline: good sessions and one big RETR read to the end.
    for user, password in GOOD * 3:
        soak.good(random.Random(0), user, password)
    with srv.session("big@acme.example", "bigpw") as c:
        assert len(c.retr(1)[1]) > BIG - 1000
        c.ok("QUIT")
    time.sleep(1)
    baseline = rss_kb(srv.pid)

    hostile = []
    for _ in range(4):
        hostile += [soak.loop("silent", soak.silent), soak.loop("slow-drip", soak.drip),
                    soak.loop("tls-garbage", soak.tls_garbage), soak.loop("proxy-on-plain", soak.proxy_on_plain),
                    soak.loop("overlong-line", soak.overlong)]
    users = list(BIG_USERS.items())
    for i, (user, password) in enumerate(users):
        hostile.append(soak.loop("never-reads-big-retr", soak.never_reads, user, password))
        hostile.append(soak.loop("resets-mid-retr", soak.resets_mid_retr, *users[(i + 1) % len(users)]))
    good = [soak.loop("good-session", soak.good, u, p) for u, p in GOOD]
    peak = baseline
    start = time.monotonic()
    while time.monotonic() - start < SOAK_SECONDS:
        time.sleep(0.5)
        peak = max(peak, rss_kb(srv.pid))
    good_during = soak.counts.get("good-session", 0)
    soak.stop.set()
    for t in hostile + good:
        t.join(15)
    # The hostile connections are closed on the client side; the server notices
    # within its timeouts. Then the RSS is measured again.
    time.sleep(4)
    after = rss_kb(srv.pid)
    for user, password in GOOD:
        soak.good(random.Random(1), user, password)
    assert srv.proc.poll() is None, "the server is still running"

    counts = dict(sorted(soak.counts.items()))
    with capsys.disabled():
        print(f"\nmemory soak ({SOAK_SECONDS} s): RSS baseline {baseline / 1024:.1f} MB, peak {peak / 1024:.1f} MB, "
              f"after {after / 1024:.1f} MB ({(after - baseline) / 1024:+.1f} MB); "
              f"good sessions {good_during}; hostile connections "
              + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "good-session"))
    assert soak.failures == [], soak.failures[:5]
    assert good_during >= SOAK_SECONDS, f"only {good_during} good sessions completed in {SOAK_SECONDS} s"
    for kind in ("silent", "slow-drip", "never-reads-big-retr", "resets-mid-retr", "tls-garbage",
                 "proxy-on-plain", "overlong-line"):
        assert counts.get(kind, 0) >= 3, f"too few {kind} clients: {counts}"
    assert after - baseline < 6 * 1024, f"RSS {baseline} kB before the hostile clients, {after} kB after"
    assert peak - baseline < 64 * 1024, f"peak RSS {peak} kB against a baseline of {baseline} kB"
