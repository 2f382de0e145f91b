"""`popgate from-dovecot`: a Dovecot configuration in, a popgate.toml out.

The configurations are the ones providers run: Debian's default, a
passwd-file with virtual users under one vmail home and CONTROL= outside
the Maildirs, Postfix Admin's SQL, and LDAP. For each, the TOML printed must
parse and pass `popgate check-config`; for the ones popgate can serve, a
popgate running on it must give the same UIDLs and sizes as a real Dovecot
on the same Maildirs, and log the same users in with their legacy hashes.
"""

from __future__ import annotations

import os
import poplib
import secrets
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from conftest import POPGATE_BIN, clean_env, free_port, run_popgate
from dovecot_pop3 import _allow_traversal, _chown_tree, _unprivileged_ids, dovecot_listing
from test_tls import make_cert


def doveadm_pw(scheme: str, password: str) -> str:
    r = subprocess.run(
        ["doveadm", "-c", "/dev/null", "pw", "-s", scheme, "-p", password], capture_output=True, timeout=30
    )
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


def from_dovecot(*args: str) -> tuple[int, str, str]:
    r = run_popgate(["from-dovecot", *args])
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def drop(maildir: Path, name: str, body: bytes, cur: bool = False) -> None:
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / ("cur" if cur else "new") / (name + (":2,S" if cur else ""))).write_bytes(body)


def give_to_dovecot(*paths: Path) -> None:
    """Dovecot refuses mail access as root: its directories go to nobody."""
    if os.geteuid() != 0:
        return
    uid, gid = _unprivileged_ids("nobody", "nogroup")
    for p in paths:
        p.mkdir(parents=True, exist_ok=True)
        _allow_traversal(str(p))
        _chown_tree(str(p), uid, gid)


class Served:
    """popgate serving a generated configuration."""

    def __init__(self, config: Path):
        self.config = config
        self.log = config.with_suffix(".log")
        self.proc = subprocess.Popen(
            [POPGATE_BIN, "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT,
            cwd=config.parent,
            env=clean_env(),
        )

    def wait(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, self.log.read_text()
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def pop3_listing(port: int, user: str, password: str) -> list[tuple[int, str, int]]:
    c = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        c.user(user)
        c.pass_(password)
        uidls = dict(line.decode().split(" ", 1) for line in c.uidl()[1])
        sizes = dict(line.decode().split(" ", 1) for line in c.list()[1])
        c.quit()
    finally:
        c.close()
    return [(int(n), uidls[n], int(sizes[n])) for n in sorted(uidls, key=int)]


def pop3_refused(port: int, user: str, password: str) -> bool:
    c = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        c.user(user)
        c.pass_(password)
    except poplib.error_proto:
        return True
    finally:
        c.close()
    return False


def convert_and_check(tmp_path: Path, *args: str) -> tuple[Path, dict, str]:
    rc, out, err = from_dovecot(*args)
    assert rc == 0, err + out
    parsed = tomllib.loads(out)
    config = tmp_path / "popgate.toml"
    config.write_text(out)
    r = run_popgate(["check-config", "--config", str(config)])
    assert r.returncode == 0, r.stderr.decode() + "\n" + out
    return config, parsed, err


def test_debian_default_config_names_what_it_cannot_map(tmp_path):
    assert Path("/etc/dovecot/dovecot.conf").is_file(), "scripts/test installs dovecot-core"
    rc, out, err = from_dovecot("--config-dir", "/etc/dovecot")
    # PAM users and mbox mail: popgate can serve neither, and says so.
    assert rc == 3, err
    assert "passdb pam" in err and "mbox" in err, err
    assert "passdb pam" in out and "Not mapped" in out
    parsed = tomllib.loads(out)
    assert parsed["tenants"][0]["store"]["kind"] == "maildir"
    # Its conf.d is followed: the 10-ssl.conf certificate is found.
    assert parsed["tls"]["certificate"] == "/etc/dovecot/private/dovecot.pem"
    assert {l["address"] for l in parsed["listeners"]} == {"0.0.0.0:110", "0.0.0.0:995"}


def passwd_file_provider(tmp_path: Path, port: int) -> tuple[Path, Path, Path]:
    etc, vmail, control = tmp_path / "etc", tmp_path / "vmail", tmp_path / "control"
    etc.mkdir()
    (etc / "conf.d").mkdir()
    (etc / "dovecot.conf").write_text(
        f"""# a small provider: virtual users in a passwd-file, one vmail tree
protocols = pop3
listen = 127.0.0.1
!include conf.d/*.conf
mail_location = maildir:~/Maildir:CONTROL={control}/%d/%n:INDEX={tmp_path}/index/%d/%n
login_trusted_networks = 10.0.0.0/8
protocol pop3 {{
  pop3_uidl_format = %08Xu%08Xv
  mail_max_userip_connections = 3
  pop3_client_workarounds = outlook-no-nuls oe-ns-eoh
}}
"""
    )
    (etc / "conf.d" / "10-auth.conf").write_text(
        f"""disable_plaintext_auth = yes
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=CRYPT username_format=%u {etc}/users
}}
userdb {{
  driver = static
  args = uid=vmail gid=vmail home={vmail}/%d/%n
}}
"""
    )
    (etc / "conf.d" / "10-master.conf").write_text(
        f"""ssl = no
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""
    )
    md5 = doveadm_pw("MD5-CRYPT", "carol pw").removeprefix("{MD5-CRYPT}")
    (etc / "users").write_text(
        f"bob@example.org:{doveadm_pw('SSHA', 'bob pw')}::::::\n"
        f"carol@example.org:{md5}::::::\n"
        f"dave@example.net:{doveadm_pw('PLAIN-MD5', 'dave pw')}::::::\n"
    )
    return etc, vmail, control


def test_passwd_file_provider_serves_dovecots_uidls(tmp_path):
    port = free_port()
    etc, vmail, control = passwd_file_provider(tmp_path, port)
    users = {"bob@example.org": "bob pw", "carol@example.org": "carol pw", "dave@example.net": "dave pw"}
    maildirs = {}
    for login in users:
        local, domain = login.split("@")
        md = vmail / domain / local / "Maildir"
        maildirs[login] = md
        drop(md, "1700000000.M1P1.h", f"Subject: one for {local}\n\nhello\n".encode())
        drop(md, "1700000001.M2P1.h", b"Subject: two\r\n\r\ndot\r\n..stuffed\r\n", cur=True)
        drop(md, "1700000002.M3P1.h", b"Subject: three\n\nno newline")
        give_to_dovecot(md, control / domain / local)

    def dovecot(login):
        local, domain = login.split("@")
        location = f"maildir:{maildirs[login]}:CONTROL={control}/{domain}/{local}"
        return dovecot_listing(str(maildirs[login]), extra_settings={"mail_location": location})

    # Dovecot serves first: its uidlist lands in CONTROL=, not in the Maildir.
    before = {login: dovecot(login) for login in users}
    for login, md in maildirs.items():
        local, domain = login.split("@")
        assert (control / domain / local / ".INBOX" / "dovecot-uidlist").is_file()
        assert not (md / "dovecot-uidlist").exists()
        assert len(before[login]) == 3

    config, parsed, err = convert_and_check(tmp_path, "--config-dir", str(etc))
    tenant = parsed["tenants"][0]
    assert sorted(tenant["domains"]) == ["example.net", "example.org"]
    assert tenant["store"]["path"] == f"maildir:{vmail}/%d/%n/Maildir:CONTROL={control}/%d/%n:INDEX={tmp_path}/index/%d/%n"
    assert parsed["listeners"] == [
        {"address": f"127.0.0.1:{port}", "tls": "none", "plaintext_auth": True, "default_tenant": "dovecot"}
    ]
    text = config.read_text()
    assert "mail_max_userip_connections = 3: subsumed" in text
    assert "login_trusted_networks" in err and "pop3_client_workarounds" in err

    srv = Served(config)
    try:
        srv.wait(port)
        for login, password in users.items():
            assert pop3_listing(port, login, password) == before[login], login
            assert pop3_refused(port, login, password + "x")
        # New mail, popgate first this time: both still agree, old UIDLs kept.
        for login, md in maildirs.items():
            drop(md, "1700000009.M9P1.h", b"Subject: later\n\nlater\n")
            give_to_dovecot(md)
        for login, password in users.items():
            after = pop3_listing(port, login, password)
            assert after[:3] == before[login]
            assert len(after) == 4
            assert dovecot(login) == after
    finally:
        srv.stop()


@pytest.fixture
def pg_table():
    url = os.environ.get("POPGATE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
    table = "fd_mailbox_" + secrets.token_hex(4)

    def sql(text: str) -> None:
        r = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", text], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()

    sql(f"CREATE TABLE {table} (username text PRIMARY KEY, password text NOT NULL, active smallint NOT NULL DEFAULT 1)")
    yield table, sql
    sql(f"DROP TABLE {table}")


def test_postfixadmin_sql_provider(tmp_path, pg_table):
    table, sql = pg_table
    port = free_port()
    etc, vmail = tmp_path / "etc", tmp_path / "vmail"
    etc.mkdir()
    # Postfix Admin's default: md5crypt, bare, default_pass_scheme MD5-CRYPT.
    bob = doveadm_pw("MD5-CRYPT", "bob pw").removeprefix("{MD5-CRYPT}")
    sql(
        f"INSERT INTO {table} VALUES ('bob@pfa.example', '{bob}', 1), "
        f"('off@pfa.example', '{bob}', 0), ('ann@pfa.example', '{doveadm_pw('SSHA512', 'ann pw')}', 1)"
    )
    (etc / "dovecot-sql.conf.ext").write_text(
        f"""driver = pgsql
connect = host=127.0.0.1 port=5432 dbname=test user=postgres
default_pass_scheme = MD5-CRYPT
password_query = SELECT username AS user, password FROM {table} WHERE username = '%u' AND active = '1'
user_query = SELECT '{vmail}/' || username AS home FROM {table} WHERE username = '%u' AND active = '1'
iterate_query = SELECT username AS user FROM {table}
"""
    )
    (etc / "dovecot.conf").write_text(
        f"""protocols = pop3
listen = 127.0.0.1
ssl = no
mail_location = maildir:{vmail}/%d/%n
passdb {{
  driver = sql
  args = {etc}/dovecot-sql.conf.ext
}}
userdb {{
  driver = sql
  args = {etc}/dovecot-sql.conf.ext
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
}}
"""
    )
    md = vmail / "pfa.example" / "bob"
    drop(md, "1700000000.M1P1.h", b"Subject: pfa\n\nhello\n")
    give_to_dovecot(md)
    before = dovecot_listing(str(md))

    config, parsed, err = convert_and_check(tmp_path, "--config-dir", str(etc), "--domain", "pfa.example")
    auth = parsed["tenants"][0]["auth"]
    assert auth["kind"] == "sql" and auth["default_scheme"] == "MD5-CRYPT"
    assert auth["url"] == "postgres://postgres@127.0.0.1:5432/test"
    srv = Served(config)
    try:
        srv.wait(port)
        assert pop3_listing(port, "bob@pfa.example", "bob pw") == before
        assert pop3_listing(port, "ann@pfa.example", "ann pw") == []
        assert pop3_refused(port, "bob@pfa.example", "bob pw!")
        assert pop3_refused(port, "off@pfa.example", "bob pw")
    finally:
        srv.stop()

    # iterate_query is mapped: `migrate-mail --all` walks the SQL directory's
    # users and moves bob's mail with Dovecot's UIDLs.
    assert auth["iterate_query"] == f"SELECT username AS user FROM {table}"
    moved = tmp_path / "moved.toml"
    moved.write_text(config.read_text().replace(f"{vmail}/%d", f"{tmp_path}/vmail2/%d"))
    assert moved.read_text() != config.read_text()
    (tmp_path / "vmail2").mkdir()
    r = run_popgate(["migrate-mail", "--from", str(config), "--to", str(moved), "--all"], timeout=120)
    assert r.returncode == 0 and "3 mailboxes done, 0 failed" in r.stderr.decode(), r.stderr.decode()
    srv = Served(moved)
    try:
        srv.wait(port)
        assert pop3_listing(port, "bob@pfa.example", "bob pw") == before
    finally:
        srv.stop()

    # `doveconf -n` output of the same configuration gives the same TOML.
    r = subprocess.run(["doveconf", "-n", "-c", str(etc / "dovecot.conf")], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    (tmp_path / "doveconf.txt").write_bytes(r.stdout)
    rc, out, _ = from_dovecot(
        "--doveconf-output", str(tmp_path / "doveconf.txt"), "--config-dir", str(etc), "--domain", "pfa.example"
    )
    assert rc == 0
    assert tomllib.loads(out)["tenants"] == parsed["tenants"]
    assert tomllib.loads(out)["listeners"] == parsed["listeners"]


def test_ldap_provider_config_is_valid(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (tmp_path / "mail").mkdir()
    cert, key = make_cert(tmp_path, "pop", "pop.example.org", ["pop.example.org"])
    (etc / "dovecot-ldap.conf.ext").write_text(
        """uris = ldap://127.0.0.1:1
dn = cn=dovecot,dc=example,dc=org
dnpass = s3cret
base = ou=people,dc=example,dc=org
auth_bind = no
pass_filter = (&(objectClass=inetOrgPerson)(mail=%u))
pass_attrs = mail=user,userPassword=password,mailMessageStore=userdb_mail
default_pass_scheme = SSHA
"""
    )
    (etc / "dovecot.conf").write_text(
        f"""protocols = imap pop3
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
mail_location = maildir:{tmp_path}/mail/%Ld/%Ln
passdb {{
  driver = ldap
  args = {etc}/dovecot-ldap.conf.ext
}}
userdb {{
  driver = prefetch
}}
"""
    )
    rc, out, err = from_dovecot("--config-dir", str(etc), "--domain", "example.org")
    assert rc == 0, err
    parsed = tomllib.loads(out)
    auth = parsed["tenants"][0]["auth"]
    assert auth == {
        "kind": "ldap",
        "url": "ldap://127.0.0.1:1",
        "base_dn": "ou=people,dc=example,dc=org",
        "user_filter": "(&(objectClass=inetOrgPerson)(mail=%u))",
        "bind_dn": "cn=dovecot,dc=example,dc=org",
        "bind_password": "s3cret",
        "user_attribute": "mail",
        "location_attribute": "mailMessageStore",
    }
    # ssl = required: TLS on both ports, never a plaintext login.
    assert [(l["tls"], l["plaintext_auth"]) for l in parsed["listeners"]] == [("starttls", False), ("implicit", False)]
    assert parsed["tls"] == {"certificate": cert, "private_key": key}
    assert "default_pass_scheme" in err
    config = tmp_path / "popgate.toml"
    config.write_text(out)
    r = run_popgate(["check-config", "--config", str(config)])
    assert r.returncode == 0, r.stderr.decode()
