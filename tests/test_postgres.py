"""End-to-end: a tenant on PostgreSQL (store and directory) next to a tenant
on Maildir, served by one process.

The shared PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`; or
POPGATE_TEST_PG_URL) holds one fresh schema per test, dropped afterwards,
so tests can run in parallel. The restart test starts a private instance
(test_postgres_restart.py).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid

import pytest

from conftest import POPGATE_BIN, clean_env, run_popgate
from popclient import AUTH_FAILED, GLOBEX_USERS, crlf, status_size, wire_body

PG_URL = os.environ.get("POPGATE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")


def psql(sql: str, url: str = PG_URL, schema: str | None = None) -> str:
    """Runs SQL with psql; returns the unaligned, tuples-only output."""
    env = dict(os.environ)
    if schema:
        env["PGOPTIONS"] = f"-c search_path={schema}"
    r = subprocess.run(
        ["psql", url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        input=sql.encode(),
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


@pytest.fixture
def pg_schema():
    """A schema name nobody uses; dropped at teardown."""
    name = "e2e_" + uuid.uuid4().hex[:16]
    yield name
    psql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def pg_section(schema: str, url: str = PG_URL, **extra) -> dict:
    return {"kind": "postgres", "url": url, "schema": schema, **extra}


def user_cmd(srv, action: str, user: str, password: str | None = None, *args: str):
    return run_popgate(
        ["user", action, "--config", str(srv.config_path), "--user", user, *args],
        input=None if password is None else password.encode() + b"\n",
        env=srv.env,
    )


def setup_globex_on_postgres(popgate, schema: str, url: str = PG_URL, start: bool = True, **pg_extra):
    """globex's users and mail in PostgreSQL, acme's on Maildir. Migrates
    and adds globex's test users with `popgate user add`."""
    section = pg_section(schema, url, **pg_extra)
    srv = popgate(tenants={"globex": {"auth": section, "store": section}}, start=False)
    r = run_popgate(["migrate", "--config", str(srv.config_path)], env=srv.env)
    assert r.returncode == 0, r.stderr.decode()
    for login, (scheme, password) in GLOBEX_USERS.items():
        r = user_cmd(srv, "add", login, password, "--scheme", "SHA512-CRYPT" if scheme != "PLAIN" else "PLAIN")
        assert r.returncode == 0, r.stderr.decode()
    if start:
        srv.start()
    return srv


SAMPLES = [
    b"From: a@example.org\r\nSubject: crlf\r\n\r\nHello\r\n.dot line\r\n",
    b"From: b@example.org\nSubject: lf only\n\nline 1\n..two dots\n.\n",
    b"Subject: no final newline\r\n\r\nlast line",
    b"Subject: 8 bit\n\n\xff\xfe\x00 nul and a lone \r cr\n",
    b"Subject: empty body\r\n\r\n",
]


def test_serve_refuses_a_schema_that_is_behind_and_migrate_fixes_it(popgate, pg_schema):
    section = pg_section(pg_schema)
    srv = popgate(tenants={"globex": {"auth": section, "store": section}}, start=False)
    assert srv.check_config().returncode == 0, "check-config does not need the database"
    r = subprocess.run(
        [POPGATE_BIN, "serve", "--config", str(srv.config_path)],
        capture_output=True, env=clean_env(), cwd=srv.root, timeout=60,
    )
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "tenants[1].store" in err and "popgate migrate" in err, err
    assert "schema " + pg_schema in err, err

    r = run_popgate(["migrate", "--config", str(srv.config_path)])
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "tenants[1].store" in out and "applied migration" in out, out
    assert "tenants[1].auth" in out and "same database as tenants[1].store" in out, out
    r = run_popgate(["migrate", "--config", str(srv.config_path)])
    assert r.returncode == 0 and "schema is current" in r.stdout.decode(), r.stdout.decode()
    srv.start()


def test_bad_postgres_settings_name_the_key(popgate, pg_schema):
    srv = popgate(tenants={"globex": {"store": pg_section(pg_schema, max_connections=0)}}, start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"tenants[1].store.max_connections" in r.stderr, r.stderr
    srv = popgate(tenants={"globex": {"store": pg_section("Bad-Schema")}}, start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"tenants[1].store.schema" in r.stderr, r.stderr
    srv = popgate(tenants={"globex": {"auth": {"kind": "postgres", "url": "mysql://x"}}}, start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"tenants[1].auth.url" in r.stderr, r.stderr
    srv = popgate(tenants={"globex": {"store": pg_section(pg_schema, pool_size=3)}}, start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"pool_size" in r.stderr, r.stderr


def test_two_tenants_two_stores_deliver_retr_dele_quit(popgate, pg_schema):
    srv = setup_globex_on_postgres(popgate, pg_schema)
    users = {"bob@acme.example": "maildir", "bob@globex.example": "postgres"}
    uidls = {u: [srv.deliver(u, m) for m in SAMPLES] for u in users}
    for user in users:
        with srv.session(user) as c:
            total = sum(len(crlf(m)) for m in SAMPLES)
            assert c.cmd("STAT") == b"+OK %d %d" % (len(SAMPLES), total), user
            assert c.listing("LIST") == [b"%d %d" % (i + 1, len(crlf(m))) for i, m in enumerate(SAMPLES)]
            assert c.listing("UIDL") == [b"%d %s" % (i + 1, u.encode()) for i, u in enumerate(uidls[user])]
            for i, m in enumerate(SAMPLES):
                status, body = c.retr(i + 1)
                assert status_size(status) == len(crlf(m))
                assert body == wire_body(m), (user, i)
            assert c.ok("DELE 1") and c.ok("DELE 3")
            assert c.cmd("QUIT").startswith(b"+OK")
        with srv.session(user) as c:
            assert c.listing("UIDL") == [
                b"%d %s" % (n, u.encode()) for n, u in enumerate([uidls[user][i] for i in (1, 3, 4)], 1)
            ], user
            # Dropped without QUIT: nothing is deleted.
            assert c.ok("DELE 1")
        with srv.session(user) as c:
            assert c.cmd("STAT").startswith(b"+OK 3 "), user
            assert c.retr(1)[1] == wire_body(SAMPLES[1])
            c.ok("QUIT")
    # The mail of the PostgreSQL tenant is in the database, none on disk.
    assert psql("SELECT count(*) FROM messages", schema=pg_schema) == "3"
    assert not srv.maildir("bob@globex.example").exists()
    # A UIDL is never reused.
    new = srv.deliver("bob@globex.example", SAMPLES[0])
    assert new not in uidls["bob@globex.example"]


def test_postgres_directory_user_commands(popgate, pg_schema):
    srv = setup_globex_on_postgres(popgate, pg_schema)
    user = "eve@globex.example"
    old = GLOBEX_USERS[user][1]
    with srv.connect() as c:
        assert c.login(user, old).startswith(b"+OK")
    # Wrong password, unknown user: the same answer.
    for login, pw in [(user, "nope"), ("nobody@globex.example", "x")]:
        with srv.connect() as c:
            assert c.login(login, pw) == AUTH_FAILED
    r = user_cmd(srv, "passwd", user, "n3w pass", "--scheme", "ARGON2ID")
    assert r.returncode == 0, r.stderr.decode()
    stored = psql(f"SELECT password FROM users WHERE login = '{user}'", schema=pg_schema)
    assert stored.startswith("{ARGON2ID}$argon2id$") and "n3w" not in stored
    with srv.connect() as c:
        assert c.login(user, old) == AUTH_FAILED
    with srv.connect() as c:
        assert c.login(user, "n3w pass").startswith(b"+OK")
    assert user_cmd(srv, "disable", user).returncode == 0
    with srv.connect() as c:
        assert c.login(user, "n3w pass") == AUTH_FAILED
    assert user_cmd(srv, "enable", user).returncode == 0
    with srv.connect() as c:
        assert c.login(user, "n3w pass").startswith(b"+OK")
    r = user_cmd(srv, "add", user, "again")
    assert r.returncode != 0 and b"already exists" in r.stderr, r.stderr
    r = user_cmd(srv, "disable", "ghost@globex.example")
    assert r.returncode != 0 and b"no user" in r.stderr, r.stderr
    # acme's directory is a passwd-file: popgate user does not touch it.
    r = user_cmd(srv, "disable", "bob@acme.example")
    assert r.returncode == 2 and b"tenants[0].auth" in r.stderr, r.stderr
    # Per-user overrides: one session at a time for this user.
    r = user_cmd(srv, "add", "solo@globex.example", "solopw", "--scheme", "PLAIN", "--max-sessions", "1")
    assert r.returncode == 0, r.stderr.decode()
    assert psql("SELECT max_sessions FROM users WHERE login = 'solo@globex.example'", schema=pg_schema) == "1"


def test_sql_delivery_function_matches_popgate_deliver(popgate, pg_schema):
    srv = setup_globex_on_postgres(popgate, pg_schema)
    user = "bob@globex.example"
    # Several chunks of 256 KiB, with every kind of line ending.
    big = b"Subject: big\n\n" + b"".join(b"line %d\r\n" % i if i % 2 else b"line %d\n" % i for i in range(120_000))
    messages = SAMPLES + [big]
    uidls = []
    for i, m in enumerate(messages):
        if i % 2:
            # From the operator's side: no search_path, schema-qualified call.
            uidls.append(psql(f"SELECT {pg_schema}.popgate_deliver('globex', '{user}', decode('{m.hex()}', 'hex'))"))
        else:
            uidls.append(srv.deliver(user, m))
    with srv.session(user) as c:
        assert c.listing("UIDL") == [b"%d %s" % (i + 1, u.encode()) for i, u in enumerate(uidls)]
        assert c.listing("LIST") == [b"%d %d" % (i + 1, len(crlf(m))) for i, m in enumerate(messages)]
        for i, m in enumerate(messages):
            assert c.retr(i + 1)[1] == wire_body(m), i
    sizes = psql("SELECT string_agg(size::text || '/' || raw_size::text, ' ' ORDER BY uid) FROM messages", schema=pg_schema)
    assert sizes == " ".join(f"{len(crlf(m))}/{len(m)}" for m in messages)


def test_50mb_message_in_and_out_in_flat_memory(popgate, pg_schema, tmp_path):
    srv = setup_globex_on_postgres(popgate, pg_schema)
    user = "eve@globex.example"
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n"
    path = tmp_path / "big.eml"
    sha_want = hashlib.sha256()
    with open(path, "wb") as f:
        f.write(b"Subject: big\n\n")
        sha_want.update(b"Subject: big\r\n\r\n")
        for _ in range(50 * 1024 * 1024 // len(line)):
            f.write(line)
            sha_want.update(line[:-1] + b"\r\n")
    size = path.stat().st_size
    small = tmp_path / "small.eml"
    small.write_bytes(b"Subject: small\n\n")

    def deliver_peak_rss(src):
        with open(src, "rb") as stdin:
            proc = subprocess.Popen(
                [POPGATE_BIN, "deliver", "--config", str(srv.config_path), "--user", user],
                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
            )
            _, err = proc.stdout.read(), proc.stderr.read()
            _, status, usage = os.wait4(proc.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, err
        return usage.ru_maxrss

    baseline = deliver_peak_rss(small)
    peak = deliver_peak_rss(path)
    growth_mb = (peak - baseline) / 1024
    print(f"deliver peak RSS: {baseline / 1024:.1f} MB for a tiny message, {peak / 1024:.1f} MB for 50 MB")
    assert growth_mb < 20, f"deliver peaked {growth_mb:.1f} MB higher for a 50 MB message"
    hwm_before = srv.memory_kb("VmHWM")
    with srv.session(user) as c:
        status = c.cmd("RETR 2")
        got_size = status_size(status)
        sha = hashlib.sha256()
        total = 0
        while True:
            ln = c.line()
            if ln == b".":
                break
            if ln.startswith(b"."):
                ln = ln[1:]
            sha.update(ln + b"\r\n")
            total += len(ln) + 2
        assert total == got_size
        assert sha.hexdigest() == sha_want.hexdigest()
        c.ok("QUIT")
    assert got_size == len(b"Subject: big\r\n\r\n") + (size - len(b"Subject: big\n\n")) // len(line) * (len(line) + 1)
    growth = (srv.memory_kb("VmHWM") - hwm_before) / 1024
    print(f"server peak RSS growth for RETR of 50 MB: {growth:.1f} MB")
    assert growth < 20, f"server peak RSS grew by {growth:.1f} MB"


def test_a_postgres_directory_location_is_where_deliver_and_pop3_go(popgate, pg_schema):
    """The PostgreSQL directory's `location` column (`popgate user location`)
    names eve's Maildir: popgate deliver writes there, not to the template's
    path, POP3 serves it from there, and `user list` shows it."""
    section = pg_section(pg_schema)
    srv = popgate(tenants={"globex": {"auth": section}}, start=False)
    r = run_popgate(["migrate", "--config", str(srv.config_path)], env=srv.env)
    assert r.returncode == 0, r.stderr.decode()
    user = "eve@globex.example"
    assert user_cmd(srv, "add", user, "evepw", "--scheme", "PLAIN").returncode == 0
    own = srv.root / "globex" / "boxes" / "eve-own"
    r = user_cmd(srv, "location", user, None, "--location", f"maildir:{own}")
    assert r.returncode == 0, r.stderr.decode()
    r = run_popgate(["user", "list", "--config", str(srv.config_path), "--tenant", "globex"], env=srv.env)
    assert f"{user}\tenabled\tlocation=maildir:{own}" in r.stdout.decode(), r.stdout
    srv.start()
    uidl = srv.deliver(user, b"Subject: to eve's own Maildir\n\nhello\n")
    assert len(os.listdir(own / "new")) == 1
    assert not srv.maildir(user).exists(), "nothing under the template's path"
    with srv.session(user, "evepw") as c:
        assert [line.split(b" ", 1)[1].decode() for line in c.listing("UIDL")] == [uidl]
        c.cmd("QUIT")
    # Cleared: back to the template.
    assert user_cmd(srv, "location", user).returncode == 0
    srv.deliver(user, b"Subject: template\n\nagain\n")
    assert os.listdir(srv.maildir(user) / "new")
