"""`*_file` variants of every secret, as Kubernetes and Docker mount them:
the file is read at start (one trailing newline trimmed), exactly one of
`foo` and `foo_file` may be set, and errors name the key and the path.
Each secret is used for real: Redis with a password, PostgreSQL, S3, and
the metrics bearer token."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from conftest import free_port, run_popgate
from popclient import GLOBEX_USERS
from s3client import ACCESS_KEY, SECRET_KEY, S3Server
from test_metrics import http_get
from test_postgres import PG_URL, pg_schema, user_cmd  # noqa: F401  (a fixture)

USER = "bob@acme.example"
REDIS_PASSWORD = "s3cr3t-redis pw"


def secret(tmp_path, name: str, value: str) -> str:
    """A secret file as Kubernetes mounts it (with a trailing newline)."""
    path = tmp_path / "secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(value + "\n")
    return str(path)


@pytest.fixture
def redis_with_password(tmp_path):
    """A private redis-server that wants a password."""
    assert shutil.which("redis-server"), "redis-server is not installed: scripts/test installs it"
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--requirepass", REDIS_PASSWORD],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield port
    proc.kill()
    proc.wait(timeout=10)


def test_redis_url_and_bearer_token_from_files(popgate, tmp_path, redis_with_password):
    port = redis_with_password
    url = secret(tmp_path, "redis-url", f"redis://:{REDIS_PASSWORD.replace(' ', '%20')}@127.0.0.1:{port}")
    token = secret(tmp_path, "metrics-token", "tok3n-from-file")
    metrics_port = free_port()
    srv = popgate(extra_toml=(
        f'\n[locks]\nbackend = "redis"\nurl_file = "{url}"\nkey_prefix = "secretfiles"\n'
        f'\n[metrics]\naddress = "127.0.0.1:{metrics_port}"\nbearer_token_file = "{token}"\n'
    ), start=False)
    r = srv.check_config()
    assert r.returncode == 0, r.stderr.decode()
    srv.start()
    srv.deliver(USER, b"Subject: locked\r\n\r\nvia redis\r\n")
    with srv.session(USER) as c:
        assert c.retr(1)[1] == b"Subject: locked\r\n\r\nvia redis\r\n"
        # The lock is in the password-protected Redis.
        keys = subprocess.run(["redis-cli", "-p", str(port), "--no-auth-warning", "-a", REDIS_PASSWORD,
                               "--scan", "--pattern", "secretfiles:*"], capture_output=True, text=True)
        assert "secretfiles:" in keys.stdout, keys
        c.ok("QUIT")
    # The token is the file's content without its newline.
    assert http_get(metrics_port, "/metrics")[0] == 401
    assert http_get(metrics_port, "/metrics", {"Authorization": "Bearer tok3n-from-file"})[0] == 200
    assert REDIS_PASSWORD not in srv.log()


def test_postgres_url_from_a_file(popgate, tmp_path, pg_schema):  # noqa: F811
    url = secret(tmp_path, "pg-url", PG_URL)
    section = {"kind": "postgres", "url_file": url, "schema": pg_schema}
    srv = popgate(tenants={"globex": {"auth": section, "store": section}}, start=False)
    r = run_popgate(["migrate", "--config", str(srv.config_path)], env=srv.env)
    assert r.returncode == 0, r.stderr.decode()
    login, (_, password) = next(iter(GLOBEX_USERS.items()))
    r = user_cmd(srv, "add", login, password, "--scheme", "PLAIN")
    assert r.returncode == 0, r.stderr.decode()
    srv.start()
    srv.deliver(login, b"Subject: pg\r\n\r\nfrom postgres\r\n")
    with srv.session(login, password) as c:
        assert c.retr(1)[1] == b"Subject: pg\r\n\r\nfrom postgres\r\n"
        c.ok("QUIT")


def test_s3_keys_from_files(popgate, tmp_path):
    s3 = S3Server(tmp_path / "s3").start()
    try:
        s3.client.create_bucket()
        store = s3.store()
        del store["access_key_id"], store["secret_access_key"]
        store["access_key_id_file"] = secret(tmp_path, "s3-id", ACCESS_KEY)
        store["secret_access_key_file"] = secret(tmp_path, "s3-secret", SECRET_KEY)
        srv = popgate(tenants={"acme": {"store": store}})
        srv.deliver(USER, b"Subject: s3\r\n\r\nfrom s3\r\n")
        with srv.session(USER) as c:
            assert c.retr(1)[1] == b"Subject: s3\r\n\r\nfrom s3\r\n"
            c.ok("QUIT")
    finally:
        s3.stop()


def test_bad_secret_files_name_the_key_and_path_before_listening(popgate, tmp_path):
    token = secret(tmp_path, "token", "t")
    metrics_port = free_port()
    cases = {
        # A file that is not there.
        f'\n[metrics]\naddress = "127.0.0.1:{metrics_port}"\nbearer_token_file = "/nonexistent/token"\n':
            ("metrics.bearer_token_file", "/nonexistent/token"),
        # Both the value and the file.
        f'\n[metrics]\naddress = "127.0.0.1:{metrics_port}"\nbearer_token = "x"\nbearer_token_file = "{token}"\n':
            ("metrics.bearer_token_file", "metrics.bearer_token is set too"),
        '\n[locks]\nbackend = "redis"\nurl_file = "/nonexistent/redis-url"\n':
            ("locks.url_file", "/nonexistent/redis-url"),
    }
    for toml, (key, detail) in cases.items():
        srv = popgate(extra_toml=toml, start=False)
        r = srv.check_config()
        err = r.stderr.decode()
        assert r.returncode == 2 and key in err and detail in err, err
        # serve refuses it too, before anything listens.
        srv.start(wait=False)
        assert srv.proc.wait(timeout=30) != 0
        assert key in srv.log() and detail in srv.log(), srv.log()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    # An empty file, in a tenant's section.
    empty = tmp_path / "secrets" / "empty"
    empty.write_text("\n")
    section = {"kind": "postgres", "url_file": str(empty), "schema": "x"}
    srv = popgate(tenants={"globex": {"auth": section, "store": section}}, start=False)
    r = srv.check_config()
    err = r.stderr.decode()
    assert r.returncode == 2 and "tenants[1].auth.url_file" in err and "empty" in err, err


def test_sentinel_and_cluster_url_lists_from_files(popgate, tmp_path):
    """The node lists may carry passwords: one URL a line of a file."""
    nodes = secret(tmp_path, "cluster", "# the seed nodes\nredis://:pw@127.0.0.1:7000\n\nredis://:pw@127.0.0.1:7001")
    sentinels = secret(tmp_path, "sentinels", "redis://:spw@127.0.0.1:26379")
    good = [
        f'\n[locks]\nbackend = "redis"\ncluster_file = "{nodes}"\n',
        f'\n[locks]\nbackend = "redis"\nsentinels_file = "{sentinels}"\nmaster_name = "m"\n',
    ]
    for toml in good:
        r = popgate(extra_toml=toml, start=False).check_config()
        assert r.returncode == 0, r.stderr.decode()
    bad_urls = secret(tmp_path, "bad", "http://127.0.0.1:7000")
    comments = secret(tmp_path, "comments", "# none yet")
    cases = {
        f'\n[locks]\nbackend = "redis"\ncluster_file = "{bad_urls}"\n': ("locks.cluster", "http"),
        f'\n[locks]\nbackend = "redis"\ncluster_file = "{comments}"\n': ("locks.cluster_file", "no URL"),
        f'\n[locks]\nbackend = "redis"\ncluster = ["redis://h:1"]\ncluster_file = "{nodes}"\n':
            ("locks.cluster_file", "locks.cluster is set too"),
        '\n[locks]\nbackend = "redis"\nsentinels_file = "/nonexistent/sentinels"\nmaster_name = "m"\n':
            ("locks.sentinels_file", "/nonexistent/sentinels"),
    }
    for toml, (key, detail) in cases.items():
        r = popgate(extra_toml=toml, start=False).check_config()
        err = r.stderr.decode()
        assert r.returncode == 2 and key in err and detail in err, err
        assert "pw@" not in err, "never a password from the file"
