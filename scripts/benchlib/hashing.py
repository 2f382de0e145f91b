"""Login with real hashes (issue 18): POP3 logins/s per password scheme,
popgate and Dovecot on the same hashes, and the RETR latency of sessions
already logged in while argon2 logins hash at full rate.

    scripts/bench-hashing [--duration 8] [--concurrency 16] [--skip-build] ...

What it does (stdlib only; run as root, with dovecot-pop3d installed):

1. Builds popgate and pop3-loadgen in release mode (or takes --binary).
2. Makes one passwd-file with --users users per scheme, one domain each:
   argon2id.test, blf-crypt.test, sha512-crypt.test, ssha512.test and
   plain.test, all with the hash `doveadm pw -s SCHEME` writes (Dovecot's
   default costs: ARGON2ID m=64 MiB t=3 p=1, BLF-CRYPT 5, SHA512-CRYPT 5000
   rounds), and a Maildir of one small message per user; and probe.test,
   PLAIN users with 20 messages of about 4 KiB.
3. Starts popgate (one tenant per domain; each tenant may take every hashing
   slot, so one scheme's load can use the whole pool) and Dovecot (as
   scripts/bench configures it), each on a free 127.0.0.1 port.
4. Per scheme, popgate then Dovecot: pop3-loadgen --mode login (USER/PASS,
   STAT, QUIT) at --concurrency for --duration: logins/s, and logins per
   CPU-second of the server (/proc utime+stime): "per core".
5. RETR latency, per server, in one run: --probes sessions log in (PLAIN)
   and then each RETRs one of its messages every --interval-ms. First
   --duration seconds with nothing else running (quiet), then --duration
   seconds while pop3-loadgen floods argon2id.test logins at --concurrency
   (flood). p50/p99/max RETR latency of each phase; for popgate also the
   busy hashing slots (from /metrics) and the peak RSS over the flood
   (VmHWM, reset before it) against the bound slots x 64 MiB.

The probes are Python threads: their latency includes the interpreter's
own share of the CPU, the same in both phases. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from .dataset import PASSWORD, chown_tree, message, write_maildir
from .procfs import status_kb
from .runner import log, run_loadgen
from .servers import DOVECOT, HOST, Dovecot, Popgate, Server, free_port, wait_ready

SCHEMES = ["ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SSHA512", "PLAIN"]
FLOOD = "ARGON2ID"
ARGON2_MIB = 64  # what Dovecot's ARGON2ID hashes take per check


def domain(scheme: str) -> str:
    return f"{scheme.lower()}.test"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scripts/bench-hashing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds per timed run (default 8)")
    ap.add_argument("--concurrency", type=int, default=16, help="login load's concurrency (default 16)")
    ap.add_argument("--users", type=int, default=64, help="users per scheme (default 64)")
    ap.add_argument("--probes", type=int, default=4, help="logged-in sessions doing RETR (default 4)")
    ap.add_argument("--interval-ms", type=float, default=10, help="each probe's RETR period (default 10)")
    ap.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated schemes to time")
    ap.add_argument("--slots", type=int, help="server.password_hashing.slots (default popgate's)")
    ap.add_argument("--nice", type=int, help="server.password_hashing.nice (default popgate's)")
    ap.add_argument("--no-dovecot", action="store_true", help="popgate only")
    ap.add_argument("--binary", help="this popgate binary instead of the release build")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", help="also write the raw figures to this file")
    return ap


def hashes() -> dict[str, str]:
    """Each scheme's stored string, as Dovecot's doveadm writes it."""
    out = {"PLAIN": "{PLAIN}" + PASSWORD}
    for scheme in SCHEMES:
        if scheme != "PLAIN":
            out[scheme] = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", PASSWORD], capture_output=True,
                                         text=True, check=True).stdout.strip()
    return out


def make_data(work: str, users: int, probes: int) -> dict[str, str]:
    """The Maildirs and the passwd-file; the stored string per scheme."""
    stored = hashes()
    rng = random.Random(18)
    seq = [0]
    lines = []
    for scheme in SCHEMES:
        for u in range(1, users + 1):
            user = f"u{u:04d}"
            write_maildir(os.path.join(work, "mail", domain(scheme), user, "Maildir"),
                          [message(rng, user, 0, 1_000)], seq)
            lines.append(f"{user}@{domain(scheme)}:{stored[scheme]}")
    for p in range(1, probes + 1):
        user = f"p{p:04d}"
        write_maildir(os.path.join(work, "mail", "probe.test", user, "Maildir"),
                      [message(rng, user, i, rng.randint(3_500, 4_500)) for i in range(20)], seq)
        lines.append(f"{user}@probe.test:{{PLAIN}}{PASSWORD}")
    with open(os.path.join(work, "passwd"), "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(os.path.join(work, "passwd"), 0o644)
    return stored


def config(a, work: str, port: int, metrics_port: int, slots: int) -> str:
    """popgate.toml: a tenant per domain, each allowed every hashing slot."""
    hashing = [f"slots = {slots}", f"tenant_slots = {slots}"]
    if a.nice is not None:
        hashing.append(f"nice = {a.nice}")
    tenants = "".join(f"""
[[tenants]]
name = "{d.split('.')[0]}"
domains = ["{d}"]
auth = {{ kind = "passwd-file", path = "{work}/passwd" }}
store = {{ kind = "maildir", path = "{work}/mail/{d}/%n/Maildir" }}
""" for d in [domain(s) for s in SCHEMES] + ["probe.test"])
    return f"""[server]
hostname = "localhost"
shutdown_grace = "1s"
max_connections = 20000
max_connections_per_ip = 20000
log_level = "warn"

[server.password_hashing]
{chr(10).join(hashing)}

[[listeners]]
address = "{HOST}:{port}"
tls = "none"
plaintext_auth = true

[metrics]
address = "{HOST}:{metrics_port}"

[locks]
backend = "memory"
{tenants}"""


def default_slots() -> int:
    """popgate's default: one per CPU this process may use, 2 to 8."""
    return min(8, max(2, len(os.sched_getaffinity(0))))


class Probe(threading.Thread):
    """A logged-in session that RETRs one of its messages every `interval`
    seconds and records each RETR's latency under the current phase."""

    def __init__(self, port: int, user: str, interval: float, phase: list[str]):
        super().__init__(daemon=True)
        self.port, self.user, self.interval, self.phase = port, user, interval, phase
        self.samples: dict[str, list[float]] = {}
        self.error: str | None = None
        self.stop = threading.Event()
        self.ready = threading.Event()

    def reply(self, sock: socket.socket, multiline: bool) -> bytes:
        buf = b""
        end = b"\r\n.\r\n" if multiline else b"\r\n"
        while not buf.endswith(end):
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"connection closed after {buf[:80]!r}")
            buf += chunk
        if not buf.startswith(b"+OK"):
            raise OSError(f"refused: {buf[:80]!r}")
        return buf

    def run(self) -> None:
        try:
            with socket.create_connection((HOST, self.port), timeout=30) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.reply(s, False)
                for cmd in (f"USER {self.user}", f"PASS {PASSWORD}"):
                    s.sendall(cmd.encode() + b"\r\n")
                    self.reply(s, False)
                self.ready.set()
                n = 0
                next_at = time.monotonic()
                while not self.stop.is_set():
                    phase = self.phase[0]
                    started = time.monotonic()
                    s.sendall(f"RETR {n % 20 + 1}\r\n".encode())
                    self.reply(s, True)
                    self.samples.setdefault(phase, []).append(time.monotonic() - started)
                    n += 1
                    next_at += self.interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
                s.sendall(b"QUIT\r\n")
        except OSError as e:
            self.error = str(e)
            self.ready.set()


def percentiles(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    s = sorted(samples)
    return {"n": len(s), "p50_ms": 1000 * statistics.median(s), "p99_ms": 1000 * s[int(0.99 * (len(s) - 1))],
            "max_ms": 1000 * s[-1]}


def metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return None


def login_args(a, scheme: str) -> list[str]:
    return ["--mode", "login", "--user-pattern", f"u%04d@{domain(scheme)}", "--user-range", f"1-{a.users}",
            "--concurrency", str(a.concurrency), "--duration", f"{a.duration}s"]


def login_rates(a, servers: list[Server], loadgen: str) -> dict:
    out: dict = {}
    for scheme in a.schemes.split(","):
        for server in servers:
            r = run_loadgen(loadgen, server, login_args(a, scheme))
            per_cpu = r["sessions_ok"] / r["server_cpu_s"] if r["server_cpu_s"] > 0 else None
            out.setdefault(scheme, {})[server.name] = {**r, "logins_per_cpu_s": per_cpu}
            log(f"{scheme} on {server.name}: {r['sessions_ok']} logins, {r['sessions_per_s']:.1f}/s, "
                f"CPU {r['server_cpu_s']:.2f} s, {per_cpu or 0:.1f} logins per CPU-second, errors {r['errors']}")
            time.sleep(1)
    return out


def retr_latency(a, server: Server, loadgen: str, metrics_port: int | None) -> dict:
    """The probes' RETR latency, quiet and under the argon2 flood."""
    phase = ["quiet"]
    probes = [Probe(server.port, f"p{p:04d}@probe.test", a.interval_ms / 1000, phase)
              for p in range(1, a.probes + 1)]
    for p in probes:
        p.start()
    for p in probes:
        p.ready.wait(30)
    time.sleep(a.duration)
    phase[0] = "flood"
    flood: dict = {"busy": []}

    def during(proc):
        if isinstance(server, Popgate):
            with open(f"/proc/{server.pid}/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
            flood["rss_before_kb"] = status_kb(server.pid, "VmRSS")
        while proc.poll() is None:
            if metrics_port:
                busy = metric(metrics_port, "popgate_password_hashing_slots_busy")
                if busy is not None:
                    flood["busy"].append(busy)
            time.sleep(0.25)
        if isinstance(server, Popgate):
            flood["peak_rss_kb"] = status_kb(server.pid, "VmHWM")
        return {}

    r = run_loadgen(loadgen, server, login_args(a, FLOOD), during)
    phase[0] = "after"
    for p in probes:
        p.stop.set()
    for p in probes:
        p.join(30)
    errors = [p.error for p in probes if p.error]
    if errors:
        log(f"WARNING: probes failed on {server.name}: {errors[:3]}")
    merged: dict[str, list[float]] = {}
    for p in probes:
        for k, v in p.samples.items():
            merged.setdefault(k, []).extend(v)
    out = {"quiet": percentiles(merged.get("quiet", [])), "flood": percentiles(merged.get("flood", [])),
           "flood_logins_per_s": r["sessions_per_s"], "flood_errors": r["errors"],
           "flood_error_details": r.get("error_details"), "probe_errors": errors, **flood}
    log(f"RETR latency on {server.name}: quiet {out['quiet']}, flood {out['flood']}, "
        f"{r['sessions_per_s']:.1f} argon2 logins/s meanwhile")
    return out


def ms(v) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def report(a, rates: dict, latency: dict, slots: int) -> str:
    names = ["popgate"] + ([] if a.no_dovecot else ["dovecot"])
    lines = [f"\nLogins (USER/PASS, STAT, QUIT), concurrency {a.concurrency}, {a.duration} s each:\n",
             "| scheme | " + " | ".join(f"{n} logins/s | {n} logins per CPU-s" for n in names) + " |",
             "| --- |" + " ---: | ---: |" * len(names)]
    for scheme, by in rates.items():
        cells = []
        for n in names:
            r = by.get(n, {})
            cells += [f"{r.get('sessions_per_s', 0):,.1f}" + (f" ({r['errors']} errors)" if r.get("errors") else ""),
                      f"{r.get('logins_per_cpu_s') or 0:,.1f}"]
        lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
    lines += [f"\nRETR of about 4 KiB by {a.probes} logged-in sessions, one every {a.interval_ms:g} ms each; "
              f"flood: {FLOOD} logins at concurrency {a.concurrency}:\n",
              "| server | quiet p50 ms | quiet p99 ms | quiet max ms | flood p50 ms | flood p99 ms | flood max ms "
              "| RETRs quiet/flood | argon2 logins/s in the flood |",
              "| --- |" + " ---: |" * 8]
    for n, lat in latency.items():
        q, f = lat["quiet"], lat["flood"]
        lines.append(f"| {n} | {ms(q.get('p50_ms'))} | {ms(q.get('p99_ms'))} | {ms(q.get('max_ms'))} "
                     f"| {ms(f.get('p50_ms'))} | {ms(f.get('p99_ms'))} | {ms(f.get('max_ms'))} "
                     f"| {q['n']}/{f['n']} | {lat['flood_logins_per_s']:.1f} |")
    pg = latency.get("popgate", {})
    if "peak_rss_kb" in pg:
        busy = pg["busy"]
        lines.append(f"\npopgate during the flood: hashing slots {slots}, busy (sampled every 0.25 s) "
                     f"mean {statistics.mean(busy) if busy else 0:.2f}, max {max(busy) if busy else 0:.0f}; "
                     f"RSS {pg['rss_before_kb'] / 1024:.1f} MiB before, peak {pg['peak_rss_kb'] / 1024:.1f} MiB "
                     f"(+{(pg['peak_rss_kb'] - pg['rss_before_kb']) / 1024:.1f} MiB; bound {slots} slots x "
                     f"{ARGON2_MIB} MiB = {slots * ARGON2_MIB} MiB)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from .cli import binaries  # the release build, copied into the work directory

    a = parser().parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: Dovecot needs it to switch users, and the Maildirs belong to nobody")
    if not os.path.exists(DOVECOT) or not shutil.which("doveadm"):
        raise SystemExit("dovecot is not installed (apt-get install dovecot-pop3d)")
    work = tempfile.mkdtemp(prefix="popgate-bench-hashing-")
    os.chmod(work, 0o755)
    servers: list[Server] = []
    try:
        popgate, loadgen = binaries(a.skip_build or bool(a.binary), work)
        if a.binary:
            popgate = shutil.copy2(a.binary, os.path.join(work, "bin", "popgate-under-test"))
        t = time.time()
        stored = make_data(work, a.users, a.probes)
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        chown_tree(os.path.join(work, "mail"), uid, gid)
        log(f"dataset and hashes ({time.time() - t:.0f} s): "
            + ", ".join(f"{k} {v[:40]}..." for k, v in stored.items()))
        slots = a.slots or default_slots()
        metrics_port, port = free_port(), free_port()
        pg = Popgate(work, port, uid, gid, popgate, config(a, work, port, metrics_port, slots))
        servers.append(pg)
        if not a.no_dovecot:
            servers.append(Dovecot(work, free_port(), True, a.probes + a.concurrency))
        for server in servers:
            wait_ready(server)
        log(f"popgate pid {pg.pid} on {pg.port} ({slots} hashing slots); "
            + ("" if a.no_dovecot else f"dovecot on {servers[1].port}"))
        rates = login_rates(a, servers, loadgen)
        latency = {s.name: retr_latency(a, s, loadgen, metrics_port if s is pg else None) for s in servers}
        print(report(a, rates, latency, slots))
        print(f"\nmachine: {os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.2f}; "
              f"popgate {popgate}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"rates": rates, "latency": latency, "slots": slots}, f, indent=1)
    finally:
        for server in servers:
            server.stop()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()
