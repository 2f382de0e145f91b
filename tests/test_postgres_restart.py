"""End-to-end: the database goes away under a running popgate and comes back.

Uses a PRIVATE PostgreSQL instance (initdb + pg_ctl as the postgres user,
in a temporary directory, on a free port): the shared one on 5432 is never
stopped. While it is down, sessions get -ERR [SYS/TEMP] and nothing is
lost; when it is back, new sessions work without restarting popgate.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port, run_popgate
from test_metrics import backend_up, wait_backend
from popclient import crlf, wire_body
from test_postgres import setup_globex_on_postgres


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip(f"PostgreSQL server binaries ({name}) are not installed")
    return found[-1]


def as_postgres(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *cmd], capture_output=True, timeout=timeout, cwd="/"
    )


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:<port>, trust auth."""

    def __init__(self):
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no postgres user")
        self.dir = tempfile.mkdtemp(prefix="popgate-pg-")
        os.chmod(self.dir, 0o700)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        r = as_postgres(pg_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        assert r.returncode == 0, r.stderr.decode()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        r = as_postgres(pg_bin("pg_ctl"), "-D", self.data, "-o", opts, "-l", os.path.join(self.dir, "log"), "-w", "start")
        assert r.returncode == 0, r.stderr.decode() + r.stdout.decode()

    def stop(self, mode: str = "fast") -> None:
        r = as_postgres(pg_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop")
        assert r.returncode == 0, r.stderr.decode() + r.stdout.decode()

    def destroy(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            as_postgres(pg_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_pg():
    pg = PrivatePostgres()
    pg.start()
    yield pg
    pg.destroy()


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=15) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode().strip()


def test_database_restart_mid_run(popgate, private_pg):
    srv = setup_globex_on_postgres(
        popgate, "popgate", url=private_pg.url, start=False, connect_timeout="2s", statement_timeout="5s"
    )
    metrics_port = free_port()
    srv.extra_toml += f'\n[metrics]\naddress = "127.0.0.1:{metrics_port}"\nbackend_check_interval = "200ms"\n'
    srv.write_config()
    srv.start()
    assert readyz(metrics_port) == (200, "ready")
    user = "bob@globex.example"
    msgs = [b"Subject: one\n\nfirst\n", b"Subject: two\r\n\r\nsecond\r\n", b"Subject: three\n\nthird\n"]
    uidls = [srv.deliver(user, m) for m in msgs]
    # The Maildir tenant is not affected by any of this.
    srv.deliver("bob@acme.example", b"Subject: maildir\n\nm\n")

    # A session that is in TRANSACTION when the database goes away.
    before = srv.session(user)
    assert before.retr(1)[1] == wire_body(msgs[0])
    assert before.ok("DELE 1")

    private_pg.stop()
    # The replica stays ready (acme is served); the operator sees globex's
    # backends down in popgate_backend_up and on /backends.
    wait_backend(metrics_port, "globex", "store", "0")
    wait_backend(metrics_port, "globex", "directory", "0")
    assert readyz(metrics_port) == (200, "ready")
    assert backend_up(metrics_port, "acme", "store") == "1"

    # Reading a message: [SYS/TEMP], and the session goes on.
    r = before.cmd("RETR 2")
    assert r.startswith(b"-ERR [SYS/TEMP]"), r
    assert before.cmd("NOOP") == b"+OK"
    # QUIT cannot commit: [SYS/TEMP], nothing deleted.
    r = before.cmd("QUIT")
    assert r.startswith(b"-ERR [SYS/TEMP]"), r
    before.close()

    # New logins: the directory is down too.
    with srv.connect() as c:
        r = c.login(user, "globex-secret")
        assert r.startswith(b"-ERR [SYS/TEMP]"), r
    # Delivery fails (the MTA retries later); nothing half-written.
    r = run_popgate(["deliver", "--config", str(srv.config_path), "--user", user], input=b"Subject: lost?\n\n")
    assert r.returncode == 75, "EX_TEMPFAIL: the MTA keeps the message queued"
    # The other tenant keeps working.
    with srv.session("bob@acme.example") as c:
        assert c.cmd("STAT").startswith(b"+OK 1 ")
        c.ok("QUIT")

    private_pg.start()

    # Service resumes without restarting popgate; nothing was lost.
    deadline = time.monotonic() + 20
    while True:
        c = srv.connect()
        r = c.login(user, "globex-secret")
        if r.startswith(b"+OK") or time.monotonic() > deadline:
            break
        c.close()
        time.sleep(0.3)
    assert r.startswith(b"+OK"), r
    assert readyz(metrics_port)[0] == 200
    wait_backend(metrics_port, "globex", "store", "1")
    with c:
        assert c.listing("UIDL") == [b"%d %s" % (i + 1, u.encode()) for i, u in enumerate(uidls)]
        assert c.listing("LIST") == [b"%d %d" % (i + 1, len(crlf(m))) for i, m in enumerate(msgs)]
        for i, m in enumerate(msgs):
            assert c.retr(i + 1)[1] == wire_body(m)
        assert c.ok("DELE 1")
        assert c.cmd("QUIT").startswith(b"+OK")
    new = srv.deliver(user, b"Subject: after\n\nback\n")
    with srv.session(user) as c:
        assert c.listing("UIDL") == [b"1 " + uidls[1].encode(), b"2 " + uidls[2].encode(), b"3 " + new.encode()]
        c.ok("QUIT")
    assert "PostgreSQL" in srv.log() or "database" in srv.log()
