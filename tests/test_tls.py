"""TLS at the edge: STLS (RFC 2595) and implicit TLS (RFC 8314), plaintext
login refused before TLS, no command injection across the upgrade, per-tenant
certificates by SNI, and certificates reloaded without a restart.

Certificates are made here with openssl; no private key is committed.
"""

from __future__ import annotations

import poplib
import signal
import socket
import ssl
import subprocess
import time

import pytest

from popclient import TIMEOUT, Pop3, crlf, plain_ir

USER = "bob@acme.example"
PASSWORD = "secret"


def make_cert(directory, name: str, cn: str, sans: list[str]) -> tuple[str, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    san = ",".join(f"IP:{s}" if s[0].isdigit() else f"DNS:{s}" for s in sans)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={cn}", "-addext", f"subjectAltName={san}"],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def certs(tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    return {
        "default": make_cert(d, "default", "pop.test", ["pop.test", "localhost", "127.0.0.1"]),
        "acme": make_cert(d, "acme", "pop.acme.example", ["pop.acme.example", "acme.example"]),
        "dir": d,
    }


def tls_server(popgate, certs, tls_mode: str, plaintext_auth=False, tenants=None, server=None):
    cert, key = certs["default"]
    extra = f'\n[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n'
    return popgate(listener={"tls": tls_mode, "plaintext_auth": plaintext_auth}, extra_toml=extra,
                   tenants=tenants, server=server)


def client_context(cafile: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx


def peer_cn(sock: ssl.SSLSocket) -> str:
    subject = dict(x[0] for x in sock.getpeercert()["subject"])
    return subject["commonName"]


def test_stls_with_poplib_then_login_and_retr(popgate, certs):
    srv = tls_server(popgate, certs, "starttls")
    msg = b"From: a@example.org\nSubject: tls\n\nover TLS\n"
    srv.deliver(USER, msg)
    p = poplib.POP3("127.0.0.1", srv.port, timeout=TIMEOUT)
    before = p.capa()
    assert "STLS" in before
    assert "USER" not in before and "SASL" not in before, before
    p.stls(context=client_context(certs["default"][0]))
    after = p.capa()
    assert "STLS" not in after, after
    assert "USER" in after and after["SASL"] == ["PLAIN", "LOGIN"], after
    p.user(USER)
    p.pass_(PASSWORD)
    resp, lines, _ = p.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == crlf(msg)
    p.quit()


def test_plaintext_login_refused_before_stls(popgate, certs):
    srv = tls_server(popgate, certs, "starttls")
    with srv.connect() as c:
        for command in ("USER " + USER, "APOP bob c4c9334bac560ecc979e58001b3e22fb", "AUTH PLAIN " + plain_ir(USER, PASSWORD),
                        "AUTH LOGIN"):
            r = c.cmd(command)
            assert r.startswith(b"-ERR"), (command, r)
            assert b"STLS" in r or b"APOP" in r, r
        # The session goes on and can still upgrade.
        assert c.cmd("STLS").startswith(b"+OK")


def test_bytes_pipelined_after_stls_are_discarded(popgate, certs):
    srv = tls_server(popgate, certs, "starttls")
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
    f = raw.makefile("rb")
    assert f.readline().startswith(b"+OK")
    # An attacker in the middle appends a command after STLS, in clear text.
    raw.sendall(b"STLS\r\nUSER " + USER.encode() + b"\r\n")
    assert f.readline().startswith(b"+OK")
    time.sleep(0.2)
    tls = client_context(certs["default"][0]).wrap_socket(raw, server_hostname="pop.test")
    tf = tls.makefile("rwb")

    def cmd(line: bytes) -> bytes:
        tf.write(line + b"\r\n")
        tf.flush()
        return tf.readline().rstrip(b"\r\n")

    # If the injected USER had been taken, PASS would log in.
    assert cmd(b"PASS " + PASSWORD.encode()) == b"-ERR Send USER first."
    assert cmd(b"USER " + USER.encode()).startswith(b"+OK")
    assert cmd(b"PASS " + PASSWORD.encode()).startswith(b"+OK Logged in")
    assert cmd(b"QUIT").startswith(b"+OK")


def test_stls_twice_and_on_plain_listener_is_refused(popgate, certs):
    srv = tls_server(popgate, certs, "starttls")
    p = poplib.POP3("127.0.0.1", srv.port, timeout=TIMEOUT)
    p.stls(context=client_context(certs["default"][0]))
    with pytest.raises(poplib.error_proto, match="STLS"):
        p._shortcmd("STLS")
    p.quit()
    plain = popgate()
    with plain.connect() as c:
        assert c.cmd("STLS").startswith(b"-ERR")
        assert b"STLS" not in b"\n".join(c.multi()) if c.cmd("CAPA").startswith(b"+OK") else False


def test_implicit_tls_with_curl(popgate, certs):
    srv = tls_server(popgate, certs, "implicit")
    msg = b"Subject: pop3s\r\n\r\n.dot line\r\nend\r\n"
    srv.deliver(USER, msg)
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", certs["default"][0], "--user", f"{USER}:{PASSWORD}",
         f"pop3s://localhost:{srv.port}/1"],
        capture_output=True, check=True,
    ).stdout
    assert out == msg
    # curl refuses a certificate it cannot verify: the handshake is real TLS.
    bad = subprocess.run(["curl", "-sS", "--max-time", "20", "--user", f"{USER}:{PASSWORD}",
                          f"pop3s://localhost:{srv.port}/1"], capture_output=True)
    assert bad.returncode != 0


def test_implicit_tls_poplib_ssl_and_garbage_handshake(popgate, certs):
    srv = tls_server(popgate, certs, "implicit")
    p = poplib.POP3_SSL("127.0.0.1", srv.port, timeout=TIMEOUT, context=client_context(certs["default"][0]))
    assert "USER" in p.capa()
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.stat() == (0, 0)
    p.quit()
    # Plain POP3 on the TLS port gets no greeting, and the server lives on.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
        s.sendall(b"USER bob\r\n")
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"+OK")
    p = poplib.POP3_SSL("127.0.0.1", srv.port, timeout=TIMEOUT, context=client_context(certs["default"][0]))
    p.quit()


def test_tenant_certificate_chosen_by_sni(popgate, certs):
    acme_cert, acme_key = certs["acme"]
    srv = tls_server(popgate, certs, "implicit",
                     tenants={"acme": {"tls": {"certificate": acme_cert, "private_key": acme_key}}})

    def cn_for(server_name, cafile, check=True):
        ctx = client_context(cafile)
        ctx.check_hostname = check
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name) as s:
                return peer_cn(s)

    assert cn_for("pop.acme.example", acme_cert) == "pop.acme.example"
    assert cn_for("acme.example", acme_cert) == "pop.acme.example"
    assert cn_for("pop.test", certs["default"][0]) == "pop.test"
    assert cn_for("other.example", certs["default"][0], check=False) == "pop.test"


def test_certificate_reload_on_sighup_keeps_sessions(popgate, certs):
    srv = tls_server(popgate, certs, "implicit")
    ctx_old = client_context(certs["default"][0])
    old = poplib.POP3_SSL("127.0.0.1", srv.port, timeout=TIMEOUT, context=ctx_old)
    old.user(USER)
    old.pass_(PASSWORD)
    # A new certificate (another CN) replaces the files in place.
    new_cert, new_key = make_cert(certs["dir"], "renewed", "renewed.pop.test", ["pop.test", "localhost", "127.0.0.1"])
    cert, key = certs["default"]
    with open(new_cert, "rb") as src, open(cert, "wb") as dst:
        dst.write(src.read())
    with open(new_key, "rb") as src, open(key, "wb") as dst:
        dst.write(src.read())
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log("TLS certificates reloaded")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
        with client_context(new_cert).wrap_socket(raw, server_hostname="pop.test") as s:
            assert peer_cn(s) == "renewed.pop.test"
    # The session opened before the reload carries on.
    assert old.stat() == (0, 0)
    old.quit()


def test_bad_certificate_config_names_the_key(popgate, certs, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    srv = popgate(listener={"tls": "implicit"}, start=False,
                  extra_toml=f'\n[tls]\ncertificate = "{junk}"\nprivate_key = "{certs["default"][1]}"\n')
    r = srv.check_config()
    assert r.returncode == 2
    assert b"tls" in r.stderr and b"junk.pem" in r.stderr, r.stderr
    srv = popgate(listener={"tls": "implicit"}, start=False)
    r = srv.check_config()
    assert r.returncode == 2 and b"listeners[0].tls" in r.stderr, r.stderr
