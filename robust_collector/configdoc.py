"""The configuration reference, rendered from the schema so docs and code cannot drift.

``python -m robust_collector.configdoc > docs/configuration.md`` regenerates the
page; a test fails when the committed page differs from this rendering.
"""

from __future__ import annotations

import json
from typing import Any

from robust_collector.config import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_NODES,
    SOURCE_TYPES,
    SYMBOL_MAX,
    Config,
)
from robust_collector.schema import DEFAULT_MAX, KeyDoc, describe

INTRO = f"""# Configuration reference

The collector reads one YAML file (default `config/spy_qqq_config.yaml`) with
`yaml.safe_load` (a key given twice in one mapping is refused). Every key below is
optional: a missing key takes its default.
Unknown keys are refused with a "did you mean" suggestion; a bad value stops the
collector with one line that names the file, the key path, the value and what
was expected, e.g.

```text
config/spy_qqq_config.yaml: realtime_data.retry.max_retries: expected an integer >= 0 and <= 1000, got 'three'
```

Limits:

- Every number has an upper bound, shown below; a setting that declares none
  takes `<= {DEFAULT_MAX}`.
- Symbols: 1 to {SYMBOL_MAX} characters from `A-Z a-z 0-9 . - / ^ = _ :` and `+`, with at
  least one letter or digit and no empty, `.` or `..` part between slashes
  (`BRK.B`, `BF-B`, `^VIX`, `BTC/USD`, `ES=F` are accepted; blanks, control
  characters, `?`, `#` and `..` are not).
- The file must be a regular file of at most {MAX_CONFIG_BYTES:,} bytes, UTF-8, whose
  aliases expand to at most {MAX_CONFIG_NODES:,} values.
- `storage.database` must be a regular file (or not exist yet): `/dev/null` or a
  folder is refused. Credentials are never written in this file: see
  [security](security.md).

Top-level sections other than `symbols`, `source`, `storage` and
`realtime_data` are left alone (the file may configure other parts of a larger
project), unless their name looks like a typo of one of ours.

Relative paths (`storage.database`, `realtime_data.backup.backup_path`) are
resolved against the current directory, or against `base_dir` when given to
`load_config` / `Collector.from_config`.

This page is generated from the schema (`python -m robust_collector.configdoc`);
`tests/test_configdoc.py` fails when the two differ.
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict, tuple)) or value == "":
        return json.dumps(value)
    return str(value)


def _table(keys: list[KeyDoc]) -> list[str]:
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for k in keys:
        default = "" if k.type == "mapping" else f"`{_fmt(k.default)}`"
        lines.append(f"| `{k.path}` | {k.type} | {default} | {k.doc} |")
    return lines


def render() -> str:
    """The whole reference page as markdown."""
    out = [INTRO]
    all_keys = [k for k in describe(Config) if not k.path.startswith("source")]
    sections = ("symbols", "storage", "realtime_data")
    for section in sections:
        keys = [k for k in all_keys if k.path == section or k.path.startswith(section + ".")]
        out.append(f"## `{section}`\n")
        out.extend(_table(keys))
        out.append("")
    for kind, cls in SOURCE_TYPES.items():
        out.append(f"## `source` (type: {kind})\n")
        out.append((cls.__doc__ or "").strip() + "\n")
        out.extend(_table(describe(cls, "source")))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def documented_keys() -> list[str]:
    """Every key path the reference documents (for the docs test)."""
    keys = [k.path for k in describe(Config) if not k.path.startswith("source")]
    for cls in SOURCE_TYPES.values():
        keys.extend(k.path for k in describe(cls, "source"))
    return keys


if __name__ == "__main__":
    print(render(), end="")
