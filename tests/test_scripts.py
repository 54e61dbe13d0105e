"""The seed's two scripts still work as the seed shows them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_system_health_script_is_the_health_command(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "system_health.py"),
            "--db",
            str(tmp_path / "none.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 3 and "no database" in p.stdout


def test_test_robustness_script_runs_the_drill(tmp_path):
    (tmp_path / "c.yaml").write_text("realtime_data: {retry: {max_retries: 1}}\n")
    p = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "test_robustness.py"), "--config", "c.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1
    assert (
        "Test 1: API fails temporarily" in p.stdout
        and "Retried after a temporary failure" in p.stdout
    )
