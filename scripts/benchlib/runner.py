"""The load: pop3-loadgen runs, the scenarios, and the UIDL/LIST cross-check."""

from __future__ import annotations

import json
import os
import poplib
import subprocess
import sys
import threading
import time

from .dataset import PASSWORD
from .procfs import status_kb
from .servers import HOST, Dovecot, Popgate, Server


def log(msg: str) -> None:
    print(f"== {msg}", file=sys.stderr, flush=True)


def listing(port: int, user: str) -> list[tuple[str, str]]:
    p = poplib.POP3(HOST, port, timeout=30)
    try:
        p.user(user)
        p.pass_(PASSWORD)
        uidl = [line.decode() for line in p.uidl()[1]]
        lst = [line.decode() for line in p.list()[1]]
        return list(zip(uidl, lst))
    finally:
        p.quit()


def check_same_uidls(pg: Popgate, dc: Dovecot, users: list[str], first: str) -> None:
    for user in users:
        if first == "popgate":
            a = listing(pg.port, user)
            b = listing(dc.port, user)
        else:
            b = listing(dc.port, user)
            a = listing(pg.port, user)
        if a != b or not a:
            diff = [(x, y) for x, y in zip(a, b) if x != y][:3]
            raise SystemExit(f"UIDL/LIST mismatch for {user} ({first} first): "
                             f"popgate {len(a)} lines, dovecot {len(b)}; first differences {diff}")
    log(f"UIDL and LIST identical on both servers for {len(users)} mailboxes ({first} opened them first)")


def loadgen_cmd(loadgen: str, port: int, args: list[str]) -> list[str]:
    return [loadgen, "--host", HOST, "--port", str(port), "--password", PASSWORD, "--json", *args]


def loadgen_result(out: str) -> dict | None:
    """pop3-loadgen's figures: the last JSON line of its output, if any."""
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def run_loadgen(loadgen: str, server: Server, args: list[str], during=None) -> dict:
    """Runs pop3-loadgen against `server`; returns its JSON plus the server's
    CPU seconds and the load generator's own CPU seconds. `during(proc)` is
    called while it runs (it may read READY lines)."""
    cpu0 = server.cpu()
    cs0 = server.context_switches()
    t0 = time.time()
    proc = subprocess.Popen(loadgen_cmd(loadgen, server.port, args), stdout=subprocess.PIPE, text=True)
    extra = during(proc) if during else {}
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    time.sleep(0.3)  # let exited server processes be reaped into the master's times
    cpu = server.cpu() - cpu0
    switches = server.context_switches() - cs0
    r = loadgen_result(out)
    if r is None:
        raise SystemExit(f"pop3-loadgen gave no result against {server.name}: {out!r}")
    r["server"] = server.name
    r["server_cpu_s"] = cpu
    r["server_context_switches"] = switches
    r["client_cpu_s"] = usage.ru_utime + usage.ru_stime
    r["wall_s"] = wall
    r["loadavg"] = os.getloadavg()[0]
    r.update(extra or {})
    if r["errors"]:
        log(f"  {server.name}: {r['errors']} errors: {r['error_details']}")
    return r


def peak_rss_during(server: Server):
    """For the big RETR: samples the server's peak RSS while the load runs."""
    def during(proc):
        if isinstance(server, Popgate):
            with open(f"/proc/{server.pid}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            base = status_kb(server.pid, "VmRSS")
        else:
            base = None
        peak = 0
        stop = threading.Event()

        def sample():
            nonlocal peak
            while not stop.is_set():
                if isinstance(server, Dovecot):
                    for p in server.pop3_pids():
                        peak = max(peak, status_kb(p, "VmHWM"))
                time.sleep(0.005)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        stop.set()
        t.join()
        if isinstance(server, Popgate):
            peak = status_kb(server.pid, "VmHWM")
        return {"peak_rss_kb": peak, "rss_before_kb": base}
    return during


def idle_memory(server: Server):
    def during(proc):
        before = server.memory()
        line = proc.stdout.readline()
        while line and not line.startswith("READY"):
            line = proc.stdout.readline()
        time.sleep(1.0)  # let the last logins settle
        held = server.memory()
        return {"mem_before": before, "mem_held": held, "ready": line.strip()}
    return during


def scenarios(a, work: str) -> list[dict]:
    users = f"1-{a.users}"
    big_users = os.path.join(work, "big.users")
    with open(big_users, "w") as f:
        f.write("big@bench.test\n")
    return [
        {"key": "a", "title": f"(a) login+STAT+QUIT, c={a.login_concurrency}, PLAIN",
         "args": ["--mode", "login", "--user-pattern", "u%04d@bench.test", "--user-range", users,
                  "--concurrency", str(a.login_concurrency), "--duration", f"{a.duration}s"]},
        {"key": "a1", "title": f"(a1) as (a), USER and PASS pipelined",
         "args": ["--mode", "login", "--pipeline", "--user-pattern", "u%04d@bench.test", "--user-range", users,
                  "--concurrency", str(a.login_concurrency), "--duration", f"{a.duration}s"]},
        {"key": "a2", "title": f"(a2) login+STAT+QUIT, c={a.login_concurrency}, SHA512-CRYPT",
         "args": ["--mode", "login", "--user-pattern", "u%04d@crypt.test", "--user-range", users,
                  "--concurrency", str(a.login_concurrency), "--duration", f"{a.duration}s"],
         "skip": a.no_crypt},
        {"key": "b", "title": f"(b) full download, c={a.full_concurrency}",
         "args": ["--mode", "full", "--user-pattern", "u%04d@bench.test", "--user-range", users,
                  "--concurrency", str(a.full_concurrency), "--duration", f"{a.duration}s"]},
        {"key": "c", "title": f"(c) one client, RETR of the {a.big_mb} MB message",
         "args": ["--mode", "full", "--users-file", big_users,
                  "--concurrency", "1", "--sessions", str(a.big_sessions), "--duration", "120s"],
         "during": peak_rss_during},
        {"key": "d", "title": f"(d) {a.idle} idle logged-in sessions",
         "args": ["--mode", "idle", "--user-pattern", "u%04d@bench.test", "--user-range", f"1-{a.idle}",
                  "--concurrency", str(a.idle), "--hold", f"{a.hold}s", "--duration", "120s"],
         "during": idle_memory},
    ]


# c first: its memory figure is cleanest before the heavy scenarios have
# grown popgate's allocator pools. d last, each round on freshly restarted
# servers: it leaves Dovecot with hundreds of idle pop3 processes (which
# slow its later logins down a lot), and fresh servers show the true growth
# per session.
ORDER = ["c", "a", "a1", "a2", "b", "d"]


def selected(specs: list[dict], only: str) -> list[dict]:
    """The scenarios to run, in ORDER: those not skipped, and with `only`
    (comma-separated keys) those named."""
    specs = sorted((s for s in specs if not s.get("skip")), key=lambda s: ORDER.index(s["key"]))
    if only:
        keep = set(only.split(","))
        specs = [s for s in specs if s["key"] in keep]
    return specs
