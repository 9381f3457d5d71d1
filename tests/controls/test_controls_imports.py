"""DESIGN.md's import rules: `controls` imports only `storage` (and no botbuilder); `dialogs`
imports `chat`, `controls` and `storage`."""

from __future__ import annotations

import ast
from pathlib import Path

from config import PROJECT_ROOT

PROJECT_PACKAGES = {
    p.name for p in PROJECT_ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()
} | {"app", "config"}


def imported_roots(package: str) -> set[str]:
    found: set[str] = set()
    for path in Path(PROJECT_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_controls_imports_only_storage_and_no_bot_framework() -> None:
    found = imported_roots("controls")
    assert found & PROJECT_PACKAGES <= {"controls", "storage"}, found & PROJECT_PACKAGES
    assert not found & {"botbuilder", "botframework"}


def test_dialogs_imports_only_chat_controls_and_storage() -> None:
    found = imported_roots("dialogs")
    allowed = {"dialogs", "chat", "controls", "storage"}
    assert found & PROJECT_PACKAGES <= allowed, found & PROJECT_PACKAGES
    assert "botbuilder" in found
