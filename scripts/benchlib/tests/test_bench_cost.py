"""scripts/bench-cost's mail: what the cost figures are measured on."""

import os

from benchlib import cost


def test_cost_mail_has_ten_small_messages_per_user_and_two_large_ones(tmp_path):
    sizes = cost.make_mail(str(tmp_path), users=3, big_mb=1)
    domain = tmp_path / "mail" / "bench.test"
    for user in ("u0001", "u0002", "u0003"):
        files = os.listdir(domain / user / "Maildir" / "cur")
        assert len(files) == 10
        assert all(3_500 <= (domain / user / "Maildir" / "cur" / f).stat().st_size < 6_500 for f in files)
    (lf,) = os.listdir(domain / "big" / "Maildir" / "cur")
    (crlf,) = os.listdir(domain / "crlf" / "Maildir" / "cur")
    lf_data = (domain / "big" / "Maildir" / "cur" / lf).read_bytes()
    crlf_data = (domain / "crlf" / "Maildir" / "cur" / crlf).read_bytes()
    assert b"\r" not in lf_data and crlf_data == lf_data.replace(b"\n", b"\r\n")
    # The names carry the sizes RETR sends: the same for both.
    assert f"W={len(crlf_data)}:" in lf and f"W={len(crlf_data)}:" in crlf
    assert sizes["lf_mb"] >= 1.0
    passwd = (tmp_path / "passwd").read_text()
    assert "u0003@bench.test:{PLAIN}" in passwd and "crlf@bench.test:{PLAIN}" in passwd


def test_strace_and_dhat_summaries_are_read():
    strace = ("syscall              calls\n---------------- ---------\nread                     7\n"
              "openat2                 12\n---------------- ---------\ntotal                  144\n")
    assert cost.parse_strace(strace) == {"read": 7.0, "openat2": 12.0, "total": 144.0}
    dhat = "==1== Total:     1,234,567 bytes in 8,901 blocks\n==1== At t-gmax: 5 bytes in 1 blocks\n"
    assert cost.parse_dhat(dhat) == {"heap bytes": 1234567.0, "allocations": 8901.0}


def test_per_unit_subtracts_the_baseline_and_names_the_big_system_calls():
    run = {"total": 1100.0, "read": 600.0, "openat": 300.0, "close": 200.0}
    base = {"total": 100.0, "read": 100.0, "close": 0.0}
    line = cost.per_unit(run, base, 10, "strace")
    assert line == "100.0 system calls (read 50.0, openat 30.0, close 20.0)"
    assert cost.per_unit({"CPU ms": 30.0}, {"CPU ms": 10.0}, 4, "cpu") == "5.00 CPU ms"
