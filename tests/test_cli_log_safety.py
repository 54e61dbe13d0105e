"""Log safety does not depend on each call site (issue 16): once the CLI has set up
logging, every record from any logger, even one nobody registered a filter on, has its
secrets masked and its newlines and terminal escapes shown escaped, one record per line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SECRET = "LogSecret-Xy83Pq-Zr27Mw"
PIECE = 8

# run the CLI once (it sets up logging), then log as a third-party library would
CHILD = f"""
import logging, sys
from robust_collector import secrets
from robust_collector.cli import main

main(["health", "--db", "none.db"])  # any command: logging is set up before it runs
secrets.register_secret({SECRET!r})
log = logging.getLogger("somelib.unregistered.child")
assert log.filters == [] and not log.handlers  # nothing registered on it or its parents
log.warning("token=%s tail\\nFAKE 00:00:00 CRITICAL forged line \\x1b[2J\\x1b]0;title\\x07end",
            {SECRET!r}[2:14])
log.error("plain %s", "message")
"""


def test_a_record_from_an_unregistered_logger_is_masked_and_one_clean_line(tmp_path: Path):
    p = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "somelib.unregistered.child" in ln]
    assert len(lines) == 2, p.stderr
    first = lines[0]
    assert "token=*** tail FAKE 00:00:00 CRITICAL forged line" in first, first
    assert "\x1b" not in p.stderr and "\\x1b[2J" in first and "\x07" not in p.stderr
    assert not any(SECRET[i : i + PIECE] in p.stderr for i in range(len(SECRET) - PIECE + 1))
    assert "forged line" not in p.stderr.replace(first, "")  # no second line was forged
    assert lines[1].endswith("ERROR somelib.unregistered.child: plain message")
