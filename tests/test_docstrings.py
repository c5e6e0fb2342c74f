"""Every public helper names the chapter that explains it, so a reader of ``help(...)`` can find the prose."""

import ast
import re
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parent.parent / "helpers"
MODULES = sorted(p for p in HELPERS.glob("*.py") if p.name != "__init__.py")


def _public(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [node for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_")]


def test_the_helpers_are_found():
    assert len(MODULES) >= 10 and all(_public(p) for p in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_every_public_function_and_class_names_its_chapter(path):
    missing = [node.name for node in _public(path)
               if not re.search(r"chapters? \d", ast.get_docstring(node) or "", flags=re.IGNORECASE)]
    assert not missing, f"helpers/{path.name}: docstrings without a chapter reference: {missing}"
