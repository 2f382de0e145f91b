"""The S3 store end to end: popgate serving the acme tenant from a bucket on
a loopback S3 server (s3s-fs, started per test by scripts/s3-server), with
objects written by popgate's `deliver` and by others behind its back."""

from __future__ import annotations

import concurrent.futures
import hashlib
import signal
import time

import pytest

from popclient import crlf, status_size, wire_body
from s3client import ACCESS_KEY, SECRET_KEY, S3Client, S3Server

USER = "bob@acme.example"
PREFIX = "acme.example/bob/"


@pytest.fixture
def s3(tmp_path):
    srv = S3Server(tmp_path / "s3").start()
    srv.client.create_bucket()
    yield srv
    srv.stop()


@pytest.fixture
def s3_popgate(popgate, s3):
    """Factory: a popgate whose acme tenant is on the test's S3 server."""

    def make(start=True, env=None, **store):
        return popgate(tenants={"acme": {"store": s3.store(**store)}}, start=start, env=env)

    return make


def put_many(s3: S3Server, items: list[tuple[str, bytes]], threads: int = 8) -> None:
    def worker(chunk):
        client = S3Client(s3.port)
        try:
            for key, data in chunk:
                client.put(key, data)
        finally:
            client.close()

    chunks = [items[i::threads] for i in range(threads)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, chunks))


def wait_unlocked(srv, user=USER):
    """Waits until the server noticed a closed session: a new login gets in."""
    deadline = time.monotonic() + 10
    while True:
        with srv.connect() as c:
            r = c.login(user, srv.password(user))
            if r.startswith(b"+OK"):
                c.cmd("QUIT")
                return
            assert r.startswith(b"-ERR [IN-USE]"), r
        assert time.monotonic() < deadline, "the mailbox stayed locked after the client left"
        time.sleep(0.05)


def message_keys(s3: S3Server, prefix: str = PREFIX) -> list[str]:
    return sorted(k for k in s3.client.keys(prefix) if "/.popgate/" not in k)


# --------------------------------------------------------------------------


def test_foreign_objects_lf_and_crlf_are_served(s3, s3_popgate):
    lf = b"From: mta@example.org\nSubject: lf only\n\nline one\n.leading dot\nlast\n"
    cr = b"From: mta@example.org\r\nSubject: crlf\r\n\r\nHello\r\n"
    odd = b"Subject: odd key\n\nno final newline"
    s3.client.put(PREFIX + "0001-lf", lf)
    s3.client.put(PREFIX + "0002-crlf", cr)
    s3.client.put(PREFIX + "0003 with space", odd)
    srv = s3_popgate()
    with srv.session(USER) as c:
        assert c.cmd("STAT") == b"+OK 3 %d" % sum(len(crlf(m)) for m in (lf, cr, odd))
        assert c.listing("LIST") == [b"1 %d" % len(crlf(lf)), b"2 %d" % len(cr), b"3 %d" % len(crlf(odd))]
        uidls = c.listing("UIDL")
        assert uidls[:2] == [b"1 0001-lf", b"2 0002-crlf"]
        # A key that is no valid unique-id gets a hash-based one.
        third = uidls[2].split(b" ", 1)[1]
        assert third.startswith(b"~") and len(third) == 65
        for n, m in enumerate((lf, cr, odd), 1):
            status, body = c.retr(n)
            assert status_size(status) == len(crlf(m))
            assert body == wire_body(m)
        assert c.cmd("TOP 1 1").startswith(b"+OK")
        assert c.body() == b"From: mta@example.org\r\nSubject: lf only\r\n\r\nline one\r\n"
        assert c.cmd("QUIT").startswith(b"+OK")
    # Serving changed nothing but popgate's size index.
    assert message_keys(s3) == [PREFIX + "0001-lf", PREFIX + "0002-crlf", PREFIX + "0003 with space"]
    assert s3.client.head(PREFIX + ".popgate/sizes.json") is not None
    # The same UIDLs next time.
    with srv.session(USER) as c:
        assert c.listing("UIDL") == uidls


def test_deliver_stores_the_size_as_metadata(s3, s3_popgate):
    srv = s3_popgate()
    msg = b"From: a@example.org\nSubject: delivered\n\nbody\n..dots\n"
    uidl = srv.deliver(USER, msg)
    [key] = message_keys(s3)
    assert key == PREFIX + uidl
    assert s3.client.get(key) == msg, "stored as given"
    assert s3.client.head(key)["x-amz-meta-pop3-size"] == str(len(crlf(msg)))
    with srv.session(USER) as c:
        assert c.listing("UIDL") == [b"1 " + uidl.encode()]
        status, body = c.retr(1)
        assert status_size(status) == len(crlf(msg)) and body == crlf(msg)


def test_credentials_from_the_aws_environment(s3, popgate):
    """Without keys in the configuration, the standard AWS chain finds them
    (here in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)."""
    store = s3.store()
    del store["access_key_id"], store["secret_access_key"]
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    srv = popgate(tenants={"acme": {"store": store}}, env=env)
    uidl = srv.deliver(USER, b"Subject: chain\n\nhi\n")
    with srv.session(USER) as c:
        assert c.listing("UIDL") == [b"1 " + uidl.encode()]
        assert c.retr(1)[1] == b"Subject: chain\r\n\r\nhi\r\n"
    # Wrong keys from the environment: refused by S3, a permanent failure.
    bad = popgate(tenants={"acme": {"store": store}}, env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"})
    with bad.connect() as c:
        assert c.login(USER, bad.password(USER)).startswith(b"-ERR [SYS/PERM]")


def test_2500_objects_over_several_list_pages(s3, s3_popgate):
    msgs = [(PREFIX + f"m{i:05d}", b"Subject: %d\n\nbody %d\n" % (i, i)) for i in range(2500)]
    put_many(s3, msgs)
    srv = s3_popgate()  # default page size: 1000 keys, so 3 pages
    timings = []
    for _ in range(2):
        c = srv.connect(timeout=300)  # the first login sizes 2,500 objects
        started = time.monotonic()
        c.login_ok(USER, srv.password(USER))
        timings.append(time.monotonic() - started)
        total = sum(len(crlf(m)) for _, m in msgs)
        assert c.cmd("STAT") == b"+OK 2500 %d" % total
        uidls = [u.split(b" ")[1].decode() for u in c.listing("UIDL")]
        # Written in parallel: POP3 order is S3's modification time, then key.
        assert sorted(uidls) == [k[len(PREFIX):] for k, _ in msgs]
        n = uidls.index("m02499") + 1
        assert c.retr(n)[1] == crlf(msgs[-1][1])
        assert c.cmd("QUIT").startswith(b"+OK")
        c.close()
    # Not an assertion (timed checks do not belong in tests): for the record.
    print(f"\nlogin with 2,500 foreign objects: cold {timings[0]:.2f}s, warm {timings[1]:.2f}s")
    with srv.session(USER) as c:
        for n in range(1, 1201):
            c.send(f"DELE {n}\r\n")
        for n in range(1, 1201):
            assert c.line().startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
    assert message_keys(s3) == sorted(PREFIX + u for u in uidls[1200:])


def big_message(size: int) -> bytes:
    line = b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
    body = bytearray(b"From: big@example.org\nSubject: 50 MB\n\n")
    n = 0
    while len(body) < size:
        body += b".dotted\n" if n % 1000 == 0 else line
        n += 1
    return bytes(body)


def read_body_hashing(c, sha):
    got = 0
    while True:
        line = c.line()
        if line == b".":
            return got
        if line.startswith(b"."):
            line = line[1:]
        sha.update(line + b"\r\n")
        got += len(line) + 2


def test_50mb_object_streams_in_flat_memory(s3, s3_popgate):
    msg = big_message(50 * 1024 * 1024)
    wire = crlf(msg)
    digest = hashlib.sha256(wire).hexdigest()
    s3.client.put(PREFIX + "big", msg)
    srv = s3_popgate()
    hwm_before = srv.memory_kb("VmHWM")
    with srv.session(USER) as c:  # the login sizes the object by streaming it
        login_mb = (srv.memory_kb("VmHWM") - hwm_before) / 1024
        assert status_size(c.cmd("RETR 1")) == len(wire)
        sha = hashlib.sha256()
        assert read_body_hashing(c, sha) == len(wire)
        assert sha.hexdigest() == digest
        assert c.cmd("TOP 1 2").startswith(b"+OK")  # reads only the head
        assert c.multi()[-3:] == [b"", b"..dotted", b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
        assert c.cmd("QUIT").startswith(b"+OK")
    growth_mb = (srv.memory_kb("VmHWM") - hwm_before) / 1024
    print(f"\n50 MB object: peak RSS growth {login_mb:.1f} MB at login, {growth_mb:.1f} MB after RETR"
          f" (peak {srv.memory_kb('VmHWM') / 1024:.1f} MB)")
    assert growth_mb < 20, f"server peak RSS grew by {growth_mb:.1f} MB for a 50 MB object"


def test_a_slow_reader_is_not_an_s3_timeout(s3, s3_popgate):
    """The store's read_timeout counts time spent waiting for S3, not time
    the POP3 client takes to read."""
    msg = big_message(8 * 1024 * 1024)
    s3.client.put(PREFIX + "big", msg)
    srv = s3_popgate(read_timeout="1s", request_timeout="2s")
    with srv.session(USER) as c:
        assert status_size(c.cmd("RETR 1")) == len(crlf(msg))
        for _ in range(1000):
            c.line()
        time.sleep(3)
        sha = hashlib.sha256()
        rest = read_body_hashing(c, sha)
        assert rest > 7 * 1024 * 1024
        assert c.cmd("NOOP") == b"+OK"


def test_dele_and_quit_removes_the_objects(s3, s3_popgate):
    srv = s3_popgate()
    uidls = [srv.deliver(USER, b"Subject: %d\n\nbody %d\n" % (i, i)) for i in range(4)]
    with srv.session(USER) as c:
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("DELE 3").startswith(b"+OK")
        assert c.cmd("QUIT") == b"+OK Logging out, 2 messages deleted."
    assert message_keys(s3) == [PREFIX + uidls[1], PREFIX + uidls[3]]
    with srv.session(USER) as c:
        assert c.listing("UIDL") == [b"1 " + uidls[1].encode(), b"2 " + uidls[3].encode()]


def test_dele_without_quit_removes_nothing(s3, s3_popgate):
    srv = s3_popgate()
    for i in range(3):
        srv.deliver(USER, b"Subject: %d\n\n" % i)
    before = message_keys(s3)
    c = srv.session(USER)
    for n in (1, 2, 3):
        assert c.cmd(f"DELE {n}").startswith(b"+OK")
    c.close()  # gone without QUIT
    wait_unlocked(srv)
    assert message_keys(s3) == before


def test_s3_stopped_mid_session_is_sys_temp_and_loses_nothing(s3, s3_popgate):
    srv = s3_popgate(connect_timeout="1s", request_timeout="3s", max_attempts=2)
    for i in range(3):
        srv.deliver(USER, b"Subject: %d\n\nbody %d\n" % (i, i))
    before = message_keys(s3)
    with srv.session(USER) as c:
        s3.stop()
        assert c.cmd("STAT").startswith(b"+OK 3 "), "the snapshot needs no S3"
        assert c.cmd("RETR 1").startswith(b"-ERR [SYS/TEMP]")
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("DELE 2").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"-ERR [SYS/TEMP]")
    with srv.connect() as c:
        assert c.login(USER, srv.password(USER)).startswith(b"-ERR [SYS/TEMP]")
    s3.start()
    assert message_keys(s3) == before, "nothing was lost"
    with srv.session(USER) as c:
        assert c.cmd("STAT").startswith(b"+OK 3 ")
        assert c.retr(1)[1] == b"Subject: 0\r\n\r\nbody 0\r\n"
        assert c.cmd("QUIT").startswith(b"+OK")


def test_s3_stalling_mid_retr_ends_the_response_unterminated(s3, s3_popgate):
    """An S3 that stops sending mid-message: after read_timeout popgate
    closes the connection without the terminating dot (the +OK is out, so
    it cannot turn into -ERR), and deletes nothing."""
    msg = big_message(16 * 1024 * 1024)
    s3.client.put(PREFIX + "big", msg)
    srv = s3_popgate(read_timeout="1s")
    c = srv.session(USER)
    assert c.cmd("RETR 1").startswith(b"+OK")
    c.line()
    s3.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(EOFError):
            while c.line() != b".":
                pass
        assert time.monotonic() - started < 30
    finally:
        s3.proc.send_signal(signal.SIGCONT)
    c.close()
    wait_unlocked(srv)
    assert message_keys(s3) == [PREFIX + "big"]
    assert "store read failed mid-message" in srv.log()


def test_check_config_names_the_s3_key(s3, s3_popgate):
    srv = s3_popgate(start=False)
    r = srv.check_config()
    assert r.returncode == 0, r.stderr.decode()
    cases = [
        ({"prefix": "%d/%n"}, "tenants[0].store.prefix"),
        ({"prefix": "%d/"}, "tenants[0].store.prefix"),
        ({"endpoint": "127.0.0.1:9000"}, "tenants[0].store.endpoint"),
        ({"secret_access_key": None}, "tenants[0].store.secret_access_key"),
        ({"max_attempts": 0}, "tenants[0].store.max_attempts"),
        ({"read_timeout": "soon"}, "tenants[0].store: read_timeout"),
        ({"bucket_name": "x"}, "bucket_name"),
    ]
    for change, key in cases:
        store = s3.store()
        for k, v in change.items():
            if v is None:
                store.pop(k)
            else:
                store[k] = v
        srv.tenants[0]["store"] = store
        srv.write_config()
        r = srv.check_config()
        assert r.returncode == 2, (change, r.stdout, r.stderr)
        assert key in r.stderr.decode(), (change, r.stderr.decode())
