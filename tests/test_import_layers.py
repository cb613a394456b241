"""Imports go down only: the lower packages never import the trainer or the top-level commands (ast, no import)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mm_gmpo"
LOWER = ("algorithms", "reward", "data", "models", "rollout")
UPPER = ("mm_gmpo.trainer", "mm_gmpo.evaluate", "mm_gmpo.vllm_check", "mm_gmpo.cli")


def imported_modules(source: str) -> list[str]:
    """Every module an ``import`` or ``from ... import`` names, at any depth (imports inside functions too)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
            out.extend(f"{node.module}.{alias.name}" for alias in node.names)  # from mm_gmpo import trainer
    return out


def upward(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == up or m.startswith(up + ".") for up in UPPER)]


def test_the_rule_sees_every_form_of_import():
    source = (
        "import mm_gmpo.trainer.dist\ndef f():\n    from mm_gmpo import evaluate\n    from mm_gmpo.data import rows\n"
    )
    assert upward(imported_modules(source)) == ["mm_gmpo.trainer.dist", "mm_gmpo.evaluate"]


def test_lower_packages_import_neither_the_trainer_nor_the_commands():
    files = [f for package in LOWER for f in sorted((PACKAGE / package).rglob("*.py"))]
    assert len(files) > 20  # the packages are where this test thinks they are
    offenders = {
        str(f.relative_to(PACKAGE.parent)): found
        for f in files
        if (found := upward(imported_modules(f.read_text(encoding="utf-8"))))
    }
    assert offenders == {}
