"""A fleet on Redis Sentinel: the master is killed while popgate serves,
and logins resume by themselves, without losing mail or letting one
mailbox have two sessions.

The test starts its own master, replica and three sentinels on free ports
(Debian's redis-server and redis-sentinel); the shared Redis is never used.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest

from test_redis_locks import BOB, REQUIRED, free_port, message, redis_alive, resp, subjects

MASTER = "popgate-e2e"


class SentinelSet:
    def __init__(self, root):
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    def _spawn(self, name: str, args: list[str], port: int) -> None:
        self.procs[name] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_alive("127.0.0.1", port):
            assert time.monotonic() < deadline, f"{name} did not start"
            time.sleep(0.05)

    def start(self) -> "SentinelSet":
        base = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        for name, port, extra in (
            ("master", self.master_port, []),
            ("replica", self.replica_port, ["--replicaof", "127.0.0.1", str(self.master_port)]),
        ):
            d = self.root / name
            d.mkdir()
            self._spawn(name, base + ["--port", str(port), "--dir", str(d)] + extra, port)
        self.wait("the replica to sync", lambda: "master_link_status:up"
                  in resp("127.0.0.1", self.replica_port, "INFO", "replication"))
        for i, port in enumerate(self.sentinel_ports):
            d = self.root / f"sentinel{i}"
            d.mkdir()
            conf = d / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 4000\n"
            )
            self._spawn(f"sentinel{i}", ["redis-sentinel", str(conf)], port)
        for port in self.sentinel_ports:
            def ready(port=port):
                info = resp("127.0.0.1", port, "SENTINEL", "MASTER", MASTER)
                fields = dict(zip(info[::2], info[1::2]))
                return fields.get("num-other-sentinels") == "2" and fields.get("num-slaves") == "1"
            self.wait("the sentinels to find each other", ready)
        return self

    def wait(self, what, ok, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ok():
                    return
            except (OSError, RuntimeError):
                pass
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def current_master(self) -> int:
        host, port = resp("127.0.0.1", self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
        return int(port)

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        p.kill()
        p.wait(timeout=10)

    def stop(self) -> None:
        for p in self.procs.values():
            p.kill()
            p.wait(timeout=10)
        self.procs.clear()


@pytest.fixture
def sentinels(tmp_path):
    if not (shutil.which("redis-server") and shutil.which("redis-sentinel")):
        if REQUIRED:
            pytest.fail("POPGATE_REQUIRE_REDIS=1 but redis-server or redis-sentinel is missing")
        pytest.skip("redis-server or redis-sentinel is missing")
    d = tmp_path / "sentinel-set"
    d.mkdir()
    s = SentinelSet(d).start()
    yield s
    s.stop()


def sentinel_toml(s: SentinelSet, prefix: str) -> str:
    urls = ", ".join(f'"redis://127.0.0.1:{p}"' for p in s.sentinel_ports)
    return (f'\n[locks]\nbackend = "redis"\nsentinels = [{urls}]\nmaster_name = "{MASTER}"\n'
            f'ttl = "3s"\nkey_prefix = "{prefix}"\n')


def test_logins_resume_after_the_sentinel_master_dies(popgate, sentinels):
    extra = sentinel_toml(sentinels, f"pgtest-{uuid.uuid4().hex[:12]}")
    a = popgate(extra_toml=extra)
    shared = {name: {"store": {"kind": "maildir", "path": f"{a.root}/{name}/%d/%n/Maildir"}}
              for name in ("acme", "globex")}
    b = popgate(tenants=shared, extra_toml=extra)
    for i in range(3):
        a.drop(BOB, message(i))

    # Before: one session at a time across the two replicas.
    with a.session(BOB) as c:
        with b.connect() as other:
            assert other.login(BOB, b.password(BOB)).startswith(b"-ERR [IN-USE]")
        assert c.ok("DELE 1")
        assert c.cmd("QUIT").startswith(b"+OK")
    assert len(subjects(a.maildir(BOB))) == 2

    # A session is open on replica a while the master dies.
    held = a.session(BOB)
    resp("127.0.0.1", sentinels.master_port, "WAIT", "1", "2000")
    sentinels.kill("master")
    killed = time.monotonic()

    # Logins elsewhere come back by themselves, on both replicas.
    for srv, user in ((b, "dave@acme.example"), (a, "dave@acme.example")):
        deadline = time.monotonic() + 20
        while True:
            with srv.connect() as c:
                r = c.login(user, srv.password(user))
                if r.startswith(b"+OK"):
                    c.cmd("QUIT")
                    break
            assert r.startswith(b"-ERR [SYS/TEMP]"), r
            assert time.monotonic() < deadline, "logins did not resume after the failover"
            time.sleep(0.2)
    resumed = time.monotonic() - killed
    assert sentinels.current_master() == sentinels.replica_port
    print(f"logins resumed {resumed:.1f}s after the master was killed")

    # The session that held BOB's lock either kept it (then nobody else gets
    # the mailbox, and its delete commits) or lost it (then it is told, and
    # deletes nothing). Either way no mail it did not delete is gone.
    with b.connect() as other:
        second = other.login(BOB, b.password(BOB))
    if second.startswith(b"-ERR [IN-USE]"):
        assert held.ok("DELE 1")
        assert held.cmd("QUIT").startswith(b"+OK")
        assert len(subjects(a.maildir(BOB))) == 1
    else:
        assert second.startswith(b"+OK"), second
        # The lock was lost: the held session was told ([SYS/TEMP]) and
        # closed, or its QUIT is refused; it deletes nothing.
        try:
            answers = [held.cmd("DELE 1"), held.cmd("QUIT")]
        except (OSError, EOFError):
            answers = []
        assert not any(r.startswith(b"+OK Logging out, 1") for r in answers), answers
        assert len(subjects(a.maildir(BOB))) == 2
    held.close()
