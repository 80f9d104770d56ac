"""The package map in ``zssr_batch/__init__.py`` is the truth: imports go one way between wings,
only ``run`` imports Ray, and no function grows past what a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "zssr_batch"
WINGS = ("engine", "pack", "files", "report", "run")
# What each wing may import from the package besides itself (the arrows of the map).
ALLOWED = {
    "engine": {"config"},
    "pack": {"engine", "config"},
    "files": {"engine", "config"},
    "report": {"files", "engine", "config"},
    "run": {"report", "files", "pack", "engine", "config", "__init__"},
    "config": set(),
    "cli": set(WINGS) | {"config", "__init__"},
    "tables": {"report", "files", "config"},  # benchmark tables: runs through cli's main, handed in
    "__main__": {"cli"},
    "__init__": set(),
}
LONGEST = 80  # lines of one function, docstring included


def _wing(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[str, int]]:
    """(first package part imported, line) for every import of the package in ``path``, lazy ones too."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG)
    here = list(rel.parts[:-1])  # the package the module is in, below zssr_batch
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # from . import x (top level): x itself is the part
                    parts = [node.names[0].name]
                out.append((parts[0], node.lineno))
            elif node.module and node.module.split(".")[0] == "zssr_batch":
                parts = node.module.split(".")[1:] or [node.names[0].name]
                out.append((parts[0], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "zssr_batch":
                    out.append((a.name.split(".")[1] if "." in a.name else "__init__", node.lineno))
    return out


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py"))


def test_imports_follow_the_map():
    wrong = []
    for path in _modules():
        wing = _wing(path)
        for target, line in _imports(path):
            if target == "__version__":
                target = "__init__"
            if target != wing and target not in ALLOWED[wing]:
                wrong.append(f"{path.relative_to(PKG)}:{line} ({wing}) imports {target}")
    assert not wrong, "imports against the map in zssr_batch/__init__.py:\n" + "\n".join(wrong)


def test_only_run_imports_ray():
    wrong = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n.split(".")[0] == "ray" for n in names) and _wing(path) != "run":
                wrong.append(f"{path.relative_to(PKG)}:{node.lineno}")
    assert not wrong, "Ray imported outside run/: " + ", ".join(wrong)


def test_no_function_is_longer_than_a_reader_can_hold():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > LONGEST:
                    long.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {LONGEST} lines:\n" + "\n".join(long)
