"""The dataset: what both servers serve must look like a Dovecot delivery."""

import os
import random

from benchlib import dataset


def test_maildir_names_carry_the_stored_and_the_crlf_size(tmp_path):
    msgs = [b"Subject: a\n\nline\n.dot\n", b"Subject: b\n\nno final newline"]
    seq = [0]
    total = dataset.write_maildir(str(tmp_path / "Maildir"), msgs, seq)
    assert total == sum(map(len, msgs))
    assert seq == [2]
    assert sorted(os.listdir(tmp_path / "Maildir")) == ["cur", "new", "tmp"]
    names = sorted(os.listdir(tmp_path / "Maildir" / "cur"))
    assert len(names) == 2
    for name in names:
        data = (tmp_path / "Maildir" / "cur" / name).read_bytes()
        crlf = len(data) + data.count(b"\n")
        assert name.endswith(f",S={len(data)},W={crlf}:2,S"), name
        assert data in msgs


def test_messages_are_about_the_size_asked_and_reproducible():
    a = dataset.message(random.Random(1), "u0001", 3, 20_000)
    b = dataset.message(random.Random(1), "u0001", 3, 20_000)
    assert a == b
    assert 20_000 <= len(a) < 20_000 + 2_000
    assert a.startswith(b"Return-Path: <sender3@example.org>\n")
    assert b"\r" not in a, "LF line endings, as a delivery leaves them"


def test_some_lines_start_with_a_dot():
    pool = dataset.line_pool(random.Random(2449))
    dotted = [line for line in pool if line.startswith(b".")]
    assert 0.01 < len(dotted) / len(pool) < 0.05
    assert all(line.endswith(b"\n") for line in pool)


def test_make_dataset_lays_out_every_mailbox(tmp_path):
    info = dataset.make_dataset(str(tmp_path), users=2, per_user=3, idle_users=1, big_mb=1)
    mail = tmp_path / "mail"
    assert os.readlink(mail / "crypt.test") == "bench.test"
    counts = {u: len(os.listdir(mail / "bench.test" / u / "Maildir" / "cur"))
              for u in os.listdir(mail / "bench.test")}
    assert counts == {"u0001": 3, "u0002": 3, "u0003": 5, "big": 1}
    assert info["big_bytes"] > 1_000_000
    on_disk = sum(f.stat().st_size for f in (mail / "bench.test").rglob("*") if f.is_file())
    assert info["bytes"] == on_disk


def test_passwd_has_plain_and_crypt_users(tmp_path):
    path = tmp_path / "passwd"
    dataset.write_passwd(str(path), 2, "{SHA512-CRYPT}$6$x$y")
    assert path.read_text().splitlines() == [
        "u0001@bench.test:{PLAIN}bench-secret",
        "u0002@bench.test:{PLAIN}bench-secret",
        "big@bench.test:{PLAIN}bench-secret",
        "u0001@crypt.test:{SHA512-CRYPT}$6$x$y",
        "u0002@crypt.test:{SHA512-CRYPT}$6$x$y",
        "big@crypt.test:{SHA512-CRYPT}$6$x$y",
    ]
    assert path.stat().st_mode & 0o777 == 0o644
