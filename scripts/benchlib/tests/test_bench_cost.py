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
