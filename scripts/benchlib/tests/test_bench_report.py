"""The report: figures per scenario, means, ratios, and the command line."""

import argparse

import pytest

from benchlib import cli, report, runner

RUN = {
    "server": "popgate", "sessions_ok": 100, "server_cpu_s": 0.5, "sessions_per_s": 50.0,
    "login_p50_ms": 1.0, "login_p99_ms": 4.0, "errors": 0, "wall_s": 2.0, "client_cpu_s": 0.2,
    "loadavg": 1.0, "message_octets": 10_000_000, "messages": 500, "messages_per_s": 250.0,
    "mb_per_s": 5.0, "retr_p50_ms": 2.0, "retr_p99_ms": 9.0, "server_context_switches": 1000,
}


def test_fmt():
    assert report.fmt(None) == "-"
    assert report.fmt(1234.5) == "1,234"
    assert report.fmt(3.14159) == "3.1"
    assert report.fmt(3.14159, 2) == "3.14"


def test_login_metrics_are_per_session():
    rows = {m: v for m, v, _ in report.metrics_for("a", RUN)}
    assert rows["sessions/s"] == 50.0
    assert rows["server CPU ms/session"] == pytest.approx(5.0)
    assert rows["errors"] == 0


def test_download_metrics_per_megabyte_and_message():
    rows = {m: v for m, v, _ in report.metrics_for("b", RUN)}
    assert rows["server CPU ms/MB"] == pytest.approx(50.0)
    assert rows["popgate: context switches per message"] == pytest.approx(2.0)
    dovecot = {m: v for m, v, _ in report.metrics_for("b", {**RUN, "server": "dovecot"})}
    assert dovecot["popgate: context switches per message"] is None


def test_table_gives_means_ratios_and_each_round():
    slow = {**RUN, "server": "dovecot", "sessions_per_s": 25.0}
    results = {"a": {"popgate": [RUN, {**RUN, "sessions_per_s": 70.0}], "dovecot": [slow, slow]}}
    specs = [{"key": "a", "title": "(a) login"}, {"key": "b", "title": "(b) not run"}]
    lines = report.table(results, specs).splitlines()
    row = next(line for line in lines if "| sessions/s |" in line)
    assert row == "| (a) login | sessions/s | 60.0 | 25.0 | 2.40 | higher (50.0 / 70.0 vs 25.0 / 25.0) |"
    assert not any("(b)" in line for line in lines)
    per_run = report.client_table(results, specs).splitlines()
    assert per_run[2] == "| a | popgate | 1 | 100 | 2.0 | 0.50 | 0.20 | 1.00 |"
    assert len(per_run) == 2 + 4


def test_loadgen_result_is_the_last_json_line():
    assert runner.loadgen_result('READY 5\n{"a": 1}\nnoise\n{"a": 2}\n') == {"a": 2}
    assert runner.loadgen_result("no figures\n") is None


def args(*argv):
    return cli.parser().parse_args(list(argv))


def test_the_command_line_keeps_its_defaults():
    a = args()
    assert (a.rounds, a.duration, a.users, a.messages, a.idle, a.hold) == (2, 10, 200, 50, 500, 3)
    assert (a.big_mb, a.big_sessions, a.login_concurrency, a.full_concurrency) == (50, 3, 32, 16)
    assert not (a.skip_build or a.keep or a.no_crypt or a.dovecot_default_pop3)


def test_scenarios_follow_the_options_and_the_order(tmp_path):
    a = args("--duration", "2", "--idle", "300", "--no-crypt")
    specs = runner.selected(runner.scenarios(a, str(tmp_path)), "")
    assert [s["key"] for s in specs] == ["c", "a", "a1", "b", "d"]
    login = next(s for s in specs if s["key"] == "a")["args"]
    assert login[login.index("--duration") + 1] == "2s"
    idle = next(s for s in specs if s["key"] == "d")["args"]
    assert idle[idle.index("--concurrency") + 1] == "300"
    assert (tmp_path / "big.users").read_text() == "big@bench.test\n"
    only = runner.selected(runner.scenarios(a, str(tmp_path)), "d,a")
    assert [s["key"] for s in only] == ["a", "d"]


def test_what_stops_a_run_is_said():
    assert "root" in cli.refusal(args(), 1000, "/bin/sh")
    assert "dovecot is not installed" in cli.refusal(args(), 0, "/nonexistent/dovecot")
    assert "--idle" in cli.refusal(args("--idle", "100"), 0, "/bin/sh")
    assert cli.refusal(args(), 0, "/bin/sh") is None


def test_release_binaries_come_from_cargo_target_dir(monkeypatch):
    monkeypatch.setenv("CARGO_TARGET_DIR", "/t")
    assert cli.release_dir() == "/t/release"
    monkeypatch.delenv("CARGO_TARGET_DIR")
    assert cli.release_dir() == f"{cli.REPO}/target/release"
    assert isinstance(cli.parser(), argparse.ArgumentParser)
