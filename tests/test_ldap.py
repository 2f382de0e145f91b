"""End-to-end: a tenant whose users live in LDAP, through the real binary.

A private OpenLDAP (Debian's slapd) runs on a free port with an mdb
database in the test's folder, loaded with ldapadd. globex's directory is
that tree; acme stays on its passwd-file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import poplib
import shutil
import socket
import subprocess
import time

import pytest

from conftest import free_port, run_popgate

BASE = "dc=example,dc=org"
PEOPLE = f"ou=people,{BASE}"
READER = f"cn=reader,{BASE}"
READER_PW = "reader-secret"
SLAPD = "/usr/sbin/slapd"


def ssha(password: str, salt: bytes = b"saltsalt") -> str:
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def entry(uid: str, mail: str, password: str) -> str:
    return (
        f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
        f"uid: {uid}\ncn: {uid}\nsn: {uid}\nuidNumber: 1000\ngidNumber: 1000\n"
        f"homeDirectory: /home/{uid}\nmail: {mail}\nuserPassword: {password}\n\n"
    )


class Slapd:
    def __init__(self, root):
        assert os.access(SLAPD, os.X_OK), "slapd (Debian package slapd) must be installed"
        assert shutil.which("ldapadd"), "ldapadd (Debian package ldap-utils) must be installed"
        self.root = root
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        (root / "db").mkdir()
        self.conf = root / "slapd.conf"
        self.conf.write_text(
            "include /etc/ldap/schema/core.schema\n"
            "include /etc/ldap/schema/cosine.schema\n"
            "include /etc/ldap/schema/nis.schema\n"
            "include /etc/ldap/schema/inetorgperson.schema\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"pidfile {root}/slapd.pid\n"
            "database mdb\nmaxsize 10485760\n"
            f'suffix "{BASE}"\nrootdn "cn=admin,{BASE}"\nrootpw admin-secret\n'
            f"directory {root}/db\n"
            f'access to attrs=userPassword by dn.exact="{READER}" read by anonymous auth by * none\n'
            "access to * by * read\n"
        )
        self.proc = None

    def start(self):
        self.log = open(self.root / "slapd.log", "wb")
        self.proc = subprocess.Popen(
            [SLAPD, "-f", str(self.conf), "-h", self.url + "/", "-d", "0"],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, (self.root / "slapd.log").read_text()
                time.sleep(0.05)

    def add(self, ldif: str):
        r = subprocess.run(
            ["ldapadd", "-x", "-H", self.url, "-D", f"cn=admin,{BASE}", "-w", "admin-secret"],
            input=ldif.encode(), capture_output=True, timeout=30,
        )
        assert r.returncode == 0, r.stderr.decode()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.log.close()


@pytest.fixture
def slapd(tmp_path):
    root = tmp_path / "slapd"
    root.mkdir()
    s = Slapd(root)
    s.start()
    s.add(
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n"
        f"dn: {READER}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: {READER_PW}\n\n"
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n"
        + entry("bob", "bob@globex.example", ssha("ldap-bob-pw"))
        + entry("carol", "carol@globex.example", ssha("ldap-carol-pw"))
    )
    yield s
    s.kill()


def ldap_auth(slapd, **extra) -> dict:
    return {
        "kind": "ldap", "url": slapd.url, "base_dn": PEOPLE,
        "bind_dn": READER, "bind_password": READER_PW, "timeout": "2s", **extra,
    }


def pop_login(port: int, user: str, password: str) -> poplib.POP3:
    p = poplib.POP3("127.0.0.1", port, timeout=30)
    p.user(user)
    p.pass_(password)
    return p


def login_error(port: int, user: str, password: str) -> bytes:
    with pytest.raises(poplib.error_proto) as e:
        pop_login(port, user, password)
    return e.value.args[0]


@pytest.mark.parametrize("auth_bind", [False, True])
def test_ldap_users_log_in_with_poplib(popgate, slapd, auth_bind):
    srv = popgate(tenants={"globex": {"auth": ldap_auth(slapd, auth_bind=auth_bind)}})
    # Delivery asks the directory whether the user exists.
    srv.deliver("bob@globex.example", b"Subject: from ldap\r\n\r\nhello\r\n")
    r = run_popgate(["deliver", "--config", str(srv.config_path), "--user", "nobody@globex.example"],
                    input=b"Subject: x\r\n\r\nx\r\n")
    assert r.returncode == 67, r.stderr.decode()

    p = pop_login(srv.port, "bob@globex.example", "ldap-bob-pw")
    count, _ = p.stat()
    assert count == 1
    assert b"hello" in b"\r\n".join(p.retr(1)[1])
    p.quit()
    assert login_error(srv.port, "bob@globex.example", "wrong").startswith(b"-ERR [AUTH]")
    # An injected filter does not widen the search to bob's entry.
    for user in ["b*@globex.example", "*@globex.example"]:
        assert login_error(srv.port, user, "ldap-bob-pw").startswith(b"-ERR [AUTH]"), user
    # acme, on its passwd-file, is not affected.
    pop_login(srv.port, "bob@acme.example", srv.password("bob@acme.example")).quit()

    slapd.kill()
    assert login_error(srv.port, "carol@globex.example", "ldap-carol-pw").startswith(b"-ERR [SYS/TEMP]")
    log = srv.log()
    assert "ldap-carol-pw" not in log and READER_PW not in log


def test_ldap_check_config_names_bad_keys(popgate, slapd, tmp_path):
    bad = [
        ({"user_filter": "(uid=bob)"}, b"tenants[1].auth.user_filter"),
        ({"url": "http://ldap"}, b"tenants[1].auth.url"),
        ({"bind_password_file": str(tmp_path / "missing")}, b"tenants[1].auth.bind_password_file"),
        ({"bind_pasword": "x"}, b"bind_pasword"),
    ]
    for extra, key in bad:
        srv = popgate(tenants={"globex": {"auth": ldap_auth(slapd, **extra)}}, start=False)
        r = srv.check_config()
        assert r.returncode == 2 and key in r.stderr, (extra, r.stderr)
        assert READER_PW.encode() not in r.stderr
    secret = tmp_path / "reader.pw"
    secret.write_text(READER_PW + "\n")
    section = ldap_auth(slapd)
    del section["bind_password"]
    srv = popgate(tenants={"globex": {"auth": {**section, "bind_password_file": str(secret)}}})
    pop_login(srv.port, "carol@globex.example", "ldap-carol-pw").quit()
