"""End-to-end: a tenant whose logins an HTTP auth service checks (nginx's
auth_http), through the real binary. The service is Python's http.server
in a thread of the test, recording what it is sent.
"""

from __future__ import annotations

import json
import poplib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import run_popgate

TOKEN = "hook-token-s3cret"


class Hook:
    """Allows bob@globex.example with "hook-bob-pw"; answers 500 for
    broken@globex.example; takes 10 s for slow@globex.example."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.requests.append(body)
                hook.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, answer = hook.answer(body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pop3"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, body: dict):
        user = body.get("user")
        if body["request"] == "lookup":
            return 200, {"exists": user in ("bob@globex.example", "slow@globex.example")}
        if body["request"] == "ping":
            return 200, {}
        if user == "broken@globex.example":
            return 500, {"error": "database down"}
        if user == "slow@globex.example":
            time.sleep(10)
        allow = user == "bob@globex.example" and body["password"] == "hook-bob-pw"
        return 200, {"allow": allow, "reason": None if allow else "no"}

    def auths(self, user: str) -> list[dict]:
        return [r for r in self.requests if r["request"] == "auth" and r["user"] == user]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def pop_login(port: int, user: str, password: str) -> poplib.POP3:
    p = poplib.POP3("127.0.0.1", port, timeout=30)
    p.user(user)
    p.pass_(password)
    return p


def login_error(port: int, user: str, password: str) -> bytes:
    with pytest.raises(poplib.error_proto) as e:
        pop_login(port, user, password)
    return e.value.args[0]


def test_http_hook_checks_logins_with_poplib(popgate, hook, tmp_path):
    token = tmp_path / "hook.token"
    token.write_text(TOKEN + "\n")
    auth = {"kind": "http", "url": hook.url, "timeout": "1s", "cache_ttl": "60s",
            "bearer_token_file": str(token)}
    srv = popgate(tenants={"globex": {"auth": auth}})
    srv.deliver("bob@globex.example", b"Subject: via hook\r\n\r\nhello\r\n")
    r = run_popgate(["deliver", "--config", str(srv.config_path), "--user", "nobody@globex.example"],
                    input=b"Subject: x\r\n\r\nx\r\n")
    assert r.returncode == 67, r.stderr.decode()

    for _ in range(2):
        p = pop_login(srv.port, "bob@globex.example", "hook-bob-pw")
        assert p.stat()[0] == 1
        p.quit()
    sent = hook.auths("bob@globex.example")
    assert len(sent) == 1, "the second login is answered from the cache"
    assert sent[0] == {
        "request": "auth", "tenant": "globex", "user": "bob@globex.example", "local": "bob",
        "domain": "globex.example", "password": "hook-bob-pw", "client": "127.0.0.1",
        "mechanism": "plain",
    }
    assert hook.headers[-1]["authorization"] == f"Bearer {TOKEN}"

    # A deny is not cached: each wrong password is asked.
    for _ in range(2):
        assert login_error(srv.port, "bob@globex.example", "wrong").startswith(b"-ERR [AUTH]")
    assert len(hook.auths("bob@globex.example")) == 3
    # A broken or slow service is a temporary failure, not a wrong password.
    assert login_error(srv.port, "broken@globex.example", "x").startswith(b"-ERR [SYS/TEMP]")
    assert login_error(srv.port, "slow@globex.example", "x").startswith(b"-ERR [SYS/TEMP]")
    log = srv.log()
    assert "hook-bob-pw" not in log and TOKEN not in log
    # check-config names a bad key.
    bad = popgate(tenants={"globex": {"auth": {**auth, "url": "ftp://x/"}}}, start=False)
    r = bad.check_config()
    assert r.returncode == 2 and b"tenants[1].auth.url" in r.stderr, r.stderr
