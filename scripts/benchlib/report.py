"""The report: per-scenario metrics, the comparison table, the per-run table."""

from __future__ import annotations

import os
import statistics


def mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def fmt(v, digits=1):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def metrics_for(key: str, r: dict) -> list[tuple[str, float | None, str]]:
    """(metric, value, better) rows of one run."""
    ok = max(r["sessions_ok"], 1)
    cpu_ms = r["server_cpu_s"] * 1000 / ok
    rows = []
    if key in ("a", "a1", "a2"):
        rows += [("sessions/s", r["sessions_per_s"], "higher"),
                 ("login p50 ms", r["login_p50_ms"], "lower"),
                 ("login p99 ms", r["login_p99_ms"], "lower"),
                 ("server CPU ms/session", cpu_ms, "lower")]
    elif key == "b":
        mb = r["message_octets"] / 1e6
        rows += [("sessions/s", r["sessions_per_s"], "higher"),
                 ("messages/s", r["messages_per_s"], "higher"),
                 ("MB/s", r["mb_per_s"], "higher"),
                 ("login p99 ms", r["login_p99_ms"], "lower"),
                 ("RETR p50 ms", r["retr_p50_ms"], "lower"),
                 ("RETR p99 ms", r["retr_p99_ms"], "lower"),
                 ("server CPU ms/session", cpu_ms, "lower"),
                 ("server CPU ms/MB", r["server_cpu_s"] * 1000 / mb if mb else None, "lower"),
                 ("popgate: context switches per message",
                  r["server_context_switches"] / max(r["messages"], 1) if r["server"] == "popgate" else None,
                  "lower")]
    elif key == "c":
        mb = r["message_octets"] / 1e6
        rows += [("RETR MB/s", r["retr_mb_per_s"], "higher"),
                 ("peak RSS MB (popgate: process; Dovecot: pop3 process)", r["peak_rss_kb"] / 1024, "lower"),
                 ("popgate: peak RSS minus RSS before the run, MB",
                  (r["peak_rss_kb"] - r["rss_before_kb"]) / 1024 if r.get("rss_before_kb") is not None else None,
                  "lower"),
                 ("server CPU ms/MB", r["server_cpu_s"] * 1000 / mb if mb else None, "lower")]
    elif key == "d":
        held, before = r["mem_held"], r["mem_before"]
        n = max(r.get("held") or 0, 1)
        rows += [("sessions held", r.get("held"), "higher"),
                 ("RSS MB, all processes", held["rss_kb"] / 1024, "lower"),
                 ("PSS MB, all processes", held["pss_kb"] / 1024, "lower"),
                 ("PSS KB per extra session", (held["pss_kb"] - before["pss_kb"]) / n, "lower"),
                 ("processes", held["processes"], "lower"),
                 (f"login p99 ms ({n} opening at once, ramp 32)", r["login_p99_ms"], "lower"),
                 ("server CPU ms/session", cpu_ms, "lower")]
    rows.append(("errors", r["errors"], "lower"))
    return rows


def table(results: dict, specs: list[dict]) -> str:
    out = ["| scenario | metric | popgate | Dovecot | popgate/Dovecot | better |",
           "| --- | --- | ---: | ---: | ---: | --- |"]
    for spec in specs:
        key = spec["key"]
        if key not in results:
            continue
        pg_runs = [metrics_for(key, r) for r in results[key]["popgate"]]
        dc_runs = [metrics_for(key, r) for r in results[key]["dovecot"]]
        for i, (metric, _, better) in enumerate(pg_runs[0]):
            pv = mean([run[i][1] for run in pg_runs])
            dv = mean([run[i][1] for run in dc_runs])
            ratio = (pv / dv) if (pv is not None and dv) else None
            runs = lambda rs: " / ".join(fmt(run[i][1]) for run in rs)  # noqa: E731
            detail = f" ({runs(pg_runs)} vs {runs(dc_runs)})" if len(pg_runs) > 1 else ""
            out.append(f"| {spec['title']} | {metric} | {fmt(pv)} | {fmt(dv)} | "
                       f"{fmt(ratio, 2) if ratio is not None else '-'} | {better}{detail} |")
    return "\n".join(out)


def client_table(results: dict, specs: list[dict]) -> str:
    out = ["| scenario | server | run | sessions | wall s | server CPU s | loadgen CPU s | load avg |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for spec in specs:
        if spec["key"] not in results:
            continue
        for name in ("popgate", "dovecot"):
            for i, r in enumerate(results[spec["key"]][name]):
                out.append(f"| {spec['key']} | {name} | {i + 1} | {r['sessions_ok']} | {r['wall_s']:.1f} | "
                           f"{r['server_cpu_s']:.2f} | {r['client_cpu_s']:.2f} | {r['loadavg']:.2f} |")
    return "\n".join(out)


def log_complaints(work: str) -> list[str]:
    """Warning and error lines in both servers' logs (the shutdown at the end excepted)."""
    out = []
    with open(os.path.join(work, "popgate.log"), errors="replace") as f:
        out += [f"popgate: {line.strip()}" for line in f if " WARN " in line or " ERROR " in line]
    with open(os.path.join(work, "dovecot", "dovecot.log"), errors="replace") as f:
        out += [f"dovecot: {line.strip()}" for line in f
                if any(w in line for w in ("Warning:", "Error:", "Fatal:", "Panic:"))
                and "Killed with signal 15" not in line]
    return out
