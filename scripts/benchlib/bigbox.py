"""Large maildrops (issue 18): one mailbox of N messages (50,000 by default)
in each store, measured over POP3 against release builds of popgate.

For each store and each binary given (`--binary LABEL=PATH`, several to
compare builds in one run), a fresh popgate serves a tenant on that store;
a one-message session warms it up; then R sessions to the large mailbox
each time login (USER/PASS until +OK), STAT, UIDL and LIST (from the
command to the end of the whole reply, and its bytes), checked complete.
The server's peak RSS (VmHWM, reset before each session) is taken after
each reply, and the memory the open maildrop holds is RSS while the first
session is logged in less RSS before it, per message.

Stores:
- maildir: the files written directly, as Dovecot leaves them (`,S=` and
  `,W=` in the names, in cur/), with a dovecot-uidlist; the first login
  without a uidlist (popgate writes it) is timed once per binary too;
- postgres: rows put in with one INSERT ... SELECT each (the shared server,
  a schema of its own, dropped at the end);
- s3: SeaweedFS (`WEED_BIN`) started here, objects PUT in parallel and the
  size index (`.popgate/sizes.json`) written beside them, as a warm index.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from .procfs import status_kb
from .servers import HOST, free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))

PASSWORD = "bigbox-secret"
DOMAIN = "big.test"
SCHEMA = "bigbox_bench"
BODY_LINE = b"All work and no play makes a large maildrop, line after line.\n"


def body(i: int, size: int) -> bytes:
    head = (f"From: sender{i}@example.org\nTo: big@{DOMAIN}\nSubject: message {i}\n"
            f"Message-ID: <{i}@bigbox.example>\n\n").encode()
    lines = max(1, (size - len(head)) // len(BODY_LINE))
    return head + BODY_LINE * lines


def pop3_size(data: bytes) -> int:
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


# -- datasets ----------------------------------------------------------------

def make_maildir(md: str, n: int, size: int, uidlist: bool) -> None:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    lines = []
    for i in range(1, n + 1):
        data = body(i, size)
        base = f"{1700000000 + i}.M{i}P4242.bigbox,S={len(data)},W={pop3_size(data)}"
        with open(os.path.join(md, "cur", base + ":2,S"), "wb") as f:
            f.write(data)
        lines.append(f"{i} :{base}\n")
    if uidlist:
        with open(os.path.join(md, "dovecot-uidlist"), "w") as f:
            f.write(f"3 V1700000000 N{n + 1} G0123456789abcdef0123456789abcdef\n")
            f.writelines(lines)


def psql(url: str, sql: str) -> str:
    r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", url, "-c", sql],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"psql failed: {r.stderr.strip()}")
    return r.stdout


def make_postgres(url: str, n: int, size: int) -> None:
    data = body(0, size)
    text = data.decode().replace("'", "''")
    psql(url, f"""
SET search_path = {SCHEMA};
TRUNCATE mailboxes CASCADE;
INSERT INTO mailboxes (tenant, login) VALUES ('big', 'big@{DOMAIN}'), ('big', 'tiny@{DOMAIN}');
INSERT INTO messages (mailbox_id, uid, uidl, size, raw_size, chunks)
  SELECT b.id, g, popgate_uidl(g, b.uid_validity), {pop3_size(data)}, {len(data)}, 1
  FROM mailboxes b, generate_series(1, CASE WHEN b.login = 'big@{DOMAIN}' THEN {n} ELSE 1 END) g;
UPDATE mailboxes b SET next_uid = (SELECT max(uid) + 1 FROM messages m WHERE m.mailbox_id = b.id);
INSERT INTO message_chunks (message_id, seq, data)
  SELECT id, 0, convert_to('{text}', 'UTF8') FROM messages;
ANALYZE;""")


class Seaweed:
    """`weed server -s3` on free ports, data in `root` (as the Rust tests start it)."""

    def __init__(self, root: str):
        bin_ = os.environ.get("WEED_BIN", "weed")
        self.port = free_port()
        ports = {k: free_port() for k in ("master.port", "master.port.grpc", "volume.port",
                                         "volume.port.grpc", "filer.port", "filer.port.grpc",
                                         "s3.port.grpc")}
        os.makedirs(root, exist_ok=True)
        self.log = open(os.path.join(root, "weed.log"), "wb")
        self.proc = subprocess.Popen(
            [bin_, "server", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3", "-filer",
             "-iam=false", "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=8",
             *[f"-{k}={v}" for k, v in ports.items()], f"-s3.port={self.port}",
             f"-filer.localSocket={root}/filer.sock"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        from s3client import S3Client
        self.client = S3Client(self.port)
        deadline = time.monotonic() + 90
        while True:
            try:
                self.client.create_bucket()
                break
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"SeaweedFS did not start (see {root}/weed.log)")
                time.sleep(0.3)

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


def make_s3(weed: Seaweed, n: int, size: int, threads: int = 16) -> None:
    from s3client import S3Client

    def put(items):
        c = S3Client(weed.port)
        out = []
        for prefix, rel, data in items:
            status, headers, resp = c.request("PUT", prefix + rel, body=data)
            if status // 100 != 2:
                raise SystemExit(f"PUT {rel}: {status} {resp[:200]!r}")
            out.append((prefix, rel, headers.get("etag"), pop3_size(data)))
        c.close()
        return out

    items = [(f"{DOMAIN}/big/", f"{1700000000 + i}.{i:06d}.bigbox", body(i, size)) for i in range(1, n + 1)]
    items.append((f"{DOMAIN}/tiny/", "1700000000.000001.bigbox", body(1, size)))
    chunks = [items[k::threads] for k in range(threads)]
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        done = [r for part in ex.map(put, chunks) for r in part]
    for prefix in {p for p, *_ in done}:
        sizes = {rel: {"v": etag, "s": s} for p, rel, etag, s in done if p == prefix}
        index = json.dumps({"version": 2, "sizes": sizes}).encode()
        status, _, resp = weed.client.request("PUT", prefix + ".popgate/sizes.json", body=index,
                                              headers={"content-type": "application/json"})
        if status // 100 != 2:
            raise SystemExit(f"PUT sizes.json: {status} {resp[:200]!r}")


# -- the server and the client ------------------------------------------------

def config(work: str, port: int, store: str) -> str:
    return f"""[server]
hostname = "localhost"
shutdown_grace = "1s"
log_level = "warn"

[[listeners]]
address = "{HOST}:{port}"
tls = "none"
plaintext_auth = true

[locks]
backend = "memory"

[[tenants]]
name = "big"
domains = ["{DOMAIN}"]
auth = {{ kind = "passwd-file", path = "{work}/passwd" }}
store = {store}
"""


class Server:
    def __init__(self, binary: str, work: str, store: str, tag: str):
        self.port = free_port()
        conf = os.path.join(work, f"popgate-{tag}.toml")
        with open(conf, "w") as f:
            f.write(config(work, self.port, store))
        self.log_path = os.path.join(work, f"popgate-{tag}.log")
        self.log = open(self.log_path, "ab")
        if store.startswith("{ kind = \"postgres\""):
            r = subprocess.run([binary, "migrate", "--config", conf], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"popgate migrate failed: {r.stderr}")
        self.proc = subprocess.Popen([binary, "serve", "--config", conf], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=work)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=5) as s:
                    if s.recv(100).startswith(b"+OK"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"popgate did not start (see {self.log_path})")
            time.sleep(0.1)

    def rss_kb(self, key: str = "VmRSS") -> int:
        return status_kb(self.proc.pid, key)

    def reset_peak(self) -> None:
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Client:
    def __init__(self, port: int):
        self.s = socket.create_connection((HOST, port), timeout=120)
        self.buf = b""
        self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            got = self.s.recv(1 << 16)
            if not got:
                raise SystemExit("connection closed")
            self.buf += got
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, text: str) -> bytes:
        self.s.sendall(text.encode() + b"\r\n")
        line = self.line()
        if not line.startswith(b"+OK"):
            raise SystemExit(f"{text.split()[0]}: {line!r}")
        return line

    def multi(self, text: str) -> tuple[list[bytes], int]:
        """A multi-line reply: its lines and its bytes on the wire."""
        self.s.sendall(text.encode() + b"\r\n")
        chunks = [self.buf]
        self.buf = b""
        tail = chunks[0]
        while not (tail.endswith(b"\r\n.\r\n")):
            got = self.s.recv(1 << 18)
            if not got:
                raise SystemExit("connection closed in a multi-line reply")
            chunks.append(got)
            tail = (tail + got)[-5:]
        data = b"".join(chunks)
        lines = data.split(b"\r\n")
        if not lines[0].startswith(b"+OK"):
            raise SystemExit(f"{text}: {lines[0]!r}")
        return lines[1:-2], len(data)

    def close(self) -> None:
        self.s.close()


def timed(f):
    t = time.perf_counter()
    r = f()
    return r, (time.perf_counter() - t) * 1000


def login(port: int, user: str) -> tuple[Client, float]:
    c = Client(port)
    t = time.perf_counter()
    c.cmd(f"USER {user}@{DOMAIN}")
    c.cmd(f"PASS {PASSWORD}")
    return c, (time.perf_counter() - t) * 1000


def session(srv: Server, n: int, first: bool) -> dict:
    """One measured session on the large mailbox."""
    q = Client(srv.port)  # a connection of its own costs nothing in the figure
    q.close()
    rss0 = srv.rss_kb()
    srv.reset_peak()
    c, login_ms = login(srv.port, "big")
    held_kb = srv.rss_kb() - rss0
    login_peak = srv.rss_kb("VmHWM")
    stat, stat_ms = timed(lambda: c.cmd("STAT"))
    if int(stat.split()[1]) != n:
        raise SystemExit(f"STAT says {stat!r}, not {n} messages")
    srv.reset_peak()
    (uidl, uidl_bytes), uidl_ms = timed(lambda: c.multi("UIDL"))
    uidl_peak = srv.rss_kb("VmHWM")
    srv.reset_peak()
    (lst, list_bytes), list_ms = timed(lambda: c.multi("LIST"))
    list_peak = srv.rss_kb("VmHWM")
    nums = [int(x.split(b" ", 1)[0]) for x in uidl]
    if nums != list(range(1, n + 1)) or len(set(x.split(b" ", 1)[1] for x in uidl)) != n or len(lst) != n:
        raise SystemExit("UIDL/LIST incomplete, out of order or repeating")
    c.cmd("QUIT")
    c.close()
    return {"login_ms": login_ms, "stat_ms": stat_ms, "uidl_ms": uidl_ms, "uidl_bytes": uidl_bytes,
            "list_ms": list_ms, "list_bytes": list_bytes, "rss_before_kb": rss0,
            "held_kb": held_kb if first else None, "login_peak_kb": login_peak,
            "uidl_peak_kb": uidl_peak, "list_peak_kb": list_peak}


def expunge_all(binary: str, work: str, store: str, tag: str, n: int) -> dict:
    """DELE of every message (pipelined) and QUIT: the commit's time."""
    srv = Server(binary, work, store, tag)
    try:
        c, _ = login(srv.port, "big")
        t = time.perf_counter()
        for start in range(1, n + 1, 1000):
            c.s.sendall("".join(f"DELE {k}\r\n" for k in range(start, min(n, start + 999) + 1)).encode())
            for _ in range(start, min(n, start + 999) + 1):
                if not c.line().startswith(b"+OK"):
                    raise SystemExit("DELE refused")
        dele_ms = (time.perf_counter() - t) * 1000
        quit_line, quit_ms = timed(lambda: c.cmd("QUIT"))
        c.close()
        c, _ = login(srv.port, "big")
        left = int(c.cmd("STAT").split()[1])
        c.cmd("QUIT")
        c.close()
        return {"dele_all_ms": dele_ms, "quit_expunge_ms": quit_ms, "left_after_expunge": left}
    finally:
        srv.stop()


def measure(binary: str, work: str, store: str, tag: str, n: int, rounds: int, cold=None) -> dict:
    srv = Server(binary, work, store, tag)
    try:
        out = {}
        if cold is not None:  # the first login on a Maildir without a uidlist
            cold()
            c, out["cold_login_ms"] = login(srv.port, "big")
            c.cmd("QUIT")
            c.close()
            srv.stop()
            srv = Server(binary, work, store, tag)
        c, _ = login(srv.port, "tiny")  # warms up the tenant, pools, allocator
        c.multi("UIDL")
        c.cmd("QUIT")
        c.close()
        runs = [session(srv, n, i == 0) for i in range(rounds)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("login_ms", "stat_ms", "uidl_ms", "list_ms")}
        out.update(med)
        out.update({
            "login_ms_range": [min(r["login_ms"] for r in runs), max(r["login_ms"] for r in runs)],
            "uidl_bytes": runs[0]["uidl_bytes"], "list_bytes": runs[0]["list_bytes"],
            "rss_before_mb": runs[0]["rss_before_kb"] / 1024,
            "held_bytes_per_message": runs[0]["held_kb"] * 1024 / n,
            "peak_rss_mb": max(max(r["login_peak_kb"], r["uidl_peak_kb"], r["list_peak_kb"]) for r in runs) / 1024,
            "uidl_peak_over_before_mb": max(r["uidl_peak_kb"] - r["rss_before_kb"] for r in runs) / 1024,
        })
        return out
    finally:
        srv.stop()


def report(results: dict) -> None:
    cols = [("login_ms", "login ms", 1), ("cold_login_ms", "1st login, no uidlist, ms", 1),
            ("stat_ms", "STAT ms", 2), ("uidl_ms", "UIDL ms", 1), ("list_ms", "LIST ms", 1),
            ("uidl_bytes", "UIDL bytes", 0), ("peak_rss_mb", "peak RSS MB", 1),
            ("held_bytes_per_message", "held B/message", 0),
            ("quit_expunge_ms", "QUIT after DELE of all, ms", 0)]
    for store, by_bin in results.items():
        print(f"\n{store}:")
        present = [c for c in cols if any(c[0] in r for r in by_bin.values())]
        print("| binary | " + " | ".join(h for _, h, _ in present) + " |")
        print("| --- |" + " ---: |" * len(present))
        for label, r in by_bin.items():
            cells = [("" if r.get(k) is None else f"{r[k]:,.{d}f}") for k, _, d in present]
            print(f"| {label} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench-bigbox", description=__doc__.split("\n\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    p.add_argument("--binary", action="append", metavar="LABEL=PATH",
                   help=f"a popgate to measure (repeatable); default {target}/release/popgate")
    p.add_argument("--stores", default="maildir,postgres,s3")
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--size", type=int, default=1_500, help="octets per message (about)")
    p.add_argument("--rounds", type=int, default=5, help="measured sessions per binary and store")
    p.add_argument("--pg-url", default=os.environ.get("POPGATE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test"))
    p.add_argument("--no-expunge", dest="expunge", action="store_false",
                   help="skip the DELE-everything-and-QUIT step (Maildir and PostgreSQL)")
    p.add_argument("--json", help="write every figure to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args(argv)
    binaries = dict(b.split("=", 1) for b in (a.binary or [f"popgate={target}/release/popgate"]))
    work = tempfile.mkdtemp(prefix="popgate-bigbox-")
    with open(os.path.join(work, "passwd"), "w") as f:
        f.write(f"big@{DOMAIN}:{{PLAIN}}{PASSWORD}\ntiny@{DOMAIN}:{{PLAIN}}{PASSWORD}\n")
    results: dict = {}
    n = a.messages
    try:
        for store in a.stores.split(","):
            t = time.monotonic()
            results[store] = {}
            if store == "maildir":
                md = os.path.join(work, "mail", DOMAIN, "big", "Maildir")
                make_maildir(md, n, a.size, uidlist=True)
                make_maildir(os.path.join(work, "mail", DOMAIN, "tiny", "Maildir"), 1, a.size, uidlist=True)
                with open(os.path.join(md, "dovecot-uidlist"), "rb") as f:
                    saved = f.read()
                conf = f'{{ kind = "maildir", path = "{work}/mail/%d/%n/Maildir" }}'

                def cold(md=md):
                    os.unlink(os.path.join(md, "dovecot-uidlist"))

                print(f"maildir: {n} files written in {time.monotonic() - t:.0f} s", flush=True)
                for label, path in binaries.items():
                    results[store][label] = measure(path, work, conf, f"{store}-{label}", n, a.rounds, cold)
                    with open(os.path.join(md, "dovecot-uidlist"), "wb") as f:
                        f.write(saved)  # the same uidlist for every binary
                if a.expunge:
                    for label, path in binaries.items():
                        shutil.rmtree(md)
                        make_maildir(md, n, a.size, uidlist=True)
                        results[store][label].update(expunge_all(path, work, conf, f"{store}-{label}", n))
            elif store == "postgres":
                url = a.pg_url.rsplit("?", 1)[0]
                conf = f'{{ kind = "postgres", url = "{url}", schema = "{SCHEMA}" }}'
                psql(url, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
                first = True
                for label, path in binaries.items():
                    if first:
                        Server(path, work, conf, "migrate").stop()
                        make_postgres(url, n, a.size)
                        print(f"postgres: {n} rows in {time.monotonic() - t:.0f} s", flush=True)
                        first = False
                    results[store][label] = measure(path, work, conf, f"{store}-{label}", n, a.rounds)
                if a.expunge:
                    for label, path in binaries.items():
                        make_postgres(url, n, a.size)
                        results[store][label].update(expunge_all(path, work, conf, f"{store}-{label}", n))
                psql(url, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            elif store == "s3":
                weed = Seaweed(os.path.join(work, "weed"))
                try:
                    make_s3(weed, n, a.size)
                    print(f"s3: {n} objects on SeaweedFS in {time.monotonic() - t:.0f} s", flush=True)
                    conf = (f'{{ kind = "s3", bucket = "mail", endpoint = "http://127.0.0.1:{weed.port}", '
                            'force_path_style = true, region = "us-east-1", access_key_id = "k", '
                            'secret_access_key = "s" }')
                    for label, path in binaries.items():
                        results[store][label] = measure(path, work, conf, f"{store}-{label}", n, a.rounds)
                finally:
                    weed.stop()
            else:
                raise SystemExit(f"--stores: unknown store {store!r} (maildir, postgres, s3)")
        report(results)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"messages": n, "size": a.size, "binaries": binaries, "results": results}, f, indent=1)
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0
