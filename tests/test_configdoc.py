"""The configuration reference in docs/ is the schema's own rendering."""

from __future__ import annotations

from pathlib import Path

from robust_collector.configdoc import documented_keys, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_reference_matches_the_schema():
    assert DOC.read_text() == render(), (
        "regenerate: python -m robust_collector.configdoc > docs/configuration.md"
    )


def test_every_key_is_in_the_reference():
    text = DOC.read_text()
    missing = [k for k in documented_keys() if f"`{k}`" not in text]
    assert missing == []
    for seed_key in (
        "realtime_data.retry.max_retries",
        "realtime_data.backup.backup_path",
        "realtime_data.circuit_breaker.timeout_seconds",
    ):
        assert f"`{seed_key}`" in text
