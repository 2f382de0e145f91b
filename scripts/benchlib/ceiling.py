"""Against the ceiling (issue 18): popgate, Dovecot and a canned-response
server (pop3-canned: answers from memory, touches no storage) under the
same load, in one run.

Two loads, each run against the three servers in turn, --rounds times:

- cs: 64 workers (--ceiling-concurrency), each session USER/PASS, STAT,
  UIDL, LIST, RETR of 10 messages of about 4 KiB, QUIT (sessions/s);
- cr: 4 workers (--ceiling-big-concurrency), each session the same around
  one RETR of a 5 MiB message (MB/s).

pop3-loadgen's full mode also sends LIST (it checks every RETR's octets
against it): one more round trip per session, the same for all three.

The mail: --ceiling-users mailboxes `sNNNN@bench.test` of 10 messages of
3.5-4.5 KB, and one mailbox `mN@bench.test` per big-RETR worker holding a
single 5 MiB message, stored as a Dovecot delivery leaves them (LF, `,S=`
and `,W=` in the name, some lines starting with a dot). The canned server
serves s0001's and m1's messages to every `s` and `m` login, read and
encoded once at its start.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import time

from .dataset import PASSWORD, body_lines, message, write_maildir
from .runner import check_same_uidls, log, run_loadgen
from .servers import HOST, Server, free_port, wait_ready

KEYS = ("cs", "cr")
MIB = 1024 * 1024


def add_arguments(ap) -> None:
    ap.add_argument("--ceiling-users", type=int, default=128,
                    help="mailboxes of 10 small messages for the ceiling's session load (cs)")
    ap.add_argument("--ceiling-concurrency", type=int, default=64)
    ap.add_argument("--ceiling-big-mib", type=int, default=5, help="MiB of the message the cr load RETRs")
    ap.add_argument("--ceiling-big-concurrency", type=int, default=4)


def wanted(only: str) -> list[str]:
    """The ceiling's loads that --only selects (all when it is empty)."""
    if not only:
        return list(KEYS)
    keep = set(only.split(","))
    return [k for k in KEYS if k in keep]


def make_mail(root: str, users: int, big: int, big_mib: int) -> dict:
    """The mailboxes of both loads under root/mail/bench.test, and their
    passwd-file lines (PLAIN); what the canned server is to serve."""
    rng = random.Random(1818)
    domain = os.path.join(root, "mail", "bench.test")
    seq = [500_000]
    for u in range(1, users + 1):
        user = f"s{u:04d}"
        msgs = [message(rng, user, i, rng.randint(3_500, 4_500)) for i in range(10)]
        write_maildir(os.path.join(domain, user, "Maildir"), msgs, seq)
    for b in range(1, big + 1):
        head = message(rng, f"m{b}", 0, 0)
        data = head + body_lines(rng, big_mib * MIB - len(head))
        write_maildir(os.path.join(domain, f"m{b}", "Maildir"), [data], seq)
    logins = [f"s{u:04d}@bench.test" for u in range(1, users + 1)] + [f"m{b}@bench.test" for b in range(1, big + 1)]
    return {
        "passwd": "".join(f"{login}:{{PLAIN}}{PASSWORD}\n" for login in logins),
        "small": os.path.join(domain, "s0001", "Maildir"),
        "big": os.path.join(domain, "m1", "Maildir"),
    }


class Canned(Server):
    """pop3-canned on a fixed port, serving the ceiling's two maildrops."""

    name = "ceiling"

    def __init__(self, binary: str, work: str, port: int, small: str, big: str):
        self.port = port
        self.log = open(os.path.join(work, "canned.log"), "ab")
        self.proc = subprocess.Popen(
            [binary, "--listen", f"{HOST}:{port}", "--maildrop", f"s={small}", "--maildrop", f"m={big}"],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        self.pid = self.proc.pid

    def pids(self) -> list[int]:
        return [self.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def loads(a, work: str) -> list[dict]:
    """The two loads' pop3-loadgen arguments."""
    big_users = os.path.join(work, "ceiling-big.users")
    with open(big_users, "w") as f:
        f.write("".join(f"m{b}@bench.test\n" for b in range(1, a.ceiling_big_concurrency + 1)))
    return [
        {"key": "cs", "title": f"(cs) {a.ceiling_concurrency} workers: login, STAT, UIDL, LIST, 10 RETR of ~4 KiB, QUIT",
         "args": ["--mode", "full", "--retr", "10", "--user-pattern", "s%04d@bench.test",
                  "--user-range", f"1-{a.ceiling_users}", "--concurrency", str(a.ceiling_concurrency),
                  "--duration", f"{a.duration}s"]},
        {"key": "cr", "title": f"(cr) {a.ceiling_big_concurrency} workers: RETR of {a.ceiling_big_mib} MiB",
         "args": ["--mode", "full", "--users-file", big_users,
                  "--concurrency", str(a.ceiling_big_concurrency), "--duration", f"{a.duration}s"]},
    ]


def warm_up(a, servers: list[Server], loadgen: str, work: str) -> None:
    """Every ceiling mailbox once on each server (Dovecot builds its index,
    popgate its uidlist), after checking UIDL and LIST agree."""
    pg, dc = servers[0], servers[1]
    check_same_uidls(pg, dc, ["s0001@bench.test", "m1@bench.test"], "popgate")
    check_same_uidls(pg, dc, [f"s{a.ceiling_users:04d}@bench.test"], "dovecot")
    big = os.path.join(work, "ceiling-big.users")
    for server in servers:
        for args in (["--user-pattern", "s%04d@bench.test", "--user-range", f"1-{a.ceiling_users}",
                      "--sessions", str(a.ceiling_users)],
                     ["--users-file", big, "--sessions", str(a.ceiling_big_concurrency)]):
            r = run_loadgen(loadgen, server, ["--mode", "full", "--concurrency", "4", "--duration", "600s", *args])
            if r["errors"]:
                raise SystemExit(f"ceiling warm-up on {server.name} failed: {r['error_details']}")


def run(a, servers: list[Server], loadgen: str, specs: list[dict]) -> dict:
    """Each load against each server in turn (popgate, Dovecot, ceiling),
    --rounds times."""
    results: dict = {}
    for spec in specs:
        log(spec["title"])
        results[spec["key"]] = {s.name: [] for s in servers}
        for rnd in range(a.rounds):
            for server in servers:
                r = run_loadgen(loadgen, server, spec["args"])
                results[spec["key"]][server.name].append(r)
                log(f"  round {rnd + 1} {server.name}: {r['sessions_ok']} sessions, "
                    f"{r['sessions_per_s']:.0f}/s, {r['mb_per_s']:.1f} MB/s, "
                    f"CPU {r['server_cpu_s']:.2f} s, errors {r['errors']}")
                time.sleep(1)
    return results


def figure(key: str, r: dict) -> dict:
    """One run's figures: the rate that counts, and CPU per unit."""
    mb = r["message_octets"] / 1e6
    ok = max(r["sessions_ok"], 1)
    if key == "cs":
        return {"rate": r["sessions_per_s"], "cpu": r["server_cpu_s"] * 1000 / ok,
                "client_cpu": r["client_cpu_s"] * 1000 / ok}
    return {"rate": r["mb_per_s"], "cpu": r["server_cpu_s"] * 1000 / mb if mb else None,
            "client_cpu": r["client_cpu_s"] * 1000 / mb if mb else None}


def spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    fmt = (lambda v: f"{v:,.0f}") if hi >= 100 else (lambda v: f"{v:.2f}")
    return fmt(lo) if len(values) == 1 or fmt(lo) == fmt(hi) else f"{fmt(lo)}–{fmt(hi)}"


def median(values: list):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def table(results: dict) -> str:
    """The issue's table: popgate, Dovecot, ceiling (each run's range), and
    popgate ÷ ceiling of the medians; then CPU per unit."""
    rows = [("cs", "sessions/s", "rate"), ("cr", "5 MiB RETR, MB/s", "rate"),
            ("cs", "server CPU ms/session", "cpu"), ("cr", "server CPU ms/MB", "cpu"),
            ("cs", "load generator CPU ms/session", "client_cpu"), ("cr", "load generator CPU ms/MB", "client_cpu")]
    out = ["| figure | popgate | Dovecot | ceiling | popgate ÷ ceiling |", "| --- | ---: | ---: | ---: | ---: |"]
    for key, label, field in rows:
        if key not in results:
            continue
        runs = {name: [figure(key, r)[field] for r in rs] for name, rs in results[key].items()}
        pg, ceiling = median(runs.get("popgate", [])), median(runs.get("ceiling", []))
        ratio = f"{pg / ceiling:.2f}" if pg is not None and ceiling else "-"
        out.append(f"| {label} | {spread(runs.get('popgate', []))} | {spread(runs.get('dovecot', []))} | "
                   f"{spread(runs.get('ceiling', []))} | {ratio} |")
    return "\n".join(out)


def measure(a, pair, loadgen: str, canned: str, work: str, mail: dict | None) -> dict:
    """Starts the canned server next to the pair, warms up, runs the loads
    (none when --only names neither)."""
    specs = [s for s in loads(a, work) if s["key"] in wanted(a.only)]
    if not specs or not mail:
        return {}
    # On fresh servers: the idle scenario (d) leaves Dovecot with hundreds
    # of idle pop3 processes that slow its later logins down.
    pair.restart()
    time.sleep(3)  # Dovecot's process_min_avail processes
    srv = Canned(canned, work, free_port(), mail["small"], mail["big"])
    try:
        wait_ready(srv)
        servers = [pair.pg, pair.dc, srv]
        warm_up(a, servers, loadgen, work)
        return run(a, servers, loadgen, specs)
    finally:
        srv.stop()
