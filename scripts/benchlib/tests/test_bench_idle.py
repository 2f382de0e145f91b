"""scripts/bench-idle: its mailboxes and how it reads the kernel's figures."""

import os

from benchlib import idle


def test_idle_mail_is_one_mailbox_of_one_message_per_user(tmp_path):
    idle.make_mail(str(tmp_path), users=3)
    domain = tmp_path / "mail" / "bench.test"
    for user in ("u0001", "u0002", "u0003"):
        (name,) = os.listdir(domain / user / "Maildir" / "cur")
        size = (domain / user / "Maildir" / "cur" / name).stat().st_size
        assert f",S={size}," in name and name.endswith(":2,S")
        assert os.listdir(domain / user / "Maildir" / "new") == []
    passwd = (tmp_path / "passwd").read_text()
    assert "u0003@bench.test:{PLAIN}" in passwd and "u0004@" not in passwd


def test_kernel_figures_are_the_growth_in_bytes():
    before = {"slabs": {"TCP": (10, 2368), "filp": (100, 192)}, "sockstat": {"mem": 5}}
    after = {"slabs": {"TCP": (30, 2368), "filp": (140, 192), "TCPv6": (2, 2496)}, "sockstat": {"mem": 7}}
    d = idle.kernel_delta(before, after)
    assert d["TCP"] == 20 * 2368 and d["filp"] == 40 * 192 and d["TCPv6"] == 2 * 2496
    assert d["sockstat mem"] == 2 * os.sysconf("SC_PAGE_SIZE")
    # What this machine's kernel says parses.
    assert "TCP" in idle.slabs() and "inuse" in idle.sockstat()
