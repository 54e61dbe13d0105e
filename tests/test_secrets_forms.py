"""Connection-string password forms that libpq accepts and a plain match misses (issue 16).

libpq percent-decodes the names of URL query parameters as well as their values, so
``?%70assword=PW`` is the password: it must be masked wherever ``password=`` is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from robust_collector import secrets
from robust_collector.storage.postgres import redact_url

PW = "EncKeyPw-Tq73Vz"  # recognisable; any 8 characters of it count as a leak
ENCODED_FORMS = {
    f"postgresql://u@h/db?%70assword={PW}": "postgresql://u@h/db?%70assword=***",
    f"postgresql://u@h/db?sslmode=require&pass%77ord={PW}&x=1": (
        "postgresql://u@h/db?sslmode=require&pass%77ord=***&x=1"
    ),
    f"postgresql://u@h/db?%70%61%73%73%77%6F%72%64={PW}": "postgresql://u@h/db?%70%61%73%73%77%6F%72%64=***",
    f"postgres://u@h/db?%73sl%70assword={PW}": "postgres://u@h/db?%73sl%70assword=***",
}


def leaked(text: str) -> list[str]:
    return [PW[i : i + 8] for i in range(len(PW) - 7) if PW[i : i + 8] in text]


def test_libpq_really_reads_a_percent_encoded_name_as_the_password() -> None:
    conninfo = pytest.importorskip("psycopg.conninfo")
    parsed = conninfo.conninfo_to_dict(f"postgresql://u@h/db?%70assword={PW}")
    assert parsed["password"] == PW


@pytest.mark.parametrize("url", list(ENCODED_FORMS))
def test_a_percent_encoded_password_name_is_masked(url: str) -> None:
    assert secrets.mask_credentials(url) == ENCODED_FORMS[url]
    assert secrets.mask_url(url) == ENCODED_FORMS[url]
    assert redact_url(url) == ENCODED_FORMS[url]  # what run, health and runs.config show
    assert PW in secrets.url_passwords(url)
    assert (
        secrets.redact(f"cannot open {url} (refused)")
        == f"cannot open {ENCODED_FORMS[url]} (refused)"
    )


def test_other_percent_encoded_query_names_are_left_alone() -> None:
    url = "postgresql://u@h/db?%73slmode=require&application_name=a%20b&q=100%25"
    assert secrets.mask_url(url) == url and secrets.url_passwords(url) == []


@pytest.mark.integration
def test_run_masks_a_percent_encoded_password_on_screen_and_in_runs_config(
    tmp_path: Path, pg_url: str
) -> None:
    import psycopg

    url = f"{pg_url}{'&' if '?' in pg_url else '?'}%70assword={PW}"
    (tmp_path / "c.yaml").write_text(
        "symbols: [SPY]\nrealtime_data: {collect_interval_seconds: 0.05}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "ROBUST_COLLECTOR"))}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "robust_collector.cli",
            "run",
            "--config",
            "c.yaml",
            *("--db", url, "--duration", "0.3"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    first = p.stdout.splitlines()[0]
    assert "%70assword=***" in first, first
    assert leaked(p.stdout + p.stderr) == []
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute("SELECT config FROM runs").fetchall()
    assert stored and "%70assword=***" in str(stored)
    assert leaked(str(stored)) == []
