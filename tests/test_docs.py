"""The README's promises: its test command is the one CI runs, its commands exist."""

from __future__ import annotations

import argparse
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


def _commands() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every (sub)command of ``robust-collector``, nested ones included: path -> parser."""
    from robust_collector.cli import build_parser

    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        found[path] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk((*path, name), sub)

    walk((), build_parser())
    return found


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """A parser's own option strings, ``-h``/``--help`` left out."""
    return {
        opt
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        for opt in action.option_strings
    }


OPTION = re.compile(r"^--?[A-Za-z][\w-]*")
LISTED_OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")  # not the "-collector" of our name
SHELL_END = re.compile(r"\s(?:#|\||>|<|;|&&)")  # a comment, pipe, redirect or next command


def _split_command(line: str) -> tuple[tuple[str, ...], list[str]]:
    """``robust-collector db init --db URL`` -> (("db", "init"), ["--db"]).

    The words after ``robust-collector`` that name subcommands (walking the parser's
    tree) are the command; every later word that starts with ``-`` is an option
    (``--mode=x`` counts as ``--mode``); other words are arguments.
    """
    commands = _commands()
    words = SHELL_END.split(" " + line.split("robust-collector", 1)[1])[0].split()
    path: tuple[str, ...] = ()
    opts: list[str] = []
    for w in words:
        m = OPTION.match(w.strip("[]|`"))
        if m:
            opts.append(m.group(0))
        elif not opts and path in commands and _has_subcommands(commands[path]):
            path = (*path, w)  # a subcommand's name (an unknown one fails the lookup)
    return path, opts


def _has_subcommands(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def _usage_blocks() -> dict[tuple[str, ...], str]:
    """The README's "Usage from the command line" synopsis: command path -> its text.

    Convention: inside that section's first ```text block, a line starting with
    ``robust-collector`` opens a command's synopsis (the command is the words up to
    its first ``[`` or option); indented lines continue the synopsis above them.
    """
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Usage from the command line", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    out: dict[tuple[str, ...], str] = {}
    current: tuple[str, ...] | None = None
    for line in block.splitlines():
        if line.startswith("robust-collector"):
            current = _split_command(line.split("[", 1)[0])[0]
            assert current not in out, f"robust-collector {' '.join(current)} listed twice"
            out[current] = line
        elif line.strip():
            assert current is not None and line.startswith(" "), line
            out[current] += "\n" + line
    return out


def test_every_cli_command_and_option_is_in_the_readme():
    """Parser -> docs: every command that takes options (nested ones such as ``db init``
    included) has a synopsis in the README's usage block naming each of its options."""
    blocks = _usage_blocks()
    for path, parser in _commands().items():
        if not path or (_has_subcommands(parser) and not _options(parser)):
            continue  # the program itself (--version) and pure groups such as ``db``
        name = " ".join(path)
        assert path in blocks, f"robust-collector {name} has no synopsis in the README usage"
        documented = set(LISTED_OPTION.findall(blocks[path]))
        for opt in sorted(_options(parser)):
            assert opt in documented, f"{name} {opt} missing from the README usage"


def test_every_documented_command_and_option_exists():
    """Docs -> parser: every command and option the README synopsis lists exists, and so
    does every ``robust-collector ...`` command line written as code in README.md or
    docs/*.md (a line of a fenced block, or an inline `code span`), with its options."""
    commands = _commands()
    for path, text in _usage_blocks().items():
        assert path in commands, f"README usage lists an unknown command: {' '.join(path)}"
        listed = set(LISTED_OPTION.findall(text))
        unknown = listed - _options(commands[path])
        assert not unknown, f"README usage: {' '.join(path)} has no {sorted(unknown)}"

    problems: list[str] = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in _code_command_lines(doc.read_text()):
            path, opts = _split_command(line)
            where = f"{doc.relative_to(REPO)}: {line.strip()}"
            if path not in commands:
                problems.append(f"{where}: no command {' '.join(path)!r}")
                continue
            missing = [o for o in opts if o not in _options(commands[path])]
            if missing:
                problems.append(f"{where}: {' '.join(path) or 'robust-collector'} has no {missing}")
    assert not problems, "\n".join(problems)


def _code_command_lines(text: str) -> list[str]:
    """The ``robust-collector`` command lines in a Markdown text's code: each line of a
    fenced block that runs it, and each inline code span that starts with it."""
    found: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if re.match(r"\s*(\$ )?robust-collector(\s|$)", line):
                found.append(line)
        else:
            found += re.findall(r"`(robust-collector(?:\s[^`]*)?)`", line)
    return found


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


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.+?)\n```", text, flags=re.S)


def _run_block(code: str, ns: dict) -> object:
    """Run a snippet like a notebook cell: the value of its last expression is returned."""
    import ast

    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<README>", "exec"), ns)
    return (
        None if last is None else eval(compile(ast.Expression(last.value), "<README>", "eval"), ns)
    )


def test_readme_notebook_snippets_work_from_the_notebooks_folder(tmp_path, monkeypatch):
    """A notebook's kernel starts in notebooks/: the README's snippets that name the
    repository's config and data/market_data.db must find them from there too (they
    once used paths relative to the repository root, which fail there)."""
    import shutil

    from robust_collector.model import now_us
    from robust_collector.storage.schema import open_database
    from robust_collector.storage.tables import INSERT_TICKS

    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (repo / "config").mkdir()
    shutil.copy(REPO / "config" / "spy_qqq_config.yaml", repo / "config")
    db = repo / "data" / "market_data.db"
    db.parent.mkdir()
    conn = open_database(db)
    ts = now_us()
    with conn:  # what a collector in another process left
        for i in range(1, 4):
            row = (f"r:SPY:{i}", "SPY", i, ts + i, ts + i, 1.0, 1.01, 1.0, 1.0, None, "sim", "r")
            conn.execute(INSERT_TICKS, row)
    conn.close()
    monkeypatch.chdir(repo / "notebooks")
    readme = (REPO / "README.md").read_text()

    quick = _python_blocks(readme.split("## Usage from a notebook", 1)[1])[0]
    ns: dict = {}
    _run_block(quick, ns)  # start, status, ticks, stop: with the repository's config
    assert Path(ns["c"].config.storage.database) == db

    (read,) = [b for b in _python_blocks(readme) if "read_ticks(" in b]
    ticks = _run_block(read.replace('"2026-01-10T14:00:00"', "None"), {})
    assert ticks.filter(ticks["run_id"] == "r").height == 3

    watched = re.findall(r"`robust_collector\.dashboard\.watch\(([^`]+)\)`", readme)
    local = [arg for arg in watched if arg != "url"]  # watch(url): a PostgreSQL URL
    assert local
    from robust_collector.analysis import project_root

    for arg in local:
        assert Path(eval(arg, {"project_root": project_root})).resolve() == db.resolve(), arg
