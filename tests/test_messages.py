"""Message shapes: LF-only, no final newline, odd line endings, and a
50 MB message that must stream without the server holding it in memory."""

import hashlib
import os
import random
import subprocess
import time

import pytest

from conftest import POPGATE_BIN, clean_env

from popclient import Pop3, crlf, status_size, top_body, wire_body

USER = "bob@acme.example"

SHAPES = {
    "crlf": b"Subject: a\r\n\r\nline\r\n",
    "lf_only": b"Subject: b\n\nline 1\n.line 2\n\nline 4\n",
    "no_final_newline_crlf": b"Subject: c\r\n\r\nlast line has no end",
    "no_final_newline_lf": b"Subject: d\n\nlast line has no end",
    "mixed": b"Subject: e\r\nX: y\n\r\nl1\nl2\r\nl3\n",
    "lone_cr": b"Subject: f\n\nbefore\rafter\n",
    "ends_in_cr": b"Subject: g\n\nends in CR\r",
    "dots": b".\n..\n...\n. \n",
    "header_only": b"Subject: h\n",
    "empty": b"",
    "blank_lines": b"\n\n\n",
    "nul_and_8bit": b"Subject: i\n\n\x00\xff\xfe caf\xc3\xa9\n",
}


@pytest.mark.parametrize("how", ["drop", "drop_with_sizes", "deliver"])
def test_message_shapes(server, how):
    bases = []
    for msg in SHAPES.values():
        if how == "deliver":
            bases.append(server.deliver_file(USER, msg)[1].name.split(":")[0])
        else:
            bases.append(server.drop(USER, msg, sizes=(how == "drop_with_sizes")))
    with server.session(USER) as c:
        listed = [int(x.split()[1]) for x in c.listing("LIST")]
        assert len(listed) == len(SHAPES)
        for n, (shape, msg) in enumerate(SHAPES.items(), 1):
            stored = server.message_path(USER, bases[n - 1]).read_bytes()
            if how != "deliver":
                assert stored == msg, shape
            assert listed[n - 1] == len(crlf(stored)), shape
            status = c.cmd(f"RETR {n}")
            assert status_size(status) == len(crlf(stored)), shape
            assert c.body() == wire_body(stored), shape
            for k in (0, 1):
                assert c.cmd(f"TOP {n} {k}").startswith(b"+OK"), shape
                assert c.body() == top_body(stored, k), (shape, k)


def test_line_endings_across_read_chunks(server):
    """A 3 MB message whose CR, LF, CRLF, lone CRs and leading dots fall on
    every offset of the server's read chunks."""
    rng = random.Random(1939)
    parts = [b"Subject: chunks\r\n\r\n"]
    size = 0
    while size < 3 * 1024 * 1024:
        line = (b"." if rng.random() < 0.2 else b"") + b"y" * rng.randrange(0, 300)
        if rng.random() < 0.05:
            line += b"\r" + b"z" * rng.randrange(0, 3)  # a lone CR inside the line
        line += rng.choice([b"\r\n", b"\n"])
        parts.append(line)
        size += len(line)
    msg = b"".join(parts)
    server.drop(USER, msg)
    with server.session(USER) as c:
        assert c.cmd("LIST 1") == b"+OK 1 %d" % len(crlf(msg))
        status, body = c.retr(1)
        assert status_size(status) == len(crlf(msg))
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(wire_body(msg)).hexdigest()
        assert c.cmd("TOP 1 5000").startswith(b"+OK")
        assert c.body() == top_body(msg, 5000)


def big_message(path, size):
    """Writes an LF-only message of about `size` bytes; returns (the POP3
    size, SHA-256 of the CRLF-normalised message). Lines vary in length and
    some start with '.', so normalising and stuffing both matter."""
    sha = hashlib.sha256()
    pop3_size = 0
    header = b"From: big@example.org\nSubject: a big one\n\n"
    lines = [b"%05d " % i + b"x" * (i * 37 % 900) + b"\n" for i in range(1000)]
    for i in range(0, 1000, 7):
        lines[i] = b"." + lines[i]
    block = b"".join(lines)
    written = 0
    with open(path, "wb") as f:
        for chunk in [header] + [block] * (size // len(block) + 1):
            f.write(chunk)
            norm = crlf(chunk)
            sha.update(norm)
            pop3_size += len(norm)
            written += len(chunk)
    return pop3_size, sha.hexdigest()


def drop_big(srv, size=50 * 1024 * 1024):
    md = srv.maildir("big@acme.example")
    for sub in ("tmp", "new", "cur"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    name = f"{int(time.time())}.M1P1.big"
    pop3_size, digest = big_message(md / "tmp" / name, size)
    os.rename(md / "tmp" / name, md / "new" / name)
    return pop3_size, digest


def read_body_hashing(c, sha, stop_after=None):
    """Reads a RETR body, unstuffing line by line into `sha`. With
    `stop_after`, returns after that many body bytes (the rest stays unread)."""
    got = 0
    while True:
        line = c.line()
        if line == b".":
            return got, True
        if line.startswith(b"."):
            line = line[1:]
        sha.update(line + b"\r\n")
        got += len(line) + 2
        if stop_after is not None and got >= stop_after:
            return got, False


def test_50mb_message_streams_in_flat_memory(popgate):
    srv = popgate()
    pop3_size, digest = drop_big(srv)
    hwm_before = srv.memory_kb("VmHWM")
    with srv.session("big@acme.example") as c:
        assert c.cmd("LIST").startswith(b"+OK")
        assert c.multi() == [b"1 %d" % pop3_size]
        assert c.cmd("STAT") == b"+OK 1 %d" % pop3_size
        assert status_size(c.cmd("RETR 1")) == pop3_size
        sha = hashlib.sha256()
        got, complete = read_body_hashing(c, sha)
        assert complete and got == pop3_size
        assert sha.hexdigest() == digest
        assert c.cmd("QUIT").startswith(b"+OK")
    growth_mb = (srv.memory_kb("VmHWM") - hwm_before) / 1024
    print(f"peak RSS growth: {growth_mb:.1f} MB (from {hwm_before / 1024:.1f} MB)")
    assert growth_mb < 20, f"server peak RSS grew by {growth_mb:.1f} MB for a 50 MB message"


def test_50mb_message_read_slowly_server_stays_responsive(popgate):
    srv = popgate()
    pop3_size, digest = drop_big(srv)
    srv.deliver("dave@acme.example", b"Subject: small\n\nsmall\n")
    hwm_before = srv.memory_kb("VmHWM")
    with srv.session("big@acme.example") as c:
        assert status_size(c.cmd("RETR 1")) == pop3_size
        sha = hashlib.sha256()
        got, complete = read_body_hashing(c, sha, stop_after=5 * 1024 * 1024)
        assert not complete
        # Stop reading for a while: the server must not buffer what the
        # client does not take, and must go on serving others.
        for _ in range(3):
            with srv.session("dave@acme.example") as other:
                assert other.cmd("STAT").startswith(b"+OK 1 ")
                assert other.retr(1)[1] == b"Subject: small\r\n\r\nsmall\r\n"
                assert other.cmd("QUIT").startswith(b"+OK")
            with Pop3(srv.port) as third:
                assert third.cmd("CAPA").startswith(b"+OK")
                third.multi()
            time.sleep(0.3)
        stalled_mb = (srv.memory_kb("VmHWM") - hwm_before) / 1024
        assert stalled_mb < 20, f"peak RSS grew by {stalled_mb:.1f} MB while the client did not read"
        rest, complete = read_body_hashing(c, sha)
        assert complete and got + rest == pop3_size
        assert sha.hexdigest() == digest
        assert c.cmd("NOOP") == b"+OK"
    growth_mb = (srv.memory_kb("VmHWM") - hwm_before) / 1024
    print(f"peak RSS growth: {growth_mb:.1f} MB (from {hwm_before / 1024:.1f} MB)")
    assert growth_mb < 20, f"server peak RSS grew by {growth_mb:.1f} MB for a 50 MB message"


def deliver_peak_rss(server, path):
    """`popgate deliver` with the file on stdin: (exit code, stdout, stderr, peak RSS in kB)."""
    with open(path, "rb") as stdin:
        proc = subprocess.Popen(
            [POPGATE_BIN, "deliver", "--config", str(server.config_path), "--user", "big@acme.example"],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
        )
        out, err = proc.stdout.read(), proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), out, err, usage.ru_maxrss


def test_50mb_delivery_streams_in_flat_memory(server, tmp_path):
    """`popgate deliver` of a 50 MB message: stored whole, read back whole,
    and the deliver process never holds the message in memory."""
    small = tmp_path / "small.eml"
    small.write_bytes(b"Subject: small\n\n")
    rc, _, err, baseline = deliver_peak_rss(server, small)
    assert rc == 0, err
    src = tmp_path / "big.eml"
    pop3_size, digest = big_message(src, 50 * 1024 * 1024)
    rc, out, err, peak = deliver_peak_rss(server, src)
    assert rc == 0, err
    growth_mb = (peak - baseline) / 1024
    print(f"deliver peak RSS: {baseline / 1024:.1f} MB for a tiny message, {peak / 1024:.1f} MB for 50 MB")
    assert growth_mb < 20, f"deliver peaked {growth_mb:.1f} MB higher for a 50 MB message"
    uidl = out.decode().strip()
    md = server.maildir("big@acme.example")
    stored = [md / f for f in server.files("big@acme.example")]
    assert len(stored) == 2
    big = [p for p in stored if p.stat().st_size == src.stat().st_size]
    assert len(big) == 1 and big[0].read_bytes() == src.read_bytes()
    with server.session("big@acme.example") as c:
        assert c.cmd("UIDL 2") == b"+OK 2 " + uidl.encode()
        assert c.cmd("LIST 2") == b"+OK 2 %d" % pop3_size
        assert status_size(c.cmd("RETR 2")) == pop3_size
        sha = hashlib.sha256()
        got, complete = read_body_hashing(c, sha)
        assert complete and got == pop3_size and sha.hexdigest() == digest
