"""popgate vs Dovecot: the same Maildirs, the same load, one run, as ratios.

    scripts/bench [--rounds 2] [--duration 10] [--skip-build] [--keep] ...

What it does (stdlib only; run as root, on a Debian machine with
dovecot-pop3d installed):

1. Builds popgate and pop3-loadgen in release mode
   (cargo build --release -p popgate -p pop3-loadgen).
2. Generates a dataset in a temporary directory: 200 users x 50 messages of
   2-50 KB, 300 more users x 5 small messages (for the idle-sessions test), and
   one mailbox holding a single 50 MB message. Messages are stored the way a
   Dovecot delivery leaves them: LF line endings, ,S= and ,W= in the file name,
   in cur/ with the Seen flag (so neither server renames anything when it
   serves them). Some lines start with a dot, to exercise dot-stuffing.
   The Maildirs belong to `nobody`, and both servers access mail as nobody.
3. Starts popgate (release build) and Dovecot (`dovecot -F -c CONF`, a real
   network daemon with its own base_dir and log in the temporary directory),
   each on a free 127.0.0.1 port, both on one passwd-file: users @bench.test
   have PLAIN passwords, the same users @crypt.test SHA512-CRYPT ones (the
   crypt.test mail directory is a symlink to bench.test's).
4. Checks that both servers give the same UIDL and LIST output for a sample of
   mailboxes (some opened first by popgate, some first by Dovecot), after a
   warm-up pass over every mailbox on each server.
5. Runs every scenario against popgate and Dovecot in turn, A B A B ...
   (--rounds times each; the order is c, a, a1, a2, b, d, and both servers
   are restarted before each round of d), measuring with pop3-loadgen and
   /proc:
     a)  login: USER/PASS, STAT, QUIT; concurrency 32 (PLAIN passwords)
     a1) the same with USER and PASS pipelined in one write
     a2) the same (not pipelined) with SHA512-CRYPT passwords
     b)  full download: USER/PASS, STAT, UIDL, LIST, RETR all, QUIT; concurrency 16
     c)  one client RETRs the 50 MB message (MB/s, and the server's peak RSS:
         popgate's VmHWM after resetting it; the largest VmHWM of Dovecot's
         pop3 processes, sampled every 5 ms)
     d)  500 idle logged-in sessions: popgate's RSS/PSS vs the sum over all of
         Dovecot's processes, and the growth per session over the idle baseline
   and, for every scenario, the CPU time the server used (utime+stime from
   /proc/PID/stat; for Dovecot the master's own and its reaped children's
   times plus every live child's), per session.
   Then, on restarted servers, the ceiling's two loads (scripts/benchlib/
   ceiling.py: cs, 64 workers doing login, STAT, UIDL, LIST, 10 RETRs of
   ~4 KiB, QUIT; cr, 4 workers RETRing 5 MiB) against popgate, Dovecot and
   pop3-canned, a server that answers from memory: the ceiling.
6. Prints a table: scenario, metric, popgate, Dovecot, ratio (popgate/Dovecot),
   the mean over the rounds with each round's value; then the CPU each side
   and the load generator used per run; the ceiling's table (popgate,
   Dovecot, ceiling, popgate / ceiling); and any warning either server logged.

Dovecot is tuned as its documentation suggests for speed: login processes in
high-performance mode (service_count = 0, process_min_avail = CPUs), and pop3
processes reused (service_count = 0; --dovecot-default-pop3 keeps Dovecot's
default of one new pop3 process per session). Its index files live in the
Maildirs, as usual.

Only 127.0.0.1 is ever contacted. Nothing is deleted from the Maildirs.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import random
import shutil
import subprocess
import tempfile
import time

from . import ceiling
from .dataset import PASSWORD, chown_tree, make_dataset, write_passwd
from .report import client_table, log_complaints, table
from .runner import check_same_uidls, log, run_loadgen, scenarios, selected
from .servers import DOVECOT, HOST, Dovecot, Popgate, Server, free_port, wait_ready

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="A B runs per scenario (default 2: A B A B)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per timed run (default 10)")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--messages", type=int, default=50, help="messages per user")
    ap.add_argument("--idle", type=int, default=500, help="idle sessions in scenario d")
    ap.add_argument("--hold", type=int, default=3, help="seconds the idle sessions are held")
    ap.add_argument("--big-mb", type=int, default=50)
    ap.add_argument("--big-sessions", type=int, default=3)
    ap.add_argument("--login-concurrency", type=int, default=32)
    ap.add_argument("--full-concurrency", type=int, default=16)
    ap.add_argument("--only", default="", help="comma-separated scenario keys (a,a1,a2,b,c,d; cs,cr: the ceiling)")
    ap.add_argument("--no-crypt", action="store_true", help="skip the SHA512-CRYPT login run")
    ap.add_argument("--dovecot-default-pop3", action="store_true",
                    help="keep Dovecot's default one-pop3-process-per-session (service_count=1)"
                         " instead of reusing pop3 processes")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", help="also write every run's raw figures to this file")
    ceiling.add_arguments(ap)
    return ap


def refusal(a, euid: int, dovecot: str) -> str | None:
    """Why the benchmark cannot run with these arguments here, if it cannot."""
    if euid != 0:
        return "run as root: Dovecot needs it to switch users, and the Maildirs belong to nobody"
    if not os.path.exists(dovecot):
        return "dovecot is not installed (apt-get install dovecot-pop3d)"
    if a.idle < a.users or a.idle < a.login_concurrency:
        return "--idle must be at least --users and --login-concurrency"
    if a.ceiling_users < a.ceiling_concurrency:
        return "--ceiling-users must be at least --ceiling-concurrency"
    return None


def release_dir() -> str:
    """Where cargo puts release binaries: CARGO_TARGET_DIR's, else the workspace's."""
    return os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release")


def binaries(skip_build: bool, work: str) -> tuple[str, str, str]:
    """Builds (unless `skip_build`) popgate and pop3-loadgen (with
    pop3-canned), and copies them into `work`: a colleague's rebuild cannot
    swap them mid-run."""
    if not skip_build:
        log("cargo build --release -p popgate -p pop3-loadgen")
        if subprocess.run(["cargo", "build", "--release", "-q", "-p", "popgate", "-p", "pop3-loadgen"],
                          cwd=REPO).returncode != 0:
            raise SystemExit("the release build failed (see above); --skip-build runs the binaries already built")
    release = release_dir()
    os.makedirs(os.path.join(work, "bin"))
    copies = []
    for name in ("popgate", "pop3-loadgen", "pop3-canned"):
        binary = os.path.join(release, name)
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} is missing: build it (cargo build --release -p popgate -p pop3-loadgen)")
        copies.append(shutil.copy2(binary, os.path.join(work, "bin", name)))
    os.chmod(os.path.join(work, "bin"), 0o755)
    return copies[0], copies[1], copies[2]


def prepare(a, work: str, popgate: str) -> tuple[int, int, dict | None]:
    """The dataset and the passwd-file; the uid and gid the mail belongs
    to, and the ceiling's mail (when it runs)."""
    t = time.time()
    info = make_dataset(work, a.users, a.messages, a.idle - a.users, a.big_mb)
    mail = None
    if ceiling.wanted(a.only):
        mail = ceiling.make_mail(work, a.ceiling_users, a.ceiling_big_concurrency, a.ceiling_big_mib)
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    chown_tree(os.path.join(work, "mail"), uid, gid)
    log(f"dataset: {a.users} users x {a.messages} messages + {a.idle - a.users} small mailboxes"
        f" + one {info['big_bytes'] / 1e6:.0f} MB message, {info['bytes'] / 1e6:.0f} MB in all"
        f" ({time.time() - t:.0f} s) in {work}")
    crypt_hash = subprocess.run([popgate, "pw", "--scheme", "SHA512-CRYPT"], input=PASSWORD + "\n",
                                capture_output=True, text=True, check=True).stdout.strip()
    if not crypt_hash.startswith("{SHA512-CRYPT}"):
        crypt_hash = "{SHA512-CRYPT}" + crypt_hash
    write_passwd(os.path.join(work, "passwd"), a.idle, crypt_hash)
    if mail:
        with open(os.path.join(work, "passwd"), "a") as f:
            f.write(mail["passwd"])
    return uid, gid, mail


class Pair:
    """The two servers under test, started on fixed ports."""

    def __init__(self, a, work: str, popgate: str, uid: int, gid: int):
        self.a, self.work, self.popgate, self.uid, self.gid = a, work, popgate, uid, gid
        self.ports = (free_port(), free_port())
        self.servers: list[Server] = []
        self.start()

    def start(self) -> None:
        self.pg = Popgate(self.work, self.ports[0], self.uid, self.gid, self.popgate)
        self.servers.append(self.pg)
        self.dc = Dovecot(self.work, self.ports[1], not self.a.dovecot_default_pop3, self.a.idle)
        self.servers.append(self.dc)
        wait_ready(self.pg)
        wait_ready(self.dc)

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()


def warm_up_and_check(a, pair: Pair, loadgen: str) -> None:
    """Same UIDL and LIST on both servers, before and after every mailbox
    was opened once on each."""
    pg, dc = pair.pg, pair.dc
    check_same_uidls(pg, dc, ["u0001@bench.test", "u0002@bench.test", "big@bench.test"], "popgate")
    check_same_uidls(pg, dc, ["u0003@bench.test", "u0004@bench.test", f"u{a.idle:04d}@bench.test"], "dovecot")
    for server in (pg, dc):
        log(f"warm-up: every mailbox once on {server.name}")
        r = run_loadgen(loadgen, server, ["--mode", "full", "--user-pattern", "u%04d@bench.test",
                                          "--user-range", f"1-{a.idle}", "--concurrency", "4",
                                          "--sessions", str(a.idle), "--duration", "600s"])
        if r["errors"] or r["sessions_ok"] != a.idle:
            raise SystemExit(f"warm-up on {server.name} failed: {r}")
        r = run_loadgen(loadgen, server, ["--mode", "login", "--user-pattern", "u%04d@crypt.test",
                                          "--user-range", "1-4", "--concurrency", "2", "--sessions", "4"])
        if r["errors"]:
            raise SystemExit(f"SHA512-CRYPT login on {server.name} failed: {r['error_details']}")
    sample = [f"u{u:04d}@bench.test" for u in random.Random(7).sample(range(1, a.idle + 1), 10)]
    check_same_uidls(pg, dc, sample + ["big@bench.test"], "both (after warm-up)")


def run_scenarios(a, pair: Pair, loadgen: str, specs: list[dict]) -> dict:
    """Every scenario, popgate and Dovecot in turn, --rounds times."""
    results: dict = {}
    for spec in specs:
        log(spec["title"])
        results[spec["key"]] = {"popgate": [], "dovecot": []}
        for rnd in range(a.rounds):
            if spec["key"] == "d":
                log("  restarting both servers (each idle round starts from fresh servers)")
                pair.restart()
                time.sleep(3)  # Dovecot's process_min_avail processes
            for server in (pair.pg, pair.dc):
                during = spec["during"](server) if spec.get("during") else None
                r = run_loadgen(loadgen, server, spec["args"], during)
                results[spec["key"]][server.name].append(r)
                log(f"  round {rnd + 1} {server.name}: {r['sessions_ok']} sessions, "
                    f"{r['sessions_per_s']:.0f}/s, {r['mb_per_s']:.1f} MB/s, "
                    f"CPU {r['server_cpu_s']:.2f} s, errors {r['errors']}")
                time.sleep(1)
    return results


def machine_line(a) -> str:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    dv = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True).stdout.strip()
    return (f"machine: {os.cpu_count()} CPUs ({cpu}), load average now {os.getloadavg()[0]:.2f}; "
            f"Dovecot {dv}; pop3 process reuse: {'no' if a.dovecot_default_pop3 else 'yes'}; "
            f"{a.rounds} rounds of {a.duration} s\n")


def build_line(built: str) -> str:
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (f"\npopgate: release binary built {built}; git HEAD at the end of the run: {head}"
            f"{' (with uncommitted changes)' if dirty else ''}")


def print_report(a, built: str, results: dict, specs: list[dict], pair: Pair, work: str,
                 against_ceiling: dict) -> None:
    print(build_line(built))
    print(machine_line(a))
    if results:
        print(table(results, specs))
        print("\nPer run (the CPU the load generator itself used shows when it, not the server, was the limit):\n")
        print(client_table(results, specs))
    if against_ceiling:
        print("\nAgainst the ceiling (issue 18; each server's range over the rounds, the ratio of the medians):\n")
        print(ceiling.table(against_ceiling))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({**results, **against_ceiling}, f, indent=1)
    for server in pair.servers:
        if server.proc.poll() is not None:
            log(f"WARNING: {server.name} exited during the run ({server.proc.returncode})")
    complaints = log_complaints(work)
    if complaints:
        log(f"WARNING: the servers logged {len(complaints)} warnings/errors, e.g.:")
        for line in complaints[:10]:
            log(f"  {line}")
    else:
        log("neither server logged a warning or an error")
    everything = {**results, **against_ceiling}
    errors = sum(r["errors"] for k in everything for n in everything[k] for r in everything[k][n])
    if errors:
        log(f"WARNING: {errors} errors in the runs (see above); their figures are not trustworthy")


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    why = refusal(a, os.geteuid(), DOVECOT)
    if why:
        raise SystemExit(why)
    work = tempfile.mkdtemp(prefix="popgate-bench-")
    os.chmod(work, 0o755)
    pair = None
    try:
        popgate, loadgen, canned = binaries(a.skip_build, work)
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(popgate)))
        uid, gid, mail = prepare(a, work, popgate)
        pair = Pair(a, work, popgate, uid, gid)
        log(f"popgate pid {pair.pg.pid} on {HOST}:{pair.pg.port}; "
            f"dovecot master pid {pair.dc.pid} on {HOST}:{pair.dc.port}")
        warm_up_and_check(a, pair, loadgen)
        specs = selected(scenarios(a, work), a.only)
        results = run_scenarios(a, pair, loadgen, specs)
        against_ceiling = ceiling.measure(a, pair, loadgen, canned, work, mail)
        print_report(a, built, results, specs, pair, work, against_ceiling)
    finally:
        if pair:
            pair.stop()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
