"""The drill passes on the default config and names the line that fails when a feature is off."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from robust_collector.config import load_config
from robust_collector.drill import run_drill

pytestmark = pytest.mark.integration


def test_drill_passes_on_the_default_config():
    report = run_drill(load_config(None))
    assert report.passed, report.text()
    assert [s.title for s in report.scenarios] == [
        "API fails temporarily",
        "API keeps failing",
        "Bad data received",
        "Database slow or failing",
        "One symbol fails",
    ]
    assert all(c.figure for s in report.scenarios for c in s.checks)
    assert "ALL TESTS PASSED - System is robust!" in report.text()


@pytest.mark.parametrize(
    ("override", "scenario", "line"),
    [
        ({"circuit_breaker": {"enabled": False}}, 2, "Circuit breaker opens"),
        ({"retry": {"max_retries": 1}}, 1, "Retried after a temporary failure"),
        ({"validation": {"enabled": False}}, 3, "Invalid data rejected with its rule"),
        ({"backup": {"enabled": False}}, 4, "Batches written to backup files instead"),
    ],
)
def test_drill_fails_naming_the_line_when_a_feature_is_off(override, scenario, line):
    report = run_drill(load_config(None, overrides={"realtime_data": override}))
    assert not report.passed
    failed = {(s.number, c.text) for s in report.scenarios for c in s.checks if not c.passed}
    assert (scenario, line) in failed or any(
        n == scenario and t.startswith(line) for n, t in failed
    )
    assert f"Test {scenario}: {line}" in report.text()


def test_drill_cli_json_and_exit_code(tmp_path):
    (tmp_path / "c.yaml").write_text("realtime_data: {validation: {enabled: false}}\n")
    p = subprocess.run(
        [sys.executable, "-m", "robust_collector.cli", "drill", "--config", "c.yaml", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1
    data = json.loads(p.stdout)
    assert data["passed"] is False
    s3 = data["scenarios"][2]
    assert s3["title"] == "Bad data received" and s3["passed"] is False
    assert data["scenarios"][0]["passed"] is True


def test_the_drill_never_writes_to_the_users_postgres_server(tmp_path):
    from robust_collector.config import config_from_dict
    from robust_collector.drill import drill_config

    user = config_from_dict(
        {"storage": {"backend": "postgresql", "url": "postgresql://u:pw@db-host/market"}}
    )
    drilled = drill_config(user, tmp_path, 0.01)
    assert drilled.storage.backend == "sqlite" and drilled.storage.url == ""
    assert drilled.storage.target() == str(tmp_path / "drill.db")
