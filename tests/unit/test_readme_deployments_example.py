"""The README's DEPLOYMENTS_FILE example loads as written: YAML reads its unquoted
`api_version: 2024-10-21` as a date, which is taken as the version it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config import PROJECT_ROOT, Settings


def readme_deployments_example() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Model deployments", 1)[1]
    found = re.search(r"```yaml\n(deployments:\n.*?)```", section, re.DOTALL)
    assert found, "the README's Model deployments section has a YAML example"
    return found.group(1)


def test_the_readme_deployments_example_loads_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = readme_deployments_example()
    assert "api_version: 2024-10-21 " in example, "unquoted, as people copy it"
    path = tmp_path / "deployments.yaml"
    path.write_text(example, encoding="utf-8")
    monkeypatch.setenv("PRIMARY_KEY", "a-key-from-the-environment")

    loaded = Settings(_env_file=None, DEPLOYMENTS_FILE=path)  # type: ignore[call-arg]

    primary, paygo = loaded.deployments
    assert (primary.name, primary.api_version) == ("primary", "2024-10-21")
    assert (paygo.name, paygo.api) == ("paygo", "v1")


def test_a_quoted_api_version_is_kept_as_written(tmp_path: Path) -> None:
    path = tmp_path / "deployments.yaml"
    path.write_text(
        "deployments:\n  - name: east\n    endpoint: https://east.openai.azure.com\n"
        '    deployment: d\n    api_version: "2025-04-01-preview"\n',
        encoding="utf-8",
    )
    [east] = Settings(_env_file=None, DEPLOYMENTS_FILE=path).deployments  # type: ignore[call-arg]
    assert east.api_version == "2025-04-01-preview"
