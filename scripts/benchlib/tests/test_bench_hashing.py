"""scripts/bench-hashing's pieces that need no server: the configuration
it runs popgate with, and the figures it reports."""

import argparse
import tomllib

from benchlib import hashing


def args(*flags: str, **kw) -> argparse.Namespace:
    return hashing.parser().parse_args([*flags, *(f"--{k.replace('_', '-')}={v}" for k, v in kw.items())])


def test_config_gives_each_scheme_a_tenant_that_may_take_every_slot():
    conf = tomllib.loads(hashing.config(args(nice=3), "/w", 4242, 4343, 2))
    assert conf["listeners"][0]["address"] == "127.0.0.1:4242"
    assert conf["metrics"]["address"] == "127.0.0.1:4343"
    assert conf["server"]["password_hashing"] == {"slots": 2, "tenant_slots": 2, "nice": 3}
    by_domain = {t["domains"][0]: t for t in conf["tenants"]}
    assert set(by_domain) == {"argon2id.test", "blf-crypt.test", "sha512-crypt.test", "ssha512.test",
                              "plain.test", "probe.test"}
    assert by_domain["argon2id.test"]["store"]["path"] == "/w/mail/argon2id.test/%n/Maildir"
    assert len({t["name"] for t in conf["tenants"]}) == 6
    # Without --nice, popgate's default.
    assert "nice" not in tomllib.loads(hashing.config(args(), "/w", 1, 2, 4))["server"]["password_hashing"]


def test_percentiles_and_report():
    p = hashing.percentiles([0.001 * i for i in range(1, 101)])
    assert p["n"] == 100 and round(p["p50_ms"], 1) == 50.5 and round(p["p99_ms"]) == 99 and round(p["max_ms"]) == 100
    assert hashing.percentiles([]) == {"n": 0}
    a = args("--no-dovecot")
    rates = {"PLAIN": {"popgate": {"sessions_per_s": 1234.5, "errors": 0, "logins_per_cpu_s": 2000.0}}}
    lat = {"popgate": {"quiet": p, "flood": p, "flood_logins_per_s": 13.0, "busy": [2.0, 2.0],
                       "rss_before_kb": 10240, "peak_rss_kb": 10240 + 130 * 1024}}
    text = hashing.report(a, rates, lat, 2)
    assert "| PLAIN | 1,234.5 | 2,000.0 |" in text
    assert "| popgate | 50.50 | 99.00 | 100.00 | 50.50 | 99.00 | 100.00 | 100/100 | 13.0 |" in text
    assert "+130.0 MiB; bound 2 slots x 64 MiB = 128 MiB" in text
