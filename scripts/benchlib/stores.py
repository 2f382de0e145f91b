"""popgate on Maildir, PostgreSQL and S3, and with in-process or Redis
locks: the same users, the same messages, the same load, one run, as
ratios to Maildir with in-process locks.

    scripts/bench-stores [--users 256] [--duration 8] [--rounds 2] [--lock FILE] ...

What it does (stdlib only):

1. Builds popgate and pop3-loadgen in release mode (unless --skip-build)
   and copies them into a temporary directory.
2. Writes Maildirs: --users users (u0001@bench.test ...) with 10 messages
   of 3.5-4.5 KB each (LF endings, sizes in the names), and a passwd-file
   with PLAIN passwords (hashing is not what is measured here).
3. Starts a private SeaweedFS (`weed server -s3`, WEED_BIN), makes a schema
   of its own in the shared PostgreSQL (POPGATE_TEST_PG_URL) and takes a
   key prefix of its own in the shared Redis (POPGATE_TEST_REDIS); copies
   the Maildirs into PostgreSQL and S3 with `popgate migrate-mail` (UIDLs
   carried), so every store holds the same mail.
4. Starts four popgates, one tenant each, passwd-file directory:
   maildir (in-process locks), postgres, s3 (in-process locks) and
   maildir+redis (Redis locks). Downloads every mailbox once from each
   (the warm-up: S3 writes its size index, pools fill), then checks that
   UIDL and LIST are identical on all three stores for a sample.
5. Counts what a session asks of each backend: for each of postgres, s3
   and maildir+redis, a separate popgate pointed at a counting relay
   (benchlib.relay) runs --count-sessions sessions one at a time; the
   relay classifies every round trip (statement prepared or cached, S3
   operation, Redis command).
6. The timed part (under --lock FILE when given, so no build competes):
   two loads, --concurrency workers each, --duration seconds per run,
   the servers in turn, --rounds times:
     session: USER/PASS, STAT, UIDL, LIST, RETR of 10 messages, QUIT
     login:   USER/PASS, STAT, QUIT
     login-c4: the same with 4 workers (latency below saturation)
   Prints sessions/s, login p50/p99 and server CPU per session, each with
   its ratio (or difference) to maildir.

Only 127.0.0.1 is contacted. The schema, the Redis keys and the temporary
directory are removed at the end (the directory unless --keep).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import urllib.parse

from .cli import binaries
from .dataset import PASSWORD, small_mailboxes
from .procfs import proc_times
from .relay import Relay
from .report import fmt, mean
from .runner import listing, log, run_loadgen
from .servers import HOST, MEMORY_LOCKS, Popgate, free_port, popgate_config, wait_ready
from .services import PgSchema, RedisPrefix, Seaweed, run_id

SERVERS = ["maildir", "postgres", "s3", "maildir+redis"]
MESSAGES = 10


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scripts/bench-stores", description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=256, help="mailboxes (default 256)")
    ap.add_argument("--duration", type=int, default=8, help="seconds per timed run (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per server and load (default 2)")
    ap.add_argument("--concurrency", type=int, default=64, help="workers of both loads (default 64)")
    ap.add_argument("--loads", default="session,login,login-c4",
                    help="comma-separated: session, login, login-c4 (default all)")
    ap.add_argument("--only", default=",".join(SERVERS), help=f"comma-separated servers of {SERVERS}")
    ap.add_argument("--count-sessions", type=int, default=20,
                    help="sessions per server for the round-trip counts (0: no counts)")
    ap.add_argument("--jobs", type=int, default=8, help="migrate-mail --jobs (default 8)")
    ap.add_argument("--pg-store", default="", help="extra keys for the postgres store table,"
                                                   " e.g. ', max_connections = 32'")
    ap.add_argument("--lock", help="flock this file for the timed part (e.g. /work/build.lock)")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", help="also write every run's raw figures to this file")
    return ap


def tenant(work: str, store: str) -> str:
    return (f'[[tenants]]\nname = "bench"\ndomains = ["bench.test"]\n'
            f'auth = {{ kind = "passwd-file", path = "{work}/passwd" }}\nstore = {store}\n')


def with_port(url: str, port: int) -> str:
    """`url` with its host:port replaced by 127.0.0.1:`port`."""
    u = urllib.parse.urlsplit(url)
    creds = u.netloc.rsplit("@", 1)[0] + "@" if "@" in u.netloc else ""
    return urllib.parse.urlunsplit(u._replace(netloc=f"{creds}{HOST}:{port}"))


def url_port(url: str, default: int) -> int:
    return urllib.parse.urlsplit(url).port or default


class Backends:
    """SeaweedFS, the PostgreSQL schema and the Redis prefix of this run."""

    def __init__(self, work: str):
        rid = run_id()
        self.pg = PgSchema(rid)
        self.redis = RedisPrefix(rid)
        self.s3 = Seaweed(work)

    def stores(self, work: str, a, relays: dict | None = None) -> dict[str, tuple[str, str]]:
        """Per server: (store table, locks body); through `relays` when given."""
        relays = relays or {}
        # Plain text through the relay: it reads the protocol.
        pg_url = (with_port(self.pg.url, relays["postgres"].port) + "?sslmode=disable"
                  if "postgres" in relays else None)
        if pg_url and pg_url.count("?") > 1:
            pg_url = pg_url.replace("?sslmode", "&sslmode")
        s3_url = f"http://{HOST}:{relays['s3'].port}" if "s3" in relays else None
        redis_url = with_port(self.redis.url, relays["redis"].port) if "redis" in relays else None
        maildir = f'{{ kind = "maildir", path = "{work}/mail/%d/%n/Maildir" }}'
        return {
            "maildir": (maildir, MEMORY_LOCKS),
            "postgres": (self.pg.store(pg_url, a.pg_store), MEMORY_LOCKS),
            "s3": (self.s3.store(s3_url), MEMORY_LOCKS),
            "maildir+redis": (maildir, self.redis.locks(redis_url)),
        }

    def stop(self) -> None:
        self.s3.stop()
        self.pg.drop()
        self.redis.drop()


def write_config(work: str, name: str, port: int, store: str, locks: str) -> str:
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write(popgate_config(work, port, tenant(work, store), locks))
    return path


def fill_stores(a, work: str, popgate: str, backends: Backends) -> None:
    """PostgreSQL and S3 get the Maildirs' mail through migrate-mail."""
    stores = backends.stores(work, a)
    source = write_config(work, "fill-maildir", free_port(), *stores["maildir"])
    pg = write_config(work, "fill-postgres", free_port(), *stores["postgres"])
    s3 = write_config(work, "fill-s3", free_port(), *stores["s3"])
    subprocess.run([popgate, "migrate", "--config", pg], check=True, capture_output=True)
    for name, dest in (("postgres", pg), ("s3", s3)):
        t = time.time()
        r = subprocess.run([popgate, "migrate-mail", "--from", source, "--to", dest, "--all",
                            "--jobs", str(a.jobs)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"migrate-mail to {name} failed:\n{r.stderr[-2000:]}")
        log(f"copied the Maildirs to {name} ({time.time() - t:.0f} s)")


def start_servers(a, work: str, popgate: str, stores: dict, names: list[str], tag: str = "") -> dict:
    out = {}
    for name in names:
        port = free_port()
        store, locks = stores[name]
        conf = popgate_config(work, port, tenant(work, store), locks).replace(
            'log_level = "info"', 'log_level = "warn"').replace("20000", "2000")
        out[name] = Popgate(work, port, os.geteuid(), os.getegid(), popgate, conf,
                            (tag + name).replace("+", "-"))
        out[name].name = name
    for server in out.values():
        wait_ready(server)
    return out


def users_args(a) -> list[str]:
    return ["--user-pattern", "u%04d@bench.test", "--user-range", f"1-{a.users}"]


def warm_up_and_check(a, servers: dict, loadgen: str) -> None:
    for name, server in servers.items():
        r = run_loadgen(loadgen, server, ["--mode", "full", *users_args(a), "--concurrency", "8",
                                          "--sessions", str(a.users), "--duration", "600s"])
        if r["errors"] or r["sessions_ok"] != a.users:
            raise SystemExit(f"warm-up on {name} failed: {r}")
        log(f"warm-up: every mailbox once on {name} ({r['wall_s']:.1f} s)")
    stores = [n for n in ("maildir", "postgres", "s3") if n in servers]
    sample = [f"u{u:04d}@bench.test" for u in random.Random(18).sample(range(1, a.users + 1), min(8, a.users))]
    for user in sample:
        seen = {n: listing(servers[n].port, user) for n in stores}
        first = seen[stores[0]]
        for n in stores[1:]:
            if seen[n] != first or len(first) != MESSAGES:
                raise SystemExit(f"UIDL/LIST of {user} differ: {stores[0]} {first[:2]}..., {n} {seen[n][:2]}...")
    log(f"UIDL and LIST identical on {', '.join(stores)} for {len(sample)} mailboxes")


def count_trips(a, work: str, popgate: str, loadgen: str, backends: Backends, names: list[str]) -> dict:
    """Round trips per session to each backend, through counting relays."""
    targets = {"postgres": ("postgres", url_port(backends.pg.url, 5432), "postgres"),
               "s3": ("s3", backends.s3.port, "http"),
               "maildir+redis": ("redis", url_port(backends.redis.url, 6379), "redis")}
    relays = {}
    for name in names:
        if name in targets:
            key, port, kind = targets[name]
            relays[key] = Relay(port, kind)
            relays[key].start()
    stores = backends.stores(work, a, relays)
    counted = [n for n in names if n in targets]
    servers = start_servers(a, work, popgate, stores, counted, "count-")
    out = {}
    try:
        for name in counted:
            relay = relays[targets[name][0]]
            out[name] = {}
            for load, mode in (("session", ["--mode", "full", "--retr", str(MESSAGES)]),
                               ("login", ["--mode", "login"])):
                args = [*mode, *users_args(a), "--concurrency", "1", "--duration", "600s"]
                run_loadgen(loadgen, servers[name], [*args, "--sessions", "2"])  # warm: pool, probe
                relay.reset()
                r = run_loadgen(loadgen, servers[name], [*args, "--sessions", str(a.count_sessions)])
                c = relay.counts()
                n = max(r["sessions_ok"], 1)
                out[name][load] = {"sessions": r["sessions_ok"], "errors": r["errors"],
                                   "connections": c["connections"],
                                   "round_trips_per_session": c["round_trips"] / n,
                                   "by_kind": {k: v / n for k, v in sorted(c["by_kind"].items())}}
                log(f"{name} {load}: {c['round_trips'] / n:.1f} round trips per session "
                    f"({', '.join(f'{k} {v / n:.1f}' for k, v in sorted(c['by_kind'].items()))}), "
                    f"{c['connections']} new connections")
    finally:
        for server in servers.values():
            server.stop()
        for relay in relays.values():
            relay.stop()
    return out


def loads(a) -> list[tuple[str, list[str]]]:
    """(name, pop3-loadgen arguments): the session and login loads at
    --concurrency, and logins at 4 workers, where the machine is not
    saturated and a latency added per login shows as itself rather than
    through the rate."""
    known = {"session": ["--mode", "full", "--retr", str(MESSAGES), "--concurrency", str(a.concurrency)],
             "login": ["--mode", "login", "--concurrency", str(a.concurrency)],
             "login-c4": ["--mode", "login", "--concurrency", "4"]}
    return [(k, known[k]) for k in a.loads.split(",")]


def pg_backends(server: Popgate, pg: PgSchema) -> list[int]:
    """The PostgreSQL backend processes serving `server`'s pool: its
    connections' local ports (ss) matched with pg_stat_activity."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", "( dport = :5432 )"],
                         capture_output=True, text=True).stdout
    ports = [line.split()[2].rsplit(":", 1)[1] for line in out.splitlines() if f"pid={server.pid}," in line]
    if not ports:
        return []
    rows = pg.sql(f"SELECT pid FROM pg_stat_activity WHERE client_port IN ({','.join(ports)})")
    return [int(p) for p in rows.split()]


class BackendCpu:
    """CPU seconds the backend of a server spent: SeaweedFS's process, or
    the PostgreSQL backends of the server's pool (Redis is shared: not
    counted)."""

    def __init__(self, name: str, server: Popgate, backends: Backends):
        self.name, self.server, self.backends = name, server, backends
        self.start = self.sample()

    def sample(self) -> dict[int, float]:
        if self.name == "s3":
            pids = [self.backends.s3.proc.pid]
        elif self.name == "postgres":
            pids = pg_backends(self.server, self.backends.pg)
        else:
            return {}
        out = {}
        for pid in pids:
            try:
                out[pid] = proc_times(pid)[0]
            except (FileNotFoundError, ProcessLookupError):
                pass
        return out

    def used(self) -> float | None:
        if self.name not in ("s3", "postgres"):
            return None
        end = self.sample()
        return sum(cpu - self.start.get(pid, 0.0) for pid, cpu in end.items())


def timed(a, servers: dict, loadgen: str, backends: Backends) -> dict:
    results: dict = {}
    for load, mode in loads(a):
        results[load] = {n: [] for n in servers}
        for rnd in range(a.rounds):
            for name, server in servers.items():
                cpu = BackendCpu(name, server, backends)
                r = run_loadgen(loadgen, server, [*mode, *users_args(a), "--duration", f"{a.duration}s"])
                r["backend_cpu_s"] = cpu.used()
                results[load][name].append(r)
                log(f"  {load} round {rnd + 1} {name}: {r['sessions_per_s']:.0f} sessions/s, "
                    f"login p99 {r['login_p99_ms']} ms, CPU {r['server_cpu_s']:.2f} s, errors {r['errors']}")
                time.sleep(0.5)
    return results


def figures(r: dict) -> dict:
    ok = max(r["sessions_ok"], 1)
    return {"sessions/s": r["sessions_per_s"], "login p50 ms": r["login_p50_ms"],
            "login p99 ms": r["login_p99_ms"], "server CPU ms/session": r["server_cpu_s"] * 1000 / ok,
            "backend CPU ms/session": (r["backend_cpu_s"] * 1000 / ok
                                       if r.get("backend_cpu_s") is not None else None),
            "errors": r["errors"]}


def report(results: dict, counts: dict) -> str:
    out = ["| load | server | sessions/s | ÷ maildir | login p50 ms | login p99 ms | p99 − maildir's, ms "
           "| popgate CPU ms/session | backend CPU ms/session | errors |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for load, per in results.items():
        base = {k: mean([figures(r)[k] for r in per.get("maildir", [])]) for k in ("sessions/s", "login p99 ms")}
        for name, runs in per.items():
            f = [figures(r) for r in runs]
            m = {k: mean([x[k] for x in f]) for k in f[0]}
            each = " / ".join(fmt(x["sessions/s"], 0) for x in f)
            ratio = m["sessions/s"] / base["sessions/s"] if base["sessions/s"] else None
            p99s = " / ".join(fmt(x["login p99 ms"]) for x in f)
            diff = m["login p99 ms"] - base["login p99 ms"] if base["login p99 ms"] is not None else None
            out.append(f"| {load} | {name} | {fmt(m['sessions/s'], 0)} ({each}) | {fmt(ratio, 2)} | "
                       f"{fmt(m['login p50 ms'])} | {fmt(m['login p99 ms'])} ({p99s}) | {fmt(diff, 2)} | "
                       f"{fmt(m['server CPU ms/session'], 2)} | {fmt(m['backend CPU ms/session'], 2)} | "
                       f"{sum(x['errors'] for x in f)} |")
    if counts:
        out += ["", "| server | load | round trips to the backend per session | of which | new connections |",
                "| --- | --- | ---: | --- | ---: |"]
        for name, per in counts.items():
            for load, c in per.items():
                kinds = "; ".join(f"{k}: {fmt(v)}" for k, v in c["by_kind"].items())
                out.append(f"| {name} | {load} | {fmt(c['round_trips_per_session'])} | {kinds} | "
                           f"{c['connections']} in {c['sessions']} sessions |")
    return "\n".join(out)


def log_complaints(work: str) -> list[str]:
    """Warning and error lines of every popgate's log."""
    out = []
    for name in sorted(os.listdir(work)):
        if name.startswith("popgate-") and name.endswith(".log"):
            with open(os.path.join(work, name), errors="replace") as f:
                out += [f"{name}: {line.strip()}" for line in f if " WARN " in line or " ERROR " in line]
    return out


def machine_line(a) -> str:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(__file__)).stdout.strip()
    return (f"machine: {os.cpu_count()} CPUs ({cpu}), load average {os.getloadavg()[0]:.2f}; git {head}; "
            f"{a.users} users x {MESSAGES} messages; {a.rounds} rounds of {a.duration} s, "
            f"concurrency {a.concurrency}")


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    names = [n for n in SERVERS if n in a.only.split(",")]
    if "maildir" not in names:
        raise SystemExit("--only must include maildir: the ratios are to it")
    if a.users < a.concurrency:
        raise SystemExit("--users must be at least --concurrency (each worker needs its own mailboxes)")
    work = tempfile.mkdtemp(prefix="popgate-bench-stores-")
    backends = None
    servers: dict = {}
    try:
        popgate, loadgen = binaries(a.skip_build, work)
        small_mailboxes(os.path.join(work, "mail", "bench.test"), a.users, MESSAGES, random.Random(1839))
        with open(os.path.join(work, "passwd"), "w") as f:
            f.writelines(f"u{u:04d}@bench.test:{{PLAIN}}{PASSWORD}\n" for u in range(1, a.users + 1))
        backends = Backends(work)
        log(f"SeaweedFS on {backends.s3.endpoint}, PostgreSQL schema {backends.pg.name}, "
            f"Redis prefix {backends.redis.prefix}")
        fill_stores(a, work, popgate, backends)
        servers = start_servers(a, work, popgate, backends.stores(work, a), names)
        warm_up_and_check(a, servers, loadgen)
        counts = count_trips(a, work, popgate, loadgen, backends, names) if a.count_sessions else {}
        lock = open(a.lock, "a") if a.lock else None
        if lock:
            log(f"waiting for {a.lock}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            results = timed(a, servers, loadgen, backends)
        finally:
            if lock:
                lock.close()
        print(machine_line(a) + "\n")
        print(report(results, counts))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"results": results, "counts": counts}, f, indent=1)
        for server in servers.values():
            if server.proc.poll() is not None:
                log(f"WARNING: {server.name} exited during the run ({server.proc.returncode})")
        complaints = log_complaints(work)
        for line in complaints[:10]:
            log(f"WARNING: logged: {line}")
        if not complaints:
            log("no popgate logged a warning or an error")
    finally:
        for server in servers.values():
            server.stop()
        if backends:
            backends.stop()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
