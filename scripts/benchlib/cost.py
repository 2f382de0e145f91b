"""What one session and one MB of RETR cost popgate, in repeatable units:
instructions counted by callgrind (`--callgrind`), or CPU time from /proc.

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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .dataset import PASSWORD, body_lines, message, small_mailboxes, write_maildir, write_passwd
from .procfs import proc_times
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


class Server:
    def __init__(self, binary: str, work: str, callgrind: bool, tag: str):
        self.port = free_port()
        conf = os.path.join(work, "popgate.toml")
        with open(conf, "w") as f:
            f.write(popgate_config(work, self.port).replace('log_level = "info"', 'log_level = "warn"'))
        cmd = [binary, "serve", "--config", conf]
        self.out = None
        if callgrind:
            self.out = os.path.join(work, f"callgrind.{tag}")
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", *cmd]
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

    def stop(self) -> float:
        """Stops it; its instructions (callgrind) or CPU seconds."""
        cpu = sum(proc_times(self.proc.pid)) if self.out is None else 0.0
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        if self.out is None:
            return cpu
        for path in glob.glob(self.out + "*"):
            with open(path) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        return float(line.split()[1])
        raise SystemExit(f"no callgrind totals in {self.out}")


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
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--big-mb", type=int, default=20)
    p.add_argument("--retrs", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the work directory (callgrind files, logs)")
    a = p.parse_args(argv)
    unit = "instructions" if a.callgrind else "CPU ms"
    scale = 1.0 if a.callgrind else 1000.0
    work = tempfile.mkdtemp(prefix="popgate-cost-")
    try:
        sizes = make_mail(work, a.sessions, a.big_mb)

        def run(tag: str, args: list[str] | None) -> float:
            srv = Server(a.popgate, work, a.callgrind, tag)
            if args is not None:
                loadgen(a.loadgen, srv.port, args)
            return srv.stop() * scale

        base = run("base", None)
        sessions = run("sessions", ["--user-pattern", "u%04d@bench.test", "--user-range",
                                    f"1-{a.sessions}", "--sessions", str(a.sessions), "--retr", "10"])
        rows = [("per session (login, STAT, UIDL, LIST, 10 RETR of ~4 KiB, QUIT)",
                 (sessions - base) / a.sessions)]
        for user, mb in (("big", sizes["lf_mb"]), ("crlf", sizes["crlf_mb"])):
            users = os.path.join(work, f"{user}.users")
            with open(users, "w") as f:
                f.write(f"{user}@bench.test\n")
            cost = run(user, ["--users-file", users, "--sessions", str(a.retrs), "--retr", "1"])
            kind = "LF" if user == "big" else "CRLF"
            rows.append((f"per MB of RETR ({kind} stored, {mb:.0f} MB x {a.retrs})", (cost - base) / (mb * a.retrs)))
        print(f"baseline (start, one probe, stop): {base:,.0f} {unit}")
        for what, v in rows:
            print(f"{what}: {v:,.0f} {unit}" if a.callgrind else f"{what}: {v:.2f} {unit}")
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
