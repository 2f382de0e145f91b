"""Idle sessions at scale (issue 18): N logged-in idle sessions, each on its
own mailbox, held by separate pop3-loadgen processes, against one popgate.

    scripts/bench-idle --idle-sessions 15000 [--per-process 5000] ...

1. Generates N small Maildirs (one ~1 KB message each) and a passwd-file
   (PLAIN), plus the mailboxes of the login measurement.
2. Starts popgate (release build) with a soft RLIMIT_NOFILE of 1,024, as a
   service manager would: popgate must raise it itself.
3. p99 login latency of new sessions (login + STAT + QUIT) with no idle
   session; popgate's RSS/PSS and the kernel's socket figures.
4. Opens the N sessions from N / --per-process load-generator processes
   (each holds its own range of users, so each session has its mailbox's
   lock), and says how long that took; memory and kernel figures again.
5. The same login measurement while the N sessions stay idle.
6. The idle sessions QUIT; memory once more (is it given back?), and the
   login measurement a last time.

Memory per session is the growth over step 3's baseline, divided by N. The
kernel's cost: the growth of the TCP, sock_inode_cache, filp, dentry and
eventpoll slabs (/proc/slabinfo) and of /proc/net/sockstat's socket memory.
Both ends of every connection are on this machine, so the kernel figures
are for two sockets a session; the report halves them for popgate's side.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .dataset import PASSWORD, write_passwd
from .procfs import pss_kb, status_kb
from .runner import loadgen_result
from .servers import HOST, free_port, popgate_config

SLABS = ("TCP", "TCPv6", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq", "nf_conntrack")

MESSAGE = (b"From: Sender <sender@example.org>\nTo: idle@bench.test\n"
           b"Subject: idle\nMessage-ID: <idle@bench.example>\n\n" + b"an idle mailbox's only message\n" * 30)


def log(msg: str) -> None:
    print(f"== {msg}", file=sys.stderr, flush=True)


def make_mail(work: str, users: int) -> None:
    """`users` Maildirs of one message each, as a delivery leaves them."""
    domain = os.path.join(work, "mail", "bench.test")
    virtual = len(MESSAGE) + MESSAGE.count(b"\n")
    for u in range(1, users + 1):
        md = os.path.join(domain, f"u{u:04d}", "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(md, sub))
        name = f"{1700000000 + u}.M{u}P4242.bench,S={len(MESSAGE)},W={virtual}:2,S"
        with open(os.path.join(md, "cur", name), "wb") as f:
            f.write(MESSAGE)
    write_passwd(os.path.join(work, "passwd"), users, "{PLAIN}unused")


def slabs() -> dict[str, tuple[int, int]]:
    """Active objects and object size of the socket-related slabs."""
    out = {}
    with open("/proc/slabinfo") as f:
        for line in f:
            p = line.split()
            if p and p[0] in SLABS:
                out[p[0]] = (int(p[1]), int(p[3]))
    return out


def sockstat() -> dict[str, int]:
    """/proc/net/sockstat's TCP line: inuse, orphan, tw, alloc, mem (pages)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                p = line.split()[1:]
                return {p[i]: int(p[i + 1]) for i in range(0, len(p), 2)}
    return {}


def snapshot(pid: int) -> dict:
    return {"rss_kb": status_kb(pid, "VmRSS"), "pss_kb": pss_kb(pid), "slabs": slabs(),
            "sockstat": sockstat(), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def service_manager_limits() -> None:
    """As systemd or PAM start a service: soft limit 1,024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


class Popgate:
    def __init__(self, binary: str, work: str, max_connections: int):
        self.port = free_port()
        conf = os.path.join(work, "popgate.toml")
        text = popgate_config(work, self.port).replace("max_connections = 20000",
                                                       f"max_connections = {max_connections}", 1)
        with open(conf, "w") as f:
            f.write(text)
        self.log = open(os.path.join(work, "popgate.log"), "wb")
        self.proc = subprocess.Popen([binary, "serve", "--config", conf], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=work, preexec_fn=service_manager_limits)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=5) as s:
                    if s.recv(100).startswith(b"+OK"):
                        s.sendall(b"QUIT\r\n")
                        s.recv(100)
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"popgate did not start (see {self.log.name})")
            time.sleep(0.1)

    def open_files_limit(self) -> str:
        with open(f"/proc/{self.pid}/limits") as f:
            return next(ln for ln in f if ln.startswith("Max open files")).split()[3]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def loadgen_cmd(a, port: int, args: list[str]) -> list[str]:
    return [a.loadgen, "--host", HOST, "--port", str(port), "--password", PASSWORD, "--json",
            "--user-pattern", "u%04d@bench.test", *args]


def logins(a, port: int) -> dict:
    """New sessions (login + STAT + QUIT) for --login-seconds on users past the idle ones."""
    first = a.idle_sessions + 1
    users = f"{first}-{first + a.login_users - 1}"
    r = subprocess.run(loadgen_cmd(a, port, ["--mode", "login", "--user-range", users, "--concurrency",
                                             str(a.login_concurrency), "--duration", f"{a.login_seconds}s"]),
                       capture_output=True, text=True, preexec_fn=raise_nofile)
    res = loadgen_result(r.stdout)
    if res is None or res["errors"]:
        raise SystemExit(f"the login measurement failed: {r.stdout[-400:]} {r.stderr[-400:]}")
    log(f"  logins: {res['sessions_per_s']:.0f}/s, p50 {res['login_p50_ms']:.2f} ms, "
        f"p99 {res['login_p99_ms']:.2f} ms")
    return res


def open_idle(a, port: int) -> tuple[list[subprocess.Popen], float, int]:
    """Starts the idle load generators; returns them, the seconds until all
    sessions were logged in, and how many are."""
    procs = []
    t0 = time.monotonic()
    for first in range(1, a.idle_sessions + 1, a.per_process):
        last = min(first + a.per_process - 1, a.idle_sessions)
        n = last - first + 1
        procs.append(subprocess.Popen(
            loadgen_cmd(a, port, ["--mode", "idle", "--user-range", f"{first}-{last}", "--concurrency", str(n),
                                  "--ramp", str(a.ramp), "--hold-stdin", "--duration", "300s",
                                  "--timeout", "120s"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile))
    held = 0
    for p in procs:
        line = p.stdout.readline()
        while line and not line.startswith("READY"):
            line = p.stdout.readline()
        if not line:
            raise SystemExit("an idle load generator exited before READY")
        held += int(line.split("ok=")[1].split()[0])
    return procs, time.monotonic() - t0, held


def close_idle(procs: list[subprocess.Popen]) -> tuple[float, int]:
    t0 = time.monotonic()
    errors = 0
    for p in procs:
        p.stdin.close()
    for p in procs:
        r = loadgen_result(p.stdout.read())
        p.wait()
        errors += r["errors"] if r else 1
    return time.monotonic() - t0, errors


def kernel_delta(before: dict, after: dict) -> dict[str, float]:
    """Bytes of slab objects (and socket buffer memory) the held sockets added."""
    out = {}
    for name, (objs, size) in after["slabs"].items():
        objs0 = before["slabs"].get(name, (0, size))[0]
        out[name] = (objs - objs0) * size
    out["sockstat mem"] = (after["sockstat"].get("mem", 0) - before["sockstat"].get("mem", 0)) * os.sysconf("SC_PAGE_SIZE")
    return out


def report(a, pg: Popgate, m: dict, runs: dict, open_s: float, held: int, close_s: float) -> None:
    n = held or 1
    base, idle, after = m["base"], m["idle"], m["after"]
    rss = (idle["rss_kb"] - base["rss_kb"]) * 1024 / n
    pss = (idle["pss_kb"] - base["pss_kb"]) * 1024 / n
    kern = kernel_delta(base, idle)
    kern_total = sum(kern.values())
    print(f"\nidle sessions held: {held} of {a.idle_sessions}, by {len(range(1, a.idle_sessions + 1, a.per_process))}"
          f" load-generator processes; opened in {open_s:.2f} s ({held / open_s:.0f}/s), closed in {close_s:.2f} s")
    print(f"popgate started with a soft RLIMIT_NOFILE of 1024; it raised it to {pg.open_files_limit()}; "
          f"open fds: {base['fds']} idle, {idle['fds']} held")
    print("\n| figure | no idle sessions | with the idle ones | after they quit |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| popgate RSS, MB | {base['rss_kb'] / 1024:.1f} | {idle['rss_kb'] / 1024:.1f} | {after['rss_kb'] / 1024:.1f} |")
    print(f"| popgate PSS, MB | {base['pss_kb'] / 1024:.1f} | {idle['pss_kb'] / 1024:.1f} | {after['pss_kb'] / 1024:.1f} |")
    for key, title in (("login_p50_ms", "login p50, ms"), ("login_p99_ms", "login p99, ms"),
                       ("sessions_per_s", "new sessions/s")):
        print(f"| {title} | {runs['base'][key]:.2f} | {runs['idle'][key]:.2f} | {runs['after'][key]:.2f} |")
    print(f"\nper idle session, popgate: RSS {rss / 1024:.2f} KiB, PSS {pss / 1024:.2f} KiB")
    print(f"login p99 with the idle sessions / without: {runs['idle']['login_p99_ms'] / runs['base']['login_p99_ms']:.2f}"
          f" (vs after they quit: {runs['idle']['login_p99_ms'] / runs['after']['login_p99_ms']:.2f})")
    print(f"memory given back after they quit: {(idle['rss_kb'] - after['rss_kb']) / max(1, idle['rss_kb'] - base['rss_kb']):.0%}"
          f" of the growth (RSS {after['rss_kb'] - base['rss_kb']:+,} KiB over the baseline)")
    print(f"\nkernel, per session (two sockets: the load generator's and popgate's): {kern_total / n / 1024:.2f} KiB")
    for name, b in kern.items():
        print(f"  {name}: {b / n:.0f} B")
    ss0, ss1 = base["sockstat"], idle["sockstat"]
    print(f"  sockstat TCP inuse {ss0.get('inuse')} -> {ss1.get('inuse')}, alloc {ss0.get('alloc')} -> {ss1.get('alloc')},"
          f" mem {ss0.get('mem')} -> {ss1.get('mem')} pages")
    side = kern_total / n / 2
    per = rss + side
    print(f"\nprojection for 100,000 idle sessions on one replica: popgate {100_000 * rss / 2**20:,.0f} MiB"
          f" + kernel {100_000 * side / 2**20:,.0f} MiB (popgate's side of each socket) = "
          f"{100_000 * per / 2**20:,.0f} MiB over the baseline, and {100_000 + 100_000 // 8 + 256:,} open files"
          f" (LimitNOFILE; server.max_connections = 100000)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench-idle", description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    p.add_argument("--popgate", default=f"{target}/release/popgate")
    p.add_argument("--loadgen", default=f"{target}/release/pop3-loadgen")
    p.add_argument("--idle-sessions", type=int, default=15000)
    p.add_argument("--per-process", type=int, default=5000, help="idle sessions per load-generator process")
    p.add_argument("--ramp", type=int, default=32, help="logins in flight at once per load generator")
    p.add_argument("--login-users", type=int, default=64)
    p.add_argument("--login-concurrency", type=int, default=8)
    p.add_argument("--login-seconds", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="keep the work directory (popgate.log)")
    a = p.parse_args(argv)
    if a.login_concurrency > a.login_users:
        raise SystemExit("--login-concurrency must be at most --login-users")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if a.idle_sessions + 1024 > hard or a.per_process + 256 > hard:
        raise SystemExit(f"the hard RLIMIT_NOFILE ({hard}) is too low for {a.idle_sessions} idle sessions")
    work = tempfile.mkdtemp(prefix="popgate-idle-")
    pg = None
    procs: list[subprocess.Popen] = []
    try:
        t = time.monotonic()
        make_mail(work, a.idle_sessions + a.login_users)
        log(f"{a.idle_sessions + a.login_users} Maildirs and passwd entries in {time.monotonic() - t:.1f} s")
        pg = Popgate(a.popgate, work, min(hard - 1024, a.idle_sessions + a.login_concurrency + 100))
        runs, m = {}, {}
        log("logins, no idle session")
        runs["base"] = logins(a, pg.port)
        time.sleep(1)
        m["base"] = snapshot(pg.pid)
        log(f"opening {a.idle_sessions} idle sessions")
        procs, open_s, held = open_idle(a, pg.port)
        time.sleep(2)  # the last logins settle
        m["idle"] = snapshot(pg.pid)
        log(f"  {held} held; logins meanwhile")
        runs["idle"] = logins(a, pg.port)
        close_s, errors = close_idle(procs)
        procs = []
        if errors:
            log(f"WARNING: {errors} errors in the idle load generators")
        time.sleep(3)
        m["after"] = snapshot(pg.pid)
        log("logins, after the idle sessions quit")
        runs["after"] = logins(a, pg.port)
        report(a, pg, m, runs, open_s, held, close_s)
    finally:
        for proc in procs:
            proc.kill()
        if pg:
            pg.stop()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0
