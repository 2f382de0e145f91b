"""TLS terminated by a real haproxy in front of popgate: `send-proxy-v2-ssl`
tells popgate the client spoke TLS to the balancer (PP2_TYPE_SSL), so a
`plaintext_auth = false` listener lets that client log in, offers it no STLS,
and logs and counts it as TLS. A plain `send-proxy-v2` path, or
`send-proxy-v2-ssl` from a plain-TCP frontend (the TLV without the SSL bit),
changes nothing: plaintext login stays refused."""

from __future__ import annotations

import poplib
import shutil
import ssl
import subprocess
import time

import pytest

from conftest import free_port
from popclient import TIMEOUT, Pop3
from test_metrics import scrape

USER = "bob@acme.example"
PASSWORD = "secret"
MESSAGE = b"Subject: via haproxy TLS\r\n\r\nhello over TLS\r\n"


@pytest.fixture
def edge_cert(tmp_path):
    """A self-signed certificate for 127.0.0.1: (cert, key, pem for haproxy)."""
    cert, key, pem = tmp_path / "edge.crt", tmp_path / "edge.key", tmp_path / "edge.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=pop.test",
         "-addext", "subjectAltName=DNS:pop.test,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return str(cert), str(key), str(pem)


class Haproxy:
    """haproxy with three frontends onto one popgate listener:
    `tls` (TLS terminated, send-proxy-v2-ssl), `plain` (send-proxy-v2) and
    `plain_ssl_tlv` (plain TCP, send-proxy-v2-ssl: the TLV without the SSL bit)."""

    def __init__(self, tmp_path, pem: str, backend_port: int, client_ca: str | None = None):
        self.ports = {"tls": free_port(), "plain": free_port(), "plain_ssl_tlv": free_port(), "mtls": free_port()}
        # With client_ca: a frontend that asks for a client certificate and
        # lets a bad one through (verify optional, errors ignored), so the
        # PROXY header carries the failed verify result.
        mtls = (
            f"frontend mtls\n  bind 127.0.0.1:{self.ports['mtls']} ssl crt {pem} ca-file {client_ca} "
            "verify optional crt-ignore-err all ca-ignore-err all\n  default_backend ssl\n"
        ) if client_ca else ""
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(
            "global\n  log stderr format raw local0\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
            + mtls +
            f"frontend tls\n  bind 127.0.0.1:{self.ports['tls']} ssl crt {pem}\n  default_backend ssl\n"
            f"frontend plain\n  bind 127.0.0.1:{self.ports['plain']}\n  default_backend plain\n"
            f"frontend plain_ssl_tlv\n  bind 127.0.0.1:{self.ports['plain_ssl_tlv']}\n  default_backend ssl\n"
            f"backend ssl\n  server p1 127.0.0.1:{backend_port} send-proxy-v2-ssl\n"
            f"backend plain\n  server p1 127.0.0.1:{backend_port} send-proxy-v2\n"
        )
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.proc = subprocess.Popen([binary, "-f", str(cfg), "-db"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                Pop3(self.ports["plain"]).close()
                return
            except (ConnectionRefusedError, EOFError):
                assert self.proc.poll() is None, self.proc.stderr.read().decode()
                assert time.monotonic() < deadline, "haproxy did not start"
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def edge(popgate, tmp_path, edge_cert):
    """popgate's listener: tls = "none", plaintext_auth = false, behind haproxy."""
    metrics_port = free_port()
    srv = popgate(
        listener={"tls": "none", "plaintext_auth": False, "proxy_protocol": True,
                  "trusted_proxies": ["127.0.0.1"]},
        extra_toml=f'\n[metrics]\naddress = "127.0.0.1:{metrics_port}"\n',
    )
    srv.metrics_port, srv.metrics_headers = metrics_port, {}
    srv.deliver(USER, MESSAGE)
    hap = Haproxy(tmp_path, edge_cert[2], srv.port)
    yield srv, hap, edge_cert[0]
    hap.stop()


def tls_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def test_tls_to_haproxy_logs_in_on_a_plaintext_auth_false_listener(edge):
    srv, hap, ca = edge
    before = scrape(srv).get('popgate_tls_handshakes_total{kind="proxy"}', 0)
    p = poplib.POP3_SSL("127.0.0.1", hap.ports["tls"], timeout=TIMEOUT, context=tls_context(ca))
    capa = p.capa()
    assert "USER" in capa and "STLS" not in capa, capa
    # Already TLS: STLS is refused, and the session goes on.
    with pytest.raises(poplib.error_proto, match="STLS is not available"):
        p._shortcmd("STLS")
    p.user(USER)
    p.pass_(PASSWORD)
    resp, lines, _ = p.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == MESSAGE
    p.quit()
    log = srv.wait_log('outcome="quit"')
    login = next(line for line in log.splitlines() if "login mechanism" in line)
    assert 'tls_via="proxy"' in login and "tls=true" in login, login
    after = scrape(srv)['popgate_tls_handshakes_total{kind="proxy"}']
    assert after == before + 1


def test_openssl_s_client_through_haproxy_logs_in(edge):
    srv, hap, ca = edge
    script = f"CAPA\r\nUSER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nQUIT\r\n".encode()
    r = subprocess.run(
        ["openssl", "s_client", "-quiet", "-CAfile", ca, "-verify_return_error",
         "-connect", f"127.0.0.1:{hap.ports['tls']}"],
        input=script, capture_output=True, timeout=30,
    )
    out = r.stdout.decode(errors="replace")
    assert "+OK Logged in, 1 messages" in out, (out, r.stderr.decode(errors="replace"))
    assert "+OK 1 " in out and "STLS" not in out, out


@pytest.mark.parametrize("path", ["plain", "plain_ssl_tlv"])
def test_plain_path_is_refused_plaintext_login(edge, path):
    srv, hap, _ = edge
    with Pop3(hap.ports[path]) as c:
        capa = c.ok("CAPA") and c.multi()
        assert b"USER" not in capa, capa
        status = c.cmd(f"USER {USER}")
        assert status.startswith(b"-ERR"), status
        status = c.cmd("AUTH PLAIN AGJvYkBhY21lLmV4YW1wbGUAc2VjcmV0")
        assert status.startswith(b"-ERR"), status
        c.ok("QUIT")
    log = srv.wait_log('outcome="quit"')
    assert 'tls_via="proxy"' not in log
    assert "tls=false" in log
    assert scrape(srv).get('popgate_tls_handshakes_total{kind="proxy"}', 0) == 0


def test_starttls_listener_behind_tls_haproxy_offers_no_stls(popgate, tmp_path, edge_cert):
    cert, key, pem = edge_cert
    srv = popgate(
        listener={"tls": "starttls", "plaintext_auth": False, "proxy_protocol": True,
                  "trusted_proxies": ["127.0.0.1"]},
        extra_toml=f'\n[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n',
    )
    srv.deliver(USER, MESSAGE)
    hap = Haproxy(tmp_path, pem, srv.port)
    try:
        p = poplib.POP3_SSL("127.0.0.1", hap.ports["tls"], timeout=TIMEOUT, context=tls_context(cert))
        assert "STLS" not in p.capa()
        p.user(USER)
        p.pass_(PASSWORD)
        assert p.stat()[0] == 1
        p.quit()
        # The plain path still gets STLS, and upgrades through haproxy.
        p = poplib.POP3("127.0.0.1", hap.ports["plain"], timeout=TIMEOUT)
        assert "STLS" in p.capa()
        p.stls(context=tls_context(cert))
        p.user(USER)
        p.pass_(PASSWORD)
        assert p.stat()[0] == 1
        p.quit()
    finally:
        hap.stop()


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def test_a_client_certificate_must_have_verified(popgate, tmp_path, edge_cert):
    """PP2_TYPE_SSL's verify field is about a client certificate: one the
    balancer verified keeps the connection TLS, one that failed (let through
    by `verify optional` with its errors ignored) does not."""
    d = tmp_path / "clients"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=client CA",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=good client",
            "-keyout", str(d / "good.key"), "-out", str(d / "good.csr"))
    openssl("x509", "-req", "-in", str(d / "good.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-days", "2", "-out", str(d / "good.crt"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=stranger",
            "-keyout", str(d / "bad.key"), "-out", str(d / "bad.crt"))
    srv = popgate(listener={"tls": "none", "plaintext_auth": False, "proxy_protocol": True,
                            "trusted_proxies": ["127.0.0.1"]})
    hap = Haproxy(tmp_path, edge_cert[2], srv.port, client_ca=str(d / "ca.crt"))
    try:
        def login(name: str) -> bytes:
            ctx = tls_context(edge_cert[0])
            ctx.load_cert_chain(str(d / f"{name}.crt"), str(d / f"{name}.key"))
            p = poplib.POP3_SSL("127.0.0.1", hap.ports["mtls"], timeout=TIMEOUT, context=ctx)
            try:
                p.user(USER)
                return p.pass_(PASSWORD)
            except poplib.error_proto as e:
                return e.args[0]
            finally:
                p.close()

        assert login("good").startswith(b"+OK"), "a verified client certificate"
        refused = login("bad")
        assert refused.startswith(b"-ERR"), refused
        # Both reached popgate through the TLS frontend; one counts as TLS.
        deadline = time.monotonic() + TIMEOUT
        while len(ends := [x for x in srv.log().splitlines() if "session end" in x]) < 3:
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.05)
        assert len([x for x in ends if 'tls_via="proxy"' in x]) == 1, ends
    finally:
        hap.stop()
