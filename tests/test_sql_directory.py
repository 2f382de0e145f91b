"""End-to-end: a tenant whose users are rows of a Postfix Admin `mailbox`
table in MariaDB, read with the provider's own Dovecot `password_query`
(auth kind "sql"), next to a passwd-file tenant.

Each test starts a private MariaDB (mariadb-install-db and mariadbd from
Debian's mariadb-server, on a free port with a temporary data directory)
and stops it at teardown.
"""

from __future__ import annotations

import base64
import os
import poplib
import shutil
import signal
import subprocess
import time

import pytest

from conftest import free_port, run_popgate

# Postfix Admin's dovecot-sql.conf.ext, as providers have it.
POSTFIXADMIN_QUERY = "SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active = '1'"
MAILBOX = """
CREATE TABLE mailbox (
  username varchar(255) NOT NULL PRIMARY KEY,
  password varchar(255) NOT NULL,
  name varchar(255) NOT NULL DEFAULT '',
  maildir varchar(255) NOT NULL DEFAULT '',
  quota bigint NOT NULL DEFAULT 0,
  local_part varchar(255) NOT NULL,
  domain varchar(255) NOT NULL,
  created datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  modified datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  active tinyint(1) NOT NULL DEFAULT 1
);
"""


class MariaDb:
    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.proc = None

    def start(self):
        for tool in ("mariadb-install-db", "mariadbd", "mariadb"):
            assert shutil.which(tool), f"{tool} missing: scripts/test installs mariadb-server"
        data = self.root / "data"
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", *user,
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.root / 'sock'}",
             f"--pid-file={self.root / 'pid'}", f"--log-error={self.root / 'error.log'}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--innodb-buffer-pool-size=16M",
             "--skip-log-bin", *user],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while self.sql("SELECT 1", check=False).returncode != 0:
            assert self.proc.poll() is None, (self.root / "error.log").read_text()
            assert time.monotonic() < deadline, "mariadbd is not answering after 60 s"
            time.sleep(0.1)

    def sql(self, text: str, db: str = "", check: bool = True):
        r = subprocess.run(
            ["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{self.port}", "-uroot", "-N", "-B", *([db] if db else [])],
            input=text.encode(), capture_output=True, timeout=60,
        )
        if check:
            assert r.returncode == 0, r.stderr.decode()
        return r

    def url(self, db: str) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{db}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture
def mariadb(tmp_path):
    root = tmp_path / "mariadb"
    root.mkdir()
    db = MariaDb(root)
    try:
        db.start()
        yield db
    finally:
        db.stop()


def hashed(scheme: str, password: str) -> str:
    r = run_popgate(["pw", "--scheme", scheme], input=password.encode() + b"\n")
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


def postfix_admin(mariadb) -> None:
    """globex.example's mailboxes as Postfix Admin writes them: one active
    user with a bare crypt hash (no {SCHEME}), one with a prefixed one, one
    inactive."""
    rows = [
        ("sqlbob@globex.example", hashed("SHA512-CRYPT", "bob's secret").removeprefix("{SHA512-CRYPT}"), 1),
        ("sqlann@globex.example", hashed("BLF-CRYPT", "ann pw"), 1),
        ("gone@globex.example", hashed("BLF-CRYPT", "gone pw"), 0),
    ]
    values = ", ".join(
        f"('{u}', '{p}', '{u.split('@')[0]}', 'globex.example', {a})" for u, p, a in rows
    )
    mariadb.sql(
        "CREATE DATABASE postfix; USE postfix;" + MAILBOX
        + f"INSERT INTO mailbox (username, password, local_part, domain, active) VALUES {values};"
    )


def sql_tenant(mariadb, **extra) -> dict:
    return {"globex": {"auth": {"kind": "sql", "url": mariadb.url("postfix"),
                                "password_query": POSTFIXADMIN_QUERY, "query_timeout": "2s",
                                "connect_timeout": "1s", **extra}}}


def login(srv, user: str, password: str) -> poplib.POP3:
    pop = poplib.POP3("127.0.0.1", srv.port, timeout=10)
    pop.user(user)
    pop.pass_(password)
    return pop


def refused(srv, user: str, password: str) -> str:
    pop = poplib.POP3("127.0.0.1", srv.port, timeout=10)
    try:
        pop.user(user)
        pop.pass_(password)
    except poplib.error_proto as e:
        return e.args[0].decode()
    finally:
        pop.close()
    raise AssertionError(f"{user!r} logged in with {password!r}")


def refused_sasl(srv, user: str, password: str) -> str:
    """AUTH PLAIN, whose login may hold spaces (USER's may not)."""
    pop = poplib.POP3("127.0.0.1", srv.port, timeout=10)
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    try:
        pop._shortcmd(f"AUTH PLAIN {token}")
    except poplib.error_proto as e:
        return e.args[0].decode()
    finally:
        pop.close()
    raise AssertionError(f"{user!r} logged in with {password!r}")


def test_a_postfix_admin_table_serves_logins_and_refuses_injection(popgate, mariadb):
    postfix_admin(mariadb)
    srv = popgate(tenants=sql_tenant(mariadb), start=False)
    r = srv.check_config()
    assert r.returncode == 0, r.stderr.decode()
    srv.start()
    # Delivery asks the directory whether the user exists.
    srv.deliver("sqlbob@globex.example", b"Subject: from the MTA\r\n\r\nHello Bob\r\n")

    pop = login(srv, "sqlbob@globex.example", "bob's secret")
    assert pop.stat()[0] == 1
    assert b"Hello Bob" in b"\r\n".join(pop.retr(1)[1])
    pop.quit()
    login(srv, "sqlann@globex.example", "ann pw").quit()
    # The passwd-file tenant beside it is served as ever.
    login(srv, "dave@acme.example", "davepw").quit()

    assert refused(srv, "sqlbob@globex.example", "wrong").startswith("-ERR [AUTH]")
    assert refused(srv, "gone@globex.example", "gone pw").startswith("-ERR [AUTH]")
    assert refused(srv, "nobody@globex.example", "x").startswith("-ERR [AUTH]")
    for user in ["' OR '1'='1", "' OR '1'='1@globex.example", "a@b'--",
                 "sqlbob@globex.example' -- ", "x' OR 1=1 -- @globex.example",
                 "sqlbob@globex.example'; DROP TABLE mailbox; --"]:
        for password in ["' OR '1'='1", "bob's secret"]:
            assert refused_sasl(srv, user, password).startswith("-ERR [AUTH]"), user
            if " " not in user:
                assert refused(srv, user, password).startswith("-ERR [AUTH]"), user
    # Nothing was spliced: the table is whole and the real user still works.
    assert mariadb.sql("SELECT COUNT(*) FROM mailbox", db="postfix").stdout.decode().strip() == "3"
    login(srv, "sqlbob@globex.example", "bob's secret").quit()
    assert "syntax" not in srv.log().lower()


def test_a_database_outage_is_sys_temp_for_that_tenant_only(popgate, mariadb):
    postfix_admin(mariadb)
    srv = popgate(tenants=sql_tenant(mariadb))
    login(srv, "sqlbob@globex.example", "bob's secret").quit()
    mariadb.stop()
    started = time.monotonic()
    assert refused(srv, "sqlbob@globex.example", "bob's secret").startswith("-ERR [SYS/TEMP]")
    assert time.monotonic() - started < 8
    login(srv, "dave@acme.example", "davepw").quit()


def test_check_config_names_a_bad_query_variable(popgate, mariadb):
    srv = popgate(tenants=sql_tenant(mariadb, password_query="SELECT password FROM mailbox WHERE username = $login"),
                  start=False)
    r = srv.check_config()
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "tenants[1].auth.password_query" in err and "$login" in err, err


def uidl_list(srv, user: str, password: str) -> list[tuple[str, int, bytes]]:
    """(UIDL, size, bytes) of every message, as POP3 serves them."""
    pop = login(srv, user, password)
    try:
        uidls = [line.decode().split(" ", 1)[1] for line in pop.uidl()[1]]
        sizes = [int(line.decode().split(" ", 1)[1]) for line in pop.list()[1]]
        bodies = [b"\r\n".join(pop.retr(n)[1]) for n in range(1, len(uidls) + 1)]
        pop.quit()
    finally:
        pop.close()
    return list(zip(uidls, sizes, bodies))


def test_migrate_mail_all_walks_the_iterate_query(popgate, mariadb):
    """`migrate-mail --all` over an SQL tenant takes its users from
    iterate_query (Dovecot's username + domain form), inactive ones too, and
    moves each mailbox with its UIDLs; without iterate_query, or with one that
    returns no login column, it stops and names the key."""
    postfix_admin(mariadb)
    iterate = {"iterate_query": "SELECT username, domain FROM mailbox"}
    old = popgate(tenants=sql_tenant(mariadb, **iterate), start=False)
    users = {"sqlbob@globex.example": "bob's secret", "sqlann@globex.example": "ann pw"}
    for i, user in enumerate(users):
        for n in range(2):
            old.drop(user, f"Subject: {user} {n}\n\nbody {i}.{n}\n".encode())
    old.drop("gone@globex.example", b"Subject: inactive\n\nstill moved\n")
    old.start()
    before = {user: uidl_list(old, user, pw) for user, pw in users.items()}
    old.stop()
    assert all(len(v) == 2 for v in before.values())

    new = popgate(tenants=sql_tenant(mariadb, **iterate), start=False)
    r = run_popgate(["migrate-mail", "--from", str(old.config_path), "--to", str(new.config_path),
                     "--tenant", "globex"], timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "3 mailboxes done, 0 failed" in err, err
    assert len(new.files("gone@globex.example")) == 1, "the inactive user's mail moved too"
    new.start()
    for user, pw in users.items():
        assert uidl_list(new, user, pw) == before[user]

    for extra, why in [({}, "iterate_query"), ({"iterate_query": "SELECT password FROM mailbox"}, "neither a `user`")]:
        bad = popgate(tenants=sql_tenant(mariadb, **extra), start=False)
        r = run_popgate(["migrate-mail", "--from", str(bad.config_path), "--to", str(new.config_path), "--all"],
                        timeout=60)
        err = r.stderr.decode()
        assert r.returncode != 0 and "tenant globex" in err and "iterate_query" in err and why in err, err
