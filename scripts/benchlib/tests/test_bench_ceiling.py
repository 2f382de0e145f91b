"""The ceiling (issue 18): its mail, its loads, and the table it prints."""

import os

from benchlib import ceiling, cli


def run(server, sessions_per_s=0.0, mb_per_s=0.0, octets=0, cpu=1.0, ok=100):
    return {"server": server, "sessions_ok": ok, "sessions_per_s": sessions_per_s, "mb_per_s": mb_per_s,
            "message_octets": octets, "server_cpu_s": cpu, "client_cpu_s": 0.5, "errors": 0}


def test_mail_has_small_mailboxes_and_one_big_message_per_worker(tmp_path):
    mail = ceiling.make_mail(str(tmp_path), users=3, big=2, big_mib=1)
    domain = tmp_path / "mail" / "bench.test"
    for user in ("s0001", "s0002", "s0003"):
        files = os.listdir(domain / user / "Maildir" / "cur")
        assert len(files) == 10
        sizes = [(domain / user / "Maildir" / "cur" / f).stat().st_size for f in files]
        assert all(3_500 <= s < 5_200 for s in sizes), sizes  # about 4 KiB
    for big in ("m1", "m2"):
        (name,) = os.listdir(domain / big / "Maildir" / "cur")
        data = (domain / big / "Maildir" / "cur" / name).read_bytes()
        assert ceiling.MIB <= len(data) < ceiling.MIB + 1000 and b"\r" not in data and b"\n." in data
        crlf = len(data) + data.count(b"\n")
        assert f",W={crlf}:" in name
    assert mail["small"] == str(domain / "s0001" / "Maildir") and mail["big"] == str(domain / "m1" / "Maildir")
    assert mail["passwd"].splitlines() == [f"{u}@bench.test:{{PLAIN}}bench-secret"
                                           for u in ("s0001", "s0002", "s0003", "m1", "m2")]


def test_loads_follow_the_options(tmp_path):
    a = cli.parser().parse_args(["--duration", "3", "--ceiling-concurrency", "8", "--ceiling-users", "16"])
    cs, cr = ceiling.loads(a, str(tmp_path))
    assert cs["args"][cs["args"].index("--concurrency") + 1] == "8"
    assert cs["args"][cs["args"].index("--retr") + 1] == "10"
    assert cs["args"][cs["args"].index("--user-range") + 1] == "1-16"
    assert cr["args"][cr["args"].index("--duration") + 1] == "3s"
    assert (tmp_path / "ceiling-big.users").read_text() == "".join(f"m{i}@bench.test\n" for i in range(1, 5))
    assert "--ceiling-users" in cli.refusal(cli.parser().parse_args(["--ceiling-users", "10"]), 0, "/bin/sh")


def test_only_selects_the_ceiling_loads():
    assert ceiling.wanted("") == ["cs", "cr"]
    assert ceiling.wanted("a,cr") == ["cr"]
    assert ceiling.wanted("a,b") == []


def test_table_gives_ranges_and_the_ratio_of_the_medians():
    results = {
        "cs": {"popgate": [run("popgate", 2000.0, cpu=0.2), run("popgate", 2400.0, cpu=0.3)],
               "dovecot": [run("dovecot", 130.0), run("dovecot", 130.0)],
               "ceiling": [run("ceiling", 4000.0), run("ceiling", 4400.0)]},
        "cr": {"popgate": [run("popgate", mb_per_s=600.0, octets=10_000_000)],
               "dovecot": [run("dovecot", mb_per_s=450.0, octets=10_000_000)],
               "ceiling": [run("ceiling", mb_per_s=700.0, octets=10_000_000)]},
    }
    lines = ceiling.table(results).splitlines()
    assert lines[0] == "| figure | popgate | Dovecot | ceiling | popgate ÷ ceiling |"
    assert "| sessions/s | 2,000–2,400 | 130 | 4,000–4,400 | 0.52 |" in lines
    assert "| 5 MiB RETR, MB/s | 600 | 450 | 700 | 0.86 |" in lines
    # CPU: 0.2 s and 0.3 s for 100 sessions; 1 s for 10 MB.
    assert "| server CPU ms/session | 2.00–3.00 | 10.00 | 10.00 | 0.25 |" in lines
    assert "| server CPU ms/MB | 100 | 100 | 100 | 1.00 |" in lines
    assert not any("RETR" in line for line in ceiling.table({"cs": results["cs"]}).splitlines())
