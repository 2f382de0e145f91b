"""What one session and one MB of RETR cost popgate, in repeatable units:
instructions counted by callgrind (`--callgrind`), heap allocations counted
by DHAT (`--dhat`), system calls counted by strace (`--strace`, by name), or
CPU time and context switches from /proc (the default).

Each scenario runs against a fresh popgate: an idle start and stop (the
baseline), N sessions one after another (login, STAT, UIDL, LIST, 10 RETRs
of about 4 KiB, QUIT), and K RETRs of a large message stored with LF line
endings and of one stored as CRLF. A figure is the scenario's cost less the
baseline's, divided by its sessions or MB. Wall-clock time plays no part, so
the figures hold on a busy machine.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .dataset import PASSWORD, body_lines, message, small_mailboxes, write_maildir, write_passwd
from .procfs import children, proc_times
from .servers import HOST, free_port, popgate_config


def make_mail(work: str, users: int, big_mb: int) -> dict:
    rng = random.Random(18)
    domain = os.path.join(work, "mail", "bench.test")
    small_mailboxes(domain, users, 10, rng)
    seq = [users * 10]
    lf = message(rng, "big", 0, 0) + body_lines(rng, big_mb * 1_000_000)
    write_maildir(os.path.join(domain, "big", "Maildir"), [lf], seq)
    crlf = lf.replace(b"\n", b"\r\n")
    md = os.path.join(domain, "crlf", "Maildir")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    name = f"1800000000.M1P1.bench,S={len(crlf)},W={len(crlf)}:2,S"
    with open(os.path.join(md, "cur", name), "wb") as f:
        f.write(crlf)
    write_passwd(os.path.join(work, "passwd"), users, "{PLAIN}unused")
    with open(os.path.join(work, "passwd"), "a") as f:
        f.write(f"crlf@bench.test:{{PLAIN}}{PASSWORD}\n")
    return {"lf_mb": len(lf) / 1e6, "crlf_mb": len(crlf) / 1e6}


TOOLS = ("cpu", "callgrind", "dhat", "strace")


class Server:
    """A fresh popgate, under `tool`: its counters when stopped."""

    def __init__(self, binary: str, work: str, tool: str, tag: str):
        self.port = free_port()
        self.tool = tool
        conf = os.path.join(work, "popgate.toml")
        with open(conf, "w") as f:
            f.write(popgate_config(work, self.port).replace('log_level = "info"', 'log_level = "warn"'))
        cmd = [binary, "serve", "--config", conf]
        self.out = os.path.join(work, f"{tool}.{tag}")
        if tool == "callgrind":
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", *cmd]
        elif tool == "dhat":
            cmd = ["valgrind", "--tool=dhat", f"--dhat-out-file={self.out}.json", f"--log-file={self.out}", *cmd]
        elif tool == "strace":
            cmd = ["strace", "-f", "-c", "-U", "name,calls", "-o", self.out, *cmd]
        self.log = open(os.path.join(work, f"popgate.{tag}.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=work)
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=5) as s:
                    if s.recv(100).startswith(b"+OK"):
                        s.sendall(b"QUIT\r\n")
                        s.recv(100)
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"popgate did not start (see {self.log.name})")
            time.sleep(0.2)
        # strace runs popgate as its child; valgrind runs in its place.
        kids = children(self.proc.pid) if tool == "strace" else []
        self.pid = kids[0] if kids else self.proc.pid

    def stop(self) -> dict[str, float]:
        """Stops it; its counters: CPU seconds and context switches, or
        instructions, or heap bytes and blocks, or system calls by name."""
        counters = {}
        if self.tool == "cpu":
            counters = {"CPU ms": sum(proc_times(self.pid)) * 1000, "context switches": switches(self.pid)}
        os.kill(self.pid, signal.SIGTERM)
        self.proc.wait(120)
        if self.tool == "cpu":
            return counters
        if self.tool == "callgrind":
            for path in glob.glob(self.out + "*"):
                with open(path) as f:
                    for line in f:
                        if line.startswith(("summary:", "totals:")):
                            return {"instructions": float(line.split()[1])}
            raise SystemExit(f"no callgrind totals in {self.out}")
        with open(self.out) as f:
            text = f.read()
        return parse_dhat(text) if self.tool == "dhat" else parse_strace(text)


def switches(pid: int) -> float:
    """Voluntary and involuntary context switches of all of pid's threads."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            total += sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)
    return float(total)


def parse_dhat(text: str) -> dict[str, float]:
    """DHAT's summary: `Total: 1,234 bytes in 56 blocks`."""
    m = re.search(r"Total:\s+([\d,]+) bytes in ([\d,]+) blocks", text)
    if not m:
        raise SystemExit(f"no DHAT totals in: {text[-300:]!r}")
    return {"heap bytes": float(m.group(1).replace(",", "")), "allocations": float(m.group(2).replace(",", ""))}


def parse_strace(text: str) -> dict[str, float]:
    """`strace -c -U name,calls`: calls per system call, and the total."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = float(parts[1])
    if "total" not in out:
        raise SystemExit(f"no strace totals in: {text[-300:]!r}")
    return out


def loadgen(binary: str, port: int, args: list[str]) -> None:
    cmd = [binary, "--host", HOST, "--port", str(port), "--password", PASSWORD,
           "--concurrency", "1", "--mode", "full", "--duration", "600s", "--json", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or '"errors":0' not in r.stdout.replace(" ", ""):
        raise SystemExit(f"pop3-loadgen failed: {r.stdout[-500:]} {r.stderr[-500:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench-cost", description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    p.add_argument("--popgate", default=f"{target}/release/popgate")
    p.add_argument("--loadgen", default=f"{target}/release/pop3-loadgen")
    p.add_argument("--callgrind", action="store_true", help="count instructions (slow)")
    p.add_argument("--dhat", action="store_true", help="count heap allocations (slow)")
    p.add_argument("--strace", action="store_true", help="count system calls, by name")
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--big-mb", type=int, default=20)
    p.add_argument("--retrs", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the work directory (callgrind files, logs)")
    a = p.parse_args(argv)
    tool = "callgrind" if a.callgrind else "dhat" if a.dhat else "strace" if a.strace else "cpu"
    work = tempfile.mkdtemp(prefix="popgate-cost-")
    try:
        sizes = make_mail(work, a.sessions, a.big_mb)

        def run(tag: str, args: list[str] | None) -> dict[str, float]:
            srv = Server(a.popgate, work, tool, tag)
            if args is not None:
                loadgen(a.loadgen, srv.port, args)
            return srv.stop()

        base = run("base", None)
        sessions = run("sessions", ["--user-pattern", "u%04d@bench.test", "--user-range",
                                    f"1-{a.sessions}", "--sessions", str(a.sessions), "--retr", "10"])
        rows = [("per session (login, STAT, UIDL, LIST, 10 RETR of ~4 KiB, QUIT)", sessions, a.sessions)]
        for user, mb in (("big", sizes["lf_mb"]), ("crlf", sizes["crlf_mb"])):
            users = os.path.join(work, f"{user}.users")
            with open(users, "w") as f:
                f.write(f"{user}@bench.test\n")
            cost = run(user, ["--users-file", users, "--sessions", str(a.retrs), "--retr", "1"])
            kind = "LF" if user == "big" else "CRLF"
            rows.append((f"per MB of RETR ({kind} stored, {mb:.0f} MB x {a.retrs})", cost, mb * a.retrs))
        print(f"baseline (start, one probe, stop): " + ", ".join(f"{v:,.0f} {k}" for k, v in base.items()
                                                                   if k in ("total", "CPU ms", "instructions",
                                                                            "allocations", "heap bytes")))
        for what, counters, per in rows:
            print(f"{what}: " + per_unit(counters, base, per, tool))
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work)
    return 0


def per_unit(counters: dict[str, float], base: dict[str, float], per: float, tool: str) -> str:
    """The counters less the baseline's, per session or MB; for strace the
    total and the system calls that make up nine tenths of it."""
    diff = {k: (v - base.get(k, 0.0)) / per for k, v in counters.items()}
    if tool != "strace":
        return ", ".join(f"{v:,.0f} {k}" if abs(v) >= 100 else f"{v:.2f} {k}" for k, v in diff.items())
    total = diff.pop("total")
    shown, acc = [], 0.0
    for name, v in sorted(diff.items(), key=lambda kv: -kv[1]):
        if acc >= 0.9 * total or v < 0.05:
            break
        shown.append(f"{name} {v:.1f}")
        acc += v
    return f"{total:.1f} system calls ({', '.join(shown)})"


if __name__ == "__main__":
    sys.exit(main())
