"""`popgate migrate-mail` end to end: real stores, real Dovecot.

A Maildir whose dovecot-uidlist a real Dovecot (dovecot-pop3d) wrote goes
Maildir -> PostgreSQL -> S3 -> Maildir, and at every hop the UIDLs, sizes
and bytes popgate serves over POP3 are the ones Dovecot served at the start
(and at the end Dovecot itself serves them from the last Maildir). A live
Dovecot over POP3 is a source too. Then the hard cases: SIGKILL in the
middle of a mailbox and a resume, a mailbox held by a live session, a
destination database that goes down during the run and a destination file
system that runs out of space (both with --delete-source).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from conftest import POPGATE_BIN, clean_env, run_popgate
from dovecot_pop3 import POP3_BINARY, dovecot_listing, dovecot_retr, dovecot_session
from popclient import crlf
from s3client import S3Server
from test_postgres import pg_section, psql
from test_postgres_restart import PrivatePostgres
from test_redis_locks import REDIS_URL

USER = "bob@acme.example"

if not os.access(POP3_BINARY, os.X_OK):
    pytest.fail(f"Dovecot's pop3 ({POP3_BINARY}) is not installed: scripts/test installs dovecot-pop3d")


def sample_messages() -> list[bytes]:
    big_line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\n"
    return [
        b"From: a@example.org\nSubject: lf only\n\nline one\n.leading dot\n..two dots\n",
        b"From: b@example.org\r\nSubject: crlf\r\n\r\nHello\r\n.\r\n",
        b"Subject: no final newline\n\nlast line",
        b"Subject: empty body\n\n",
        b"Subject: large\n\n" + big_line * 20000,  # ~1.5 MB, LF only
    ]


def served(srv, user: str = USER) -> list[tuple[str, int, bytes]]:
    """(UIDL, LIST size, RETR bytes unstuffed) of every message, over POP3."""
    out = []
    with srv.session(user) as c:
        uidls = [line.split(b" ", 1)[1].decode() for line in c.listing("UIDL")]
        sizes = [int(line.split(b" ", 1)[1]) for line in c.listing("LIST")]
        for n in range(1, len(uidls) + 1):
            _, body = c.retr(n)
            out.append((uidls[n - 1], sizes[n - 1], body))
        c.cmd("QUIT")
    return out


def dovecot_served(maildir) -> list[tuple[str, int, bytes]]:
    return [(uidl, size, dovecot_retr(str(maildir), num)) for num, uidl, size in dovecot_listing(str(maildir))]


def migrate(src, dst, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    source = src if isinstance(src, str) else str(src.config_path)
    return run_popgate(
        ["migrate-mail", "--from", source, "--to", str(dst.config_path), *args], timeout=timeout
    )


def ok(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode()
    assert r.returncode == 0, f"migrate-mail failed ({r.returncode}):\n{err}"
    return err


def migrate_schema(srv) -> None:
    r = run_popgate(["migrate", "--config", str(srv.config_path)])
    assert r.returncode == 0, r.stderr.decode()


@pytest.fixture
def pg_schemas():
    made = []

    def make() -> str:
        name = "mig_" + uuid.uuid4().hex[:16]
        made.append(name)
        return name

    yield make
    for name in made:
        psql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def s3(tmp_path):
    srv = S3Server(tmp_path / "s3").start()
    srv.client.create_bucket()
    yield srv
    srv.stop()


def dovecot_maildir(popgate, messages: list[bytes]):
    """A popgate config (not started) whose bob has `messages`, listed once
    by a real Dovecot, which wrote the dovecot-uidlist; and what Dovecot served."""
    old = popgate(start=False)
    for m in messages:
        old.drop(USER, m)
    want = dovecot_served(old.maildir(USER))
    assert len(want) == len(messages)
    assert "dovecot-uidlist" in os.listdir(old.maildir(USER))
    return old, want


# --------------------------------------------------------------------------


def test_dovecot_maildir_to_postgres_to_s3_to_maildir_serves_what_dovecot_served(popgate, pg_schemas, s3):
    old, want = dovecot_maildir(popgate, sample_messages())

    pg = popgate(tenants={"acme": {"store": pg_section(pg_schemas())}}, start=False)
    migrate_schema(pg)
    err = ok(migrate(old, pg, "--user", USER))
    assert f"acme/{USER}: 5 messages: copied 5" in err, err
    pg.start()
    assert served(pg) == want, "PostgreSQL serves what Dovecot served"

    s3_srv = popgate(tenants={"acme": {"store": s3.store()}}, start=False)
    # --tenant: every user of acme's passwd-file (the others have no mail).
    err = ok(migrate(pg, s3_srv, "--tenant", "acme", "--jobs", "3"))
    assert "0 failed" in err, err
    s3_srv.start()
    assert served(s3_srv) == want, "S3 serves what Dovecot served"

    new = popgate(start=False)
    err = ok(migrate(s3_srv, new, "--all"))
    assert f"acme/{USER}: 5 messages: copied 5" in err, err
    new.start()
    assert served(new) == want, "the new Maildir serves what Dovecot served"
    new.kill()
    # Dovecot itself reads the UIDLs popgate carried in (the uidlist's P).
    assert dovecot_served(new.maildir(USER)) == want

    # Run again: everything is there and verified, nothing copied twice.
    err = ok(migrate(s3_srv, new, "--all"))
    assert f"acme/{USER}: 5 messages: copied 0 (0 octets), 5 there already" in err, err


def test_delete_source_and_dry_run(popgate, pg_schemas):
    old, want = dovecot_maildir(popgate, sample_messages()[:3])
    pg = popgate(tenants={"acme": {"store": pg_section(pg_schemas())}}, start=False)
    migrate_schema(pg)
    err = ok(migrate(old, pg, "--user", USER, "--dry-run", "--delete-source"))
    assert "would copy 3" in err, err
    assert len(os.listdir(old.maildir(USER) / "cur")) == 3
    err = ok(migrate(old, pg, "--user", USER, "--delete-source"))
    assert "3 deleted from the source" in err, err
    assert os.listdir(old.maildir(USER) / "cur") == [] and os.listdir(old.maildir(USER) / "new") == []
    pg.start()
    assert served(pg) == want


class DovecotOverTcp:
    """A live Dovecot POP3 server on 127.0.0.1: each connection gets a
    greeting and USER/PASS checked against `passwords`, then a real
    pre-authenticated Dovecot pop3 process on that user's Maildir."""

    def __init__(self, maildirs: dict[str, str], passwords: dict[str, str]):
        self.maildirs, self.passwords = maildirs, passwords
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(conn,), daemon=True).start()

    def one(self, conn: socket.socket):
        f = conn.makefile("rb")
        try:
            conn.sendall(b"+OK Dovecot (test front) ready.\r\n")
            user = f.readline().decode().strip().split(" ", 1)[1].lower()
            conn.sendall(b"+OK\r\n")
            password = f.readline().decode().rstrip("\r\n").split(" ", 1)[1]
            if self.passwords.get(user) != password or user not in self.maildirs:
                conn.sendall(b"-ERR [AUTH] Authentication failed.\r\n")
                return
            # A pre-authenticated Dovecot sends no greeting: the front answers the PASS.
            conn.sendall(b"+OK Logged in.\r\n")
            run_dovecot_on_socket(self.maildirs[user], conn)
        except Exception:  # noqa: BLE001 - a broken client only ends its connection
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


_DOVECOT_FRONT_LOCK = threading.Lock()


def run_dovecot_on_socket(maildir: str, conn: socket.socket) -> None:
    """dovecot_session's setup, with the socket as Dovecot's stdin and stdout."""
    import dovecot_pop3

    captured = {}

    def on_socket(cmd, input=None, capture_output=False, env=None, timeout=None):
        # Dovecot refuses a socket on stdin ("started from inetd"): relay through pipes.
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)

        def client_to_dovecot():
            try:
                while data := conn.recv(65536):
                    p.stdin.write(data)
                    p.stdin.flush()
            except OSError:
                pass
            finally:
                try:
                    p.stdin.close()
                except OSError:
                    pass

        threading.Thread(target=client_to_dovecot, daemon=True).start()
        while data := p.stdout.read1(65536):
            conn.sendall(data)
        p.wait(timeout=120)
        captured["rc"] = p.returncode
        return subprocess.CompletedProcess(cmd, p.returncode, b"", b"")

    class Shim:
        """subprocess for dovecot_pop3 only (never the module itself: the
        test's own subprocess calls run meanwhile), with run on the socket."""

        run = staticmethod(on_socket)

        def __getattr__(self, name):
            return getattr(subprocess, name)

    with _DOVECOT_FRONT_LOCK:
        dovecot_pop3.subprocess = Shim()
        try:
            dovecot_session(maildir, [], strict=False)
        except dovecot_pop3.DovecotError:
            pass  # its stdout went to the client, not to us
        finally:
            dovecot_pop3.subprocess = subprocess


def test_a_live_dovecot_over_pop3_into_postgres(popgate, pg_schemas, tmp_path):
    old, want = dovecot_maildir(popgate, sample_messages())
    front = DovecotOverTcp({USER: str(old.maildir(USER))}, {USER: "old-secret"})
    try:
        pg = popgate(tenants={"acme": {"store": pg_section(pg_schemas())}}, start=False)
        migrate_schema(pg)
        passwords = tmp_path / "old-passwords"
        passwords.write_text(f"{USER}:old-secret\n")
        err = ok(migrate(f"pop3://127.0.0.1:{front.port}", pg, "--user", USER, "--passwords", str(passwords)))
        assert f"acme/{USER}: 5 messages: copied 5" in err, err
        pg.start()
        assert served(pg) == want, "PostgreSQL serves what the live Dovecot served"
        # --tenant with a POP3 source takes the logins of the passwords file.
        err = ok(migrate(f"pop3://127.0.0.1:{front.port}", pg, "--tenant", "acme", "--passwords", str(passwords)))
        assert "copied 0 (0 octets), 5 there already" in err, err
        # A wrong password fails the mailbox, named in the list.
        passwords.write_text(f"{USER}:wrong\n")
        r = migrate(f"pop3://127.0.0.1:{front.port}", pg, "--user", USER, "--passwords", str(passwords))
        assert r.returncode != 0
        assert f"failed mailboxes:\n  acme/{USER}:" in r.stderr.decode(), r.stderr.decode()
    finally:
        front.stop()


def count_rows(schema: str, url: str | None = None) -> int:
    kw = {"url": url} if url else {}
    out = psql("SELECT count(*) FROM messages", schema=schema, **kw)
    return int(out or 0)


def uidls_in(schema: str, url: str | None = None) -> list[str]:
    kw = {"url": url} if url else {}
    out = psql("SELECT uidl FROM messages ORDER BY uid", schema=schema, **kw)
    return out.splitlines()


def many_messages(old, n: int, size: int = 20_000) -> None:
    filler = (b"x" * 70 + b"\n") * (size // 71)
    for i in range(n):
        old.drop(USER, b"Subject: %d\n\n" % i + filler)


def test_sigkill_mid_mailbox_then_resume(popgate, pg_schemas):
    old = popgate(start=False)
    many_messages(old, 400)
    want = [uidl for _, uidl, _ in dovecot_listing(str(old.maildir(USER)))]
    schema = pg_schemas()
    pg = popgate(tenants={"acme": {"store": pg_section(schema)}}, start=False)
    migrate_schema(pg)
    proc = subprocess.Popen(
        [POPGATE_BIN, "migrate-mail", "--from", str(old.config_path), "--to", str(pg.config_path), "--user", USER],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env(),
    )
    deadline = time.monotonic() + 120
    while count_rows(schema) < 40:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()
    partial = count_rows(schema)
    assert 40 <= partial < 400, partial
    err = ok(migrate(old, pg, "--user", USER))
    assert f"copied {400 - partial} " in err, err
    assert uidls_in(schema) == want, "no duplicates, nothing lost, the order kept"


def test_a_mailbox_held_by_a_live_session_is_retried(popgate, pg_schemas):
    prefix = "mig" + uuid.uuid4().hex[:8]
    locks = f'\n[locks]\nbackend = "redis"\nurl = "{REDIS_URL}"\nkey_prefix = "{prefix}"\n'
    old = popgate(extra_toml=locks)
    old.drop(USER, b"Subject: held\n\nbody\n")
    pg = popgate(tenants={"acme": {"store": pg_section(pg_schemas())}}, start=False)
    migrate_schema(pg)
    session = old.session(USER)
    try:
        r = migrate(old, pg, "--user", USER, "--in-use-retries", "0")
        err = r.stderr.decode()
        assert r.returncode != 0, err
        assert f"acme/{USER}: source mailbox is in use by a session" in err, err
        # Retried: the session ends meanwhile, the mailbox goes through.
        proc = subprocess.Popen(
            [POPGATE_BIN, "migrate-mail", "--from", str(old.config_path), "--to", str(pg.config_path), "--user", USER],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env(),
        )
        time.sleep(1)
    finally:
        session.cmd("QUIT")
        session.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert "trying again later" in err.decode() and "copied 1" in err.decode(), err.decode()


def test_a_destination_that_goes_down_fails_the_mailbox_and_a_rerun_finishes(popgate, tmp_path):
    old = popgate(start=False)
    many_messages(old, 300)
    want = [uidl for _, uidl, _ in dovecot_listing(str(old.maildir(USER)))]
    db = PrivatePostgres()
    db.start()
    try:
        schema = "mig_down"
        pg = popgate(tenants={"acme": {"store": pg_section(schema, url=db.url, connect_timeout="2s")}}, start=False)
        migrate_schema(pg)
        proc = subprocess.Popen(
            [POPGATE_BIN, "migrate-mail", "--from", str(old.config_path), "--to", str(pg.config_path), "--user", USER,
             "--delete-source"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env(),
        )
        deadline = time.monotonic() + 120
        while count_rows(schema, db.url) < 30:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        db.stop("immediate")
        _, err = proc.communicate(timeout=120)
        err = err.decode()
        assert proc.returncode != 0, err
        assert f"failed mailboxes:\n  acme/{USER}:" in err, err
        # Nothing was deleted from the source (--delete-source waits for a
        # verified mailbox), and once the database is back a re-run finishes.
        assert len(old.files(USER)) == 300
        db.start()
        partial = count_rows(schema, db.url)
        assert 0 < partial < 300, partial
        err = ok(migrate(old, pg, "--user", USER, "--delete-source"))
        assert f"copied {300 - partial} " in err and f"{partial} there already" in err, err
        assert "300 deleted from the source" in err, err
        assert uidls_in(schema, db.url) == want
        assert old.files(USER) == []
    finally:
        db.destroy()


def test_a_destination_that_runs_out_of_space_fails_the_mailbox_and_a_rerun_finishes(popgate, tmp_path):
    old = popgate(start=False)
    many_messages(old, 60)  # ~1.2 MB
    want = [uidl for _, uidl, _ in dovecot_listing(str(old.maildir(USER)))]
    small = tmp_path / "small"
    small.mkdir()
    # A 512 KiB file system (as root; scripts/test runs as root).
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], check=True)
    new = None
    try:
        new = popgate(tenants={"acme": {"store": {"kind": "maildir", "path": f"{small}/%d/%n/Maildir"}}}, start=False)
        r = migrate(old, new, "--user", USER, "--delete-source")
        err = r.stderr.decode()
        assert r.returncode == 1, err
        assert f"failed mailboxes:\n  acme/{USER}:" in err and "No space left on device" in err, err
        assert len(old.files(USER)) == 60, "the source is untouched, even with --delete-source"
        # What the destination holds is the source's first messages, whole
        # and in order: the next run counts them as there already.
        dry = ok(migrate(old, new, "--user", USER, "--dry-run"))
        m = re.search(r"would copy (\d+) \(\d+ octets\), (\d+) there already", dry)
        assert m and int(m[1]) + int(m[2]) == 60 and 0 < int(m[2]) < 60, dry
        there = int(m[2])
        # Space freed: a re-run copies the rest, verifies all, deletes the source.
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
        err = ok(migrate(old, new, "--user", USER, "--delete-source"))
        assert f"copied {60 - there} " in err and f"{there} there already" in err, err
        assert "60 deleted from the source" in err, err
        new.start()
        assert [uidl for uidl, _, _ in served(new)] == want, "no duplicates, nothing lost, the order kept"
    finally:
        if new is not None:
            new.kill()
        subprocess.run(["umount", "-l", str(small)], check=False)
