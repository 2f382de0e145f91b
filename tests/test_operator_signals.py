"""Signals an operator alerts on, scraped from the real binary: the
configured caps as gauges, each certificate's expiry (following a reload),
and bytes sent counted while a long RETR is still running."""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import time

from popclient import TIMEOUT
from test_metrics import metrics_server, scrape

USER = "bob@acme.example"
EXPIRY = "popgate_tls_certificate_expiry_timestamp_seconds"


def make_cert(directory, name: str, cn: str, days: int) -> tuple[str, str, int]:
    """A self-signed certificate; returns its files and its notAfter."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days),
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={cn}"],
        check=True, capture_output=True,
    )
    end = subprocess.run(["openssl", "x509", "-enddate", "-noout", "-in", str(cert)],
                         check=True, capture_output=True, text=True).stdout.strip()
    return str(cert), str(key), int(ssl.cert_time_to_seconds(end.split("=", 1)[1]))


def test_caps_are_gauges(popgate):
    srv = metrics_server(popgate, server={"max_connections": 1234, "max_connections_per_ip": 7},
                         tenants={"acme": {"max_sessions": 40}})
    s = scrape(srv)
    assert s["popgate_connections_max"] == 1234
    assert s["popgate_connections_per_ip_max"] == 7
    assert s['popgate_tenant_sessions_max{tenant="acme"}'] == 40
    # globex has no cap: no series (an alert's ratio skips it).
    assert not any(k.startswith('popgate_tenant_sessions_max{tenant="globex"') for k in s)


def test_certificate_expiry_per_certificate_follows_a_reload(popgate, tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    cert, key, default_end = make_cert(d, "default", "pop.test", 30)
    acme_cert, acme_key, acme_end = make_cert(d, "acme", "pop.acme.example", 5)
    srv = metrics_server(
        popgate,
        start=False,
        listener={"tls": "starttls", "plaintext_auth": True},
        tenants={"acme": {"tls": {"certificate": acme_cert, "private_key": acme_key}}},
    )
    srv.extra_toml += f'\n[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n'
    srv.write_config()
    srv.start()
    s = scrape(srv)
    assert s[f'{EXPIRY}{{subject_cn="pop.test",tenant="-"}}'] == default_end
    assert s[f'{EXPIRY}{{subject_cn="pop.acme.example",tenant="acme"}}'] == acme_end
    assert len([k for k in s if k.startswith(EXPIRY)]) == 2

    # The renewed certificate replaces the old series after SIGHUP.
    renewed, renewed_key, renewed_end = make_cert(d, "renewed", "pop2.acme.example", 90)
    subprocess.run(["cp", renewed, acme_cert], check=True)
    subprocess.run(["cp", renewed_key, acme_key], check=True)
    srv.proc.send_signal(signal.SIGHUP)
    key = f'{EXPIRY}{{subject_cn="pop2.acme.example",tenant="acme"}}'
    deadline = time.monotonic() + TIMEOUT
    while key not in (s := scrape(srv)):
        assert time.monotonic() < deadline, (s, srv.log())
        time.sleep(0.1)
    assert s[key] == renewed_end
    assert f'{EXPIRY}{{subject_cn="pop.acme.example",tenant="acme"}}' not in s
    assert s[f'{EXPIRY}{{subject_cn="pop.test",tenant="-"}}'] == default_end


def test_bytes_sent_are_counted_while_a_long_retr_runs(popgate):
    srv = metrics_server(popgate)
    line = b"x" * 998 + b"\r\n"
    big = b"Subject: big\r\n\r\n" + line * 20_000  # about 20 MB
    srv.drop(USER, big)
    before = scrape(srv)['popgate_sent_bytes_total{tenant="acme"}']
    c = srv.session(USER)
    c.send("RETR 1\r\n")
    got = c.sock.recv(65536)
    assert got.startswith(b"+OK"), got[:80]
    # The client reads no more: the server is blocked mid-message, and what
    # it wrote so far is already counted.
    deadline = time.monotonic() + TIMEOUT
    while (mid := scrape(srv)['popgate_sent_bytes_total{tenant="acme"}'] - before) < 65536:
        assert time.monotonic() < deadline, mid
        time.sleep(0.05)
    assert mid < len(big), mid
    assert scrape(srv)["popgate_sessions_active"] == 1
    # Read the rest: the counter moves on while the RETR goes on.
    received = len(got)
    while received < len(big) // 2:
        chunk = c.sock.recv(1 << 20)
        assert chunk, "the server closed mid-RETR"
        received += len(chunk)
    deadline = time.monotonic() + TIMEOUT
    # What the client has read, the server wrote: counted by now.
    while (later := scrape(srv)['popgate_sent_bytes_total{tenant="acme"}'] - before) < received:
        assert time.monotonic() < deadline, (mid, later, received)
        time.sleep(0.05)
    assert mid < later < len(big), (mid, later)
    assert scrape(srv)["popgate_sessions_active"] == 1
    c.body()
    c.ok("QUIT")
    c.close()
    log = srv.wait_log('outcome="quit"')
    total = int(re.findall(r"bytes_sent=(\d+)", log)[-1])
    s = scrape(srv)
    # Every byte counted once, all under acme (the greeting too: it was
    # held until the credentials named the tenant): the session's own total.
    assert s['popgate_sent_bytes_total{tenant="acme"}'] - before == total
    assert total > len(big)
