"""scripts/chaos: the run, the audit and the report."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from .faults import Faults, kinds
from .ledger import Ledger, failed
from .services import Stack
from .workload import Client, Deliveries, audit_contents

REPO = Path(__file__).resolve().parents[2]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/chaos",
        description="Three popgate replicas behind haproxy on Redis locks, tenants on Maildir, PostgreSQL "
                    "and S3, a delivery stream, random client sessions and faults; then an audit of every "
                    "mailbox through a fresh replica. Exits 1 if anything was lost, deleted without a "
                    "committed QUIT, served to the wrong mailbox or held twice.")
    p.add_argument("--seconds", type=float, default=90, help="length of the load (default 90: the short form)")
    p.add_argument("--minutes", type=float, help="the long form: this many minutes of load")
    p.add_argument("--rounds", type=int, help="rounds of every fault kind (default: 2, +1 per 2 minutes)")
    p.add_argument("--clients", type=int, default=10, help="client threads (default 10)")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--sentinel", action="store_true",
                   help="locks on a Redis Sentinel set (master, replica, three sentinels); the Redis fault is a "
                        "failover instead of a restart")
    p.add_argument("--ttl", default="2s", help="the Redis lock ttl (a stopped replica stays stopped past it)")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    p.add_argument("--sabotage", choices=("remove-file", "memory-locks"),
                   help="break a rule on purpose, to show the audit catches it")
    p.add_argument("--json", help="write the figures to this file too")
    p.add_argument("--keep", action="store_true", help="keep the run's directory (logs, Maildirs)")
    p.add_argument("--bin", default=os.environ.get("POPGATE_BIN") or str(REPO / "target" / "debug" / "popgate"))
    args = p.parse_args(argv)
    if args.minutes:
        args.seconds = args.minutes * 60
    if args.rounds is None:
        args.rounds = 2 + int(args.seconds // 120)
    return args


def ttl_seconds(ttl: str) -> float:
    return float(ttl[:-2]) / 1000 if ttl.endswith("ms") else float(ttl.rstrip("s"))


def report(figures: dict, seed: int) -> str:
    faults = figures["faults"]
    lines = [
        f"chaos run (seed {seed}): {figures['seconds']} s of load, {figures['wall_seconds']} s in all",
        f"  sessions                      {figures['sessions']} ({figures.get('connections', 0)} connections, "
        f"{figures.get('in_use', 0)} [IN-USE])",
        f"  committed QUITs               {figures['committed_quits']} "
        f"(ambiguous {figures['ambiguous_quits']}, refused {figures.get('quit_refused', 0)})",
        f"  deliveries                    {figures['delivered']} "
        f"(+{figures['deliveries_failed']} refused while a store was down)",
        f"  deleted by committed QUITs    {figures['deleted_committed']}",
        "  faults                        " + ", ".join(f"{k} {v}" for k, v in faults.items()),
        f"  messages checked              {figures['messages_checked']} "
        f"({figures.get('audited_messages', 0)} in the audit)",
        f"  lost                          {figures['lost']}",
        f"  deleted without a committed QUIT {figures['deleted_without_quit']}",
        f"  served to the wrong mailbox   {figures['wrong_mailbox']}",
        f"  corrupted                     {figures['corrupted']}",
        f"  served after a committed delete {figures['resurrected']}",
        f"  moments with two lock holders {figures['two_holders']} "
        f"(longest {figures['longest_two_holders_ms']} ms; "
        f"{figures.get('two_holders_possible', 0)} more possible: the +OK came back after the other's PASS)",
    ]
    return "\n".join(lines)


def coverage_gaps(figures: dict, rounds: int, sentinel: bool) -> list[str]:
    """What a run must have done to prove anything."""
    gaps = []
    if figures["committed_quits"] == 0 or figures["deleted_committed"] == 0:
        gaps.append("no QUIT committed a delete")
    if figures["messages_checked"] == 0:
        gaps.append("no message was checked")
    for kind in (*kinds(sentinel), "client-vanish-mid-retr"):
        if rounds and not figures["faults"].get(kind):
            gaps.append(f"no {kind} fault happened")
    return gaps


def run(args: argparse.Namespace) -> tuple[dict, list[str]]:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="popgate-chaos-"))
    os.chmod(workdir, 0o755)  # the postgres user reaches its data directory below
    stack = Stack(args.bin, workdir, replicas=args.replicas, ttl=args.ttl,
                  memory_locks=args.sabotage == "memory-locks", sentinel=args.sentinel)
    ledger = Ledger()
    errors: list[str] = []
    try:
        stack.start()
        stop = threading.Event()
        uidls: dict = {}
        uidls_lock = threading.Lock()
        threads = [Deliveries(stack, ledger, stop, args.seed, "maildir", interval=0.1),
                   Deliveries(stack, ledger, stop, args.seed + 1, "deliver", interval=0.1)]
        threads += [Client(stack, ledger, stop, args.seed + 10 + i, stack.haproxy.port, uidls, uidls_lock)
                    for i in range(args.clients)]
        faults = Faults(stack, ledger, stop, args.seed + 2, args.seconds, args.rounds,
                        pause=ttl_seconds(args.ttl) + 1.5, sabotage=args.sabotage)
        for t in (*threads, faults):
            t.start()
        time.sleep(args.seconds)
        faults.join()  # a fault that came late still comes under load
        stop.set()
        for t in threads:
            t.join(60)
        if faults.error:
            errors.append(f"a fault could not be injected: {faults.error!r}")
        faults.heal()
        # The sessions of killed clients end on the server; stale locks lapse.
        time.sleep(ttl_seconds(args.ttl) + 0.5)
        audit = stack.fresh_replica()
        final = audit_contents(stack, ledger, audit.port)
        figures = ledger.audit(final)
    except Exception:
        print(f"chaos: the run failed; its directory is kept: {workdir}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    figures["seconds"] = args.seconds
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    figures["seed"] = args.seed
    figures["problems"] = ledger.problems
    if args.keep:
        figures["workdir"] = str(workdir)
    return figures, errors + coverage_gaps(figures, args.rounds, args.sentinel)


def main(argv=None) -> None:
    args = parse(argv)
    figures, gaps = run(args)
    print(report(figures, args.seed))
    for line in figures["problems"][:12]:
        print("  ! " + line)
    if len(figures["problems"]) > 12:
        print(f"  ! ... and {len(figures['problems']) - 12} more (in --json's figures)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    bad = failed(figures)
    for gap in gaps:
        print(f"chaos: the run proves too little: {gap}", file=sys.stderr)
    if bad:
        print("chaos: FAILED: " + ", ".join(f"{k} = {figures[k]}" for k in bad), file=sys.stderr)
    if "workdir" in figures:
        print(f"chaos: the run's directory: {figures['workdir']}")
    sys.exit(1 if bad or gaps else 0)
