"""scripts/chaos can fail: a run that breaks a rule on purpose is caught by
its audit, with the figure of that rule nonzero. (The clean short run is a
step of scripts/test of its own.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import POPGATE_BIN, REPO


def chaos(tmp_path, *args: str) -> tuple[int, dict, str]:
    out = tmp_path / "figures.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "chaos"), "--json", str(out), "--bin", POPGATE_BIN, *args],
        capture_output=True, timeout=300, env=dict(os.environ),
    )
    text = r.stdout.decode() + r.stderr.decode()
    assert out.exists(), f"no figures written:\n{text}"
    return r.returncode, json.loads(out.read_text()), text


def show(capsys, text: str) -> None:
    with capsys.disabled():
        print("\n" + text.rstrip())


def test_a_message_removed_behind_popgates_back_is_caught_as_lost(tmp_path, capsys):
    rc, figures, text = chaos(tmp_path, "--seconds", "12", "--rounds", "0", "--sabotage", "remove-file")
    show(capsys, text)
    assert rc == 1, text
    assert figures["faults"].get("sabotage-remove-file", 0) >= 1, text
    assert figures["lost"] >= 1, text
    assert "chaos: FAILED: lost" in text, text
    assert figures["wrong_mailbox"] == 0 and figures["corrupted"] == 0, text


def test_replicas_on_in_memory_locks_are_caught_holding_one_mailbox_twice(tmp_path, capsys):
    rc, figures, text = chaos(tmp_path, "--seconds", "12", "--rounds", "0", "--sabotage", "memory-locks")
    show(capsys, text)
    assert rc == 1, text
    assert figures["two_holders"] >= 1, text
    assert "two_holders = " in text, text
    assert figures["wrong_mailbox"] == 0 and figures["corrupted"] == 0, text
