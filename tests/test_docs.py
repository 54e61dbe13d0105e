"""The README's promises: its test command is the one CI runs, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick, flags=re.S)


def test_readme_quick_start_has_exactly_two_commands():
    cmds = readme_commands()
    assert len(cmds) == 2
    assert all("\n" not in c for c in cmds)
    assert "robust-collector run" in cmds[0] and "--duration" in cmds[0]
    assert "pytest" in cmds[1] and ".[test]" in cmds[1]


def test_ci_runs_the_readme_test_command_exactly():
    test_cmd = readme_commands()[1]
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_cmd in [line.strip() for line in ci_lines]


def _subcommands():
    from robust_collector.cli import build_parser

    parser = build_parser()
    return parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def test_every_cli_command_and_option_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    usage_block = readme.split("## Usage from the command line", 1)[1].split("```text\n", 1)[1]
    usage_block = usage_block.split("```", 1)[0]
    for name, sub in _subcommands().items():
        assert f"robust-collector {name} " in usage_block, name
        start = usage_block.index(f"robust-collector {name} ")
        end = usage_block.find("robust-collector ", start + 1)
        block = usage_block[start : end if end > 0 else None]
        for action in sub._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert opt in block, f"{name} {opt} missing from the README usage"


def test_every_doc_linked_from_the_readme_exists():
    readme = (REPO / "README.md").read_text()
    for link in re.findall(r"\]\((docs/[^)]+)\)", readme):
        assert (REPO / link).exists(), link


def test_notebooks_are_committed_without_outputs():
    import json

    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, nb.name
