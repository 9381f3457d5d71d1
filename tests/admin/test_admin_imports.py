"""DESIGN.md's rule for this package: `admin` imports only `storage` of the project."""

from __future__ import annotations

import ast
from pathlib import Path

from config import PROJECT_ROOT

PROJECT_PACKAGES = {
    p.name for p in PROJECT_ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()
} | {"app", "config"}


def test_admin_imports_only_storage_of_the_project() -> None:
    found: set[str] = set()
    for path in Path(PROJECT_ROOT / "admin").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    assert "storage" in found
    assert found & PROJECT_PACKAGES <= {"admin", "storage"}, found & PROJECT_PACKAGES
