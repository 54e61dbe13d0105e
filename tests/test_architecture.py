"""Imports point down the data flow; no package reaches into a layer above it.

The layers, lowest first (docs/architecture.md draws them):

    boundary, errors
    secrets, schema, model, palette, storage.tables   (definitions: import nothing above)
    resilience
    validation
    sources            (quotes and typed errors; may use resilience and column names)
    config             (the config types: each source's section lives beside it)
    storage
    health
    runtime
    collector          (the facade)
    analysis, dashboard, drill, configdoc
    cli
    robust_collector/__init__.py, __main__

A module may import its own package and any lower layer, never a higher or a sibling
one. The only exception is named here with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import robust_collector

ROOT = Path(robust_collector.__file__).parent

LAYERS: list[tuple[str, ...]] = [
    ("boundary", "errors"),
    ("secrets", "schema", "model", "palette", "storage.tables"),
    ("resilience",),
    ("validation",),
    ("sources",),
    ("config",),
    ("storage",),
    ("health",),
    ("runtime",),
    ("collector",),
    ("analysis", "dashboard", "drill", "configdoc"),
    ("cli",),
    ("__init__", "__main__"),
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}

# (importer, imported): why the upward import is fine
ALLOWED = {
    ("collector", "dashboard"): "Collector.dashboard() is a convenience; imported lazily in it",
}


def unit_of(module: str) -> str:
    """The layer unit of a dotted module name: ``storage.tables`` or the first package."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    if parts[:2] == ["storage", "tables"]:
        return "storage.tables"
    return parts[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1] if len(parts) > 2 else [*parts[:-1], "__init__"]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every robust_collector module ``path`` imports, at any depth (lazy ones too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(n, node.lineno) for n in names if n.startswith("robust_collector.")]
    return out


def test_every_module_has_a_layer():
    units = {unit_of(module_name(p)) for p in ROOT.rglob("*.py")}
    assert units <= set(RANK), f"modules with no layer: {sorted(units - set(RANK))}"


def test_imports_point_down_the_data_flow():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        me = unit_of(module_name(path))
        for target, line in imports_of(path):
            other = unit_of(target)
            if other == me or (me, other) in ALLOWED:
                continue
            if RANK[other] >= RANK[me]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_the_table_definitions_import_nothing_of_ours():
    assert imports_of(ROOT / "storage" / "tables.py") == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The scanner is not blind: a lazy upward import inside a function is found."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from robust_collector.runtime.pipeline import Pipeline\n")
    assert imports_of(src) == [("robust_collector.runtime.pipeline", 2)]
    assert RANK[unit_of("robust_collector.runtime.pipeline")] > RANK["storage"]
