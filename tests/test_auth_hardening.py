"""Password hashing cannot be turned into a weapon, and logins honour
Dovecot's allow_nets (issue 12), against the real binary:

- a stored hash above the cost caps is refused unhashed (the login fails
  like a wrong password, the log names the cap; check-config and the load
  step name the file and line);
- a wait for a hashing slot has a deadline and answers [SYS/TEMP]; one
  tenant's flood of logins leaves a slot for the others; a flood of argon2
  logins at Dovecot's cost neither holds up a logged-in session's RETR nor
  takes more memory than the slots allow;
- an unknown domain or an invalid local part fails in the time of a wrong
  password;
- allow_nets admits only its networks, for the client address after PROXY.
"""

from __future__ import annotations

import re
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest

from conftest import run_popgate
from popclient import AUTH_FAILED, TIMEOUT, Pop3

SYS_TEMP = b"-ERR [SYS/TEMP] Authentication service unavailable, try again later."

# Well-formed argon2id data that no password we send matches: verifying it
# costs the full price of its parameters.
FAKE_ARGON2 = "{{ARGON2ID}}$argon2id$v=19$m={m},t={t},p=1$JXUHjdgiKdKsBKMYU5rWQw$SCVqWqgYNPyo6+EjwdPu7UmRru+OvfFiU/VhAHhPjc4"
HUGE = FAKE_ARGON2.format(m=1024 * 1024, t=1)  # 1 GiB per login
SLOW = FAKE_ARGON2.format(m=65536, t=8)  # within the default caps, but slow


def add_users(srv, tenant: str, lines: list[str]) -> dict[str, int]:
    """Appends passwd-file lines; returns user -> line number."""
    path = srv.passwd[tenant]
    before = path.read_text().splitlines()
    path.write_text("\n".join(before + lines) + "\n")
    return {line.split(":", 1)[0]: len(before) + i + 1 for i, line in enumerate(lines)}


def attempt(port: int, user: str, password: str) -> tuple[bytes, float]:
    """One USER/PASS on a fresh connection: the PASS answer and its latency."""
    with Pop3(port) as c:
        assert c.cmd(f"USER {user}").startswith(b"+OK")
        started = time.monotonic()
        answer = c.cmd(f"PASS {password}")
        return answer, time.monotonic() - started


def proxied(port: int, header: bytes, user: str, password: str) -> bytes:
    """A login behind a PROXY v1 header: the PASS answer."""
    c = Pop3(port, greeting=False)
    try:
        c.send(header)
        assert c.line().startswith(b"+OK")
        return c.login(user, password)
    finally:
        c.close()


# --------------------------------------------------------------------------
# cost caps


def test_hash_above_the_cap_is_refused_unhashed_and_named(popgate):
    srv = popgate(start=False)
    lines = add_users(srv, "acme", [f"huge@acme.example:{HUGE}", f"huge2@acme.example:{HUGE}"])
    srv.start()
    answer, took = attempt(srv.port, "huge@acme.example", "anything")
    # A wrong-password failure, not [SYS/TEMP]: the account is no oracle.
    assert answer == AUTH_FAILED
    # Not hashed: 1 GiB of argon2 would show in the peak RSS and the time.
    peak_mb = srv.memory_kb("VmHWM") / 1024
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"
    assert took < 5, took
    log = srv.wait_log("login refused: password hash above the cost cap")
    refusals = [ln for ln in log.splitlines() if "login refused: password hash above the cost cap" in ln]
    assert len(refusals) == 1 and "huge@acme.example" in refusals[0], log
    assert "argon2_max_memory = 65536 KiB" in refusals[0] and "m=1048576 KiB" in refusals[0], refusals
    # The load step named file and line of each.
    path = str(srv.passwd["acme"])
    for user, n in lines.items():
        assert re.search(rf"file={re.escape(path)} line={n} user=\"?{re.escape(user)}", log), (user, n, log)
    assert "JXUHjdgi" not in log
    # Once per user, not once per login.
    assert attempt(srv.port, "huge@acme.example", "again")[0] == AUTH_FAILED
    time.sleep(0.2)
    assert srv.log().count("login refused: password hash above the cost cap") == 1
    # Ordinary users are served.
    srv.session("alice@acme.example").close()


def test_cost_caps_are_configured(popgate):
    # `popgate pw` writes argon2id with m=19 MiB: a 16 MiB cap refuses it.
    srv = popgate(server={"password_hashing": {"argon2_max_memory": "16MiB", "bcrypt_max_cost": 4}})
    assert attempt(srv.port, "alice@acme.example", srv.password("alice@acme.example"))[0] == AUTH_FAILED
    log = srv.wait_log("argon2_max_memory = 16384 KiB")
    assert "m=19456 KiB" in log, log
    srv.session("carol@acme.example").close()  # SHA512-CRYPT, 5000 rounds: fine


@pytest.mark.parametrize(
    "setting, key",
    [
        ({"argon2_max_memory": 65536}, "argon2_max_memory"),  # no unit
        ({"argon2_max_memory": "lots"}, "argon2_max_memory"),
        ({"bcrypt_max_cost": 32}, "bcrypt_max_cost"),
        ({"sha_crypt_max_rounds": 10}, "sha_crypt_max_rounds"),
        ({"slots": 0}, "slots"),
        ({"wait": "0s"}, "wait"),
        ({"slots": 2, "tenant_slots": 3}, "tenant_slots"),
        ({"argon2_max_lanes": 0}, "argon2_max_lanes"),
        ({"nice": 20}, "nice"),
        ({"slotz": 2}, "slotz"),
    ],
)
def test_bad_hashing_settings_name_the_key(popgate, setting, key):
    srv = popgate(server={"password_hashing": setting}, start=False)
    r = srv.check_config()
    assert r.returncode == 2, r
    err = r.stderr.decode()
    assert key in err and "password_hashing" in err, err


def test_check_config_names_file_and_line_above_the_cap(popgate):
    srv = popgate(start=False)
    lines = add_users(srv, "acme", [f"huge@acme.example:{HUGE}"])
    r = srv.check_config()
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode() + r.stderr.decode()
    path = str(srv.passwd["acme"])
    n = lines["huge@acme.example"]
    assert "huge@acme.example" in out, out
    assert f"{path}:{n}" in out or re.search(rf"file={re.escape(path)} line={n}\b", out), out
    assert "argon2_max_memory" in out, out


# --------------------------------------------------------------------------
# hashing slots


def slow_login_seconds(srv) -> float:
    return min(attempt(srv.port, "slow@acme.example", "wrong")[1] for _ in range(2))


def parallel_attempts(port: int, n: int, user: str) -> list[bytes]:
    answers: list[bytes] = [b""] * n

    def one(i: int) -> None:
        answers[i] = attempt(port, user, f"wrong{i}")[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def test_a_wait_for_a_hashing_slot_answers_sys_temp(popgate):
    srv = popgate(server={"password_hashing": {"slots": 1, "wait": "200ms"}}, start=False)
    add_users(srv, "acme", [f"slow@acme.example:{SLOW}"])
    srv.start()
    one = slow_login_seconds(srv)
    assert one > 0.25, f"the slow hash takes only {one:.3f}s here"
    answers = parallel_attempts(srv.port, 5, "slow@acme.example")
    assert SYS_TEMP in answers, answers
    assert AUTH_FAILED in answers, answers
    assert set(answers) <= {SYS_TEMP, AUTH_FAILED}, answers
    log = srv.wait_log("no password-hashing slot free within 200ms")
    assert "directory failure" in log
    # Afterwards the service is there again.
    srv.session("bob@acme.example").close()


def test_one_tenant_leaves_a_slot_for_the_others(popgate):
    srv = popgate(server={"password_hashing": {"slots": 2, "wait": "30s"}}, start=False)
    add_users(srv, "acme", [f"slow@acme.example:{SLOW}"])
    srv.start()
    one = slow_login_seconds(srv)
    results: list[bytes] = []
    flood = threading.Thread(target=lambda: results.extend(parallel_attempts(srv.port, 6, "slow@acme.example")))
    flood.start()
    time.sleep(min(0.3, one / 2))
    # acme's six slow checks are queued; globex's login still goes through
    # at once instead of waiting behind them.
    answer, took = attempt(srv.port, "bob@globex.example", "globex-secret")
    flood.join(120)
    assert answer.startswith(b"+OK"), answer
    assert took < one, f"globex waited {took:.3f}s behind acme (one slow check: {one:.3f}s)"
    assert results == [AUTH_FAILED] * 6, results


def test_argon2_flood_neither_stalls_sessions_nor_grows_memory_past_the_slots(popgate):
    # Dovecot's ARGON2ID cost (m=64 MiB, t=3): 12 logins at once would
    # take 768 MiB if each hashed when it came; 2 slots allow 128 MiB.
    slots, flood, argon2_kb = 2, 12, 64 * 1024
    srv = popgate(
        server={
            "password_hashing": {"slots": slots, "tenant_slots": slots, "wait": "120s"},
            "auth_failure_delay": "0s", "auth_penalty": "1ms", "auth_penalty_max": "1ms",
        },
        start=False,
    )
    add_users(srv, "acme", [f"dove@acme.example:{FAKE_ARGON2.format(m=65536, t=3)}"])
    srv.start()
    body = b"".join(b"line %d of a message read during the flood\n" % i for i in range(1500))
    srv.deliver("bob@acme.example", b"Subject: during\n\n" + body)
    reader = srv.session("bob@acme.example")
    Path(f"/proc/{srv.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = srv.memory_kb("VmRSS")
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda i=i: answers.append(attempt(srv.port, "dove@acme.example", f"no{i}")[0]))
               for i in range(flood)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the slots are busy hashing, the other logins queued
    for _ in range(3):
        status, data = reader.retr(1)
        assert status.startswith(b"+OK") and data.count(b"during the flood") == 1500, status
    # The session was served while the logins were still hashing.
    answered_when_read = len(answers)
    for t in threads:
        t.join(120)
    assert answered_when_read < flood, "the RETRs finished only after every argon2 login"
    assert answers == [AUTH_FAILED] * flood, answers
    grown = srv.memory_kb("VmHWM") - before
    print(f"peak RSS grew {grown / 1024:.0f} MiB over the flood; {answered_when_read} of {flood} answered by the RETRs")
    assert grown >= argon2_kb // 2, f"grew only {grown} kB: argon2 did not run at its cost"
    assert grown < (slots + 1) * argon2_kb, f"grew {grown} kB: more than {slots} argon2 checks at once"
    reader.ok("QUIT")


# --------------------------------------------------------------------------
# timing of unknown domains


def test_unknown_domains_and_bad_names_take_a_wrong_passwords_time(popgate, tmp_path):
    # acme's users all have ARGON2ID (as `popgate pw` makes them).
    lines = []
    for user in ("ann", "bea", "cid"):
        r = run_popgate(["pw", "--scheme", "ARGON2ID"], input=b"right\n")
        assert r.returncode == 0, r.stderr
        lines.append(f"{user}@acme.example:{r.stdout.decode().strip()}")
    passwd = tmp_path / "argon.passwd"
    passwd.write_text("\n".join(lines) + "\n")
    srv = popgate(
        server={"auth_failure_delay": "0s", "auth_penalty": "1ms", "auth_penalty_max": "1ms", "max_auth_failures": 50},
        tenants={"acme": {"auth": {"kind": "passwd-file", "path": str(passwd)}}},
    )
    times: dict[str, list[float]] = {"wrong": [], "domain": [], "local": []}
    for i in range(9):
        for kind, user in (
            ("wrong", "ann@acme.example"),
            ("domain", f"ann{i}@unknown-{i}.example"),
            ("local", "a..b@acme.example"),
        ):
            answer, took = attempt(srv.port, user, f"guess{i}")
            assert answer == AUTH_FAILED, (user, answer)
            times[kind].append(took)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("median failure latency:", {k: f"{v * 1000:.1f} ms" for k, v in med.items()})
    assert med["wrong"] > 0.005, med  # the argon2 hash is really computed
    for kind in ("domain", "local"):
        ratio = med[kind] / med["wrong"]
        assert 0.5 <= ratio <= 2.0, (kind, ratio, med)


# --------------------------------------------------------------------------
# allow_nets


NETS_USERS = [
    "netted@acme.example:{PLAIN}netpw::::::allow_nets=127.0.0.0/8,::1",
    "tenner@acme.example:{PLAIN}tenpw::::::allow_nets=10.0.0.0/8",
    "sixer@acme.example:{PLAIN}sixpw::::::allow_nets=[2001:db8::]/32",
]


def test_allow_nets_admits_only_its_networks(popgate):
    srv = popgate(start=False)
    add_users(srv, "acme", NETS_USERS)
    srv.start()
    srv.session("netted@acme.example", "netpw").close()
    assert attempt(srv.port, "tenner@acme.example", "tenpw")[0] == AUTH_FAILED
    log = srv.wait_log("not in the user's allow_nets")
    line = next(ln for ln in log.splitlines() if "not in the user's allow_nets" in ln)
    assert "tenner@acme.example" in line and "127.0.0.1" in line, line
    # A wrong password is just that, and not logged as a network refusal.
    assert attempt(srv.port, "netted@acme.example", "nope")[0] == AUTH_FAILED
    time.sleep(0.2)
    assert srv.log().count("not in the user's allow_nets") == 1


def test_allow_nets_uses_the_address_after_proxy(popgate):
    srv = popgate(listener={"proxy_protocol": True, "trusted_proxies": ["127.0.0.1"]}, start=False)
    add_users(srv, "acme", NETS_USERS)
    srv.start()
    v1 = lambda src, fam="TCP4", dst="127.0.0.1": f"PROXY {fam} {src} {dst} 40001 110\r\n".encode()  # noqa: E731
    # From 10.1.2.3 (as the trusted proxy says): tenner in, netted out,
    # although the TCP peer is 127.0.0.1.
    assert proxied(srv.port, v1("10.1.2.3"), "tenner@acme.example", "tenpw").startswith(b"+OK")
    assert proxied(srv.port, v1("10.1.2.3"), "netted@acme.example", "netpw") == AUTH_FAILED
    assert proxied(srv.port, v1("127.0.0.9"), "netted@acme.example", "netpw").startswith(b"+OK")
    # IPv6 clients.
    assert proxied(srv.port, v1("::1", "TCP6", "::1"), "netted@acme.example", "netpw").startswith(b"+OK")
    assert proxied(srv.port, v1("2001:db8:5::1", "TCP6", "::1"), "sixer@acme.example", "sixpw").startswith(b"+OK")
    assert proxied(srv.port, v1("2001:db9::1", "TCP6", "::1"), "sixer@acme.example", "sixpw") == AUTH_FAILED
    log = srv.wait_log("not in the user's allow_nets")
    assert "10.1.2.3" in log and "2001:db9::1" in log, log
