"""`make teams-package` with bot settings the app would refuse (an app id without its password, a
UserAssignedMSI identity without its tenant): one `teams-package:` line per problem naming the
setting, exit code 2, no traceback and no value, like its other errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import PROJECT_ROOT

APP_ID = "3c1c6f5e-2b1a-4f3e-9d7c-2f1e0b6a5c4d"


def build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # A clean environment plus the given settings (which win over a developer's `.env`).
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "SYSTEMROOT"}}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "infra.teams.build_package", "--output", str(tmp_path / "t.zip")],
        cwd=PROJECT_ROOT,
        env={**keep, "PUBLIC_BASE_URL": "https://chat.contoso.example", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({"MicrosoftAppId": APP_ID}, "MicrosoftAppPassword"),
        (
            {"MicrosoftAppId": APP_ID, "MicrosoftAppType": "UserAssignedMSI"},
            "MicrosoftAppTenantId",
        ),
    ],
)
def test_incomplete_bot_settings_are_one_line_naming_the_setting_not_a_traceback(
    tmp_path: Path, settings: dict[str, str], missing: str
) -> None:
    refused = build(tmp_path, **settings)
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    lines = refused.stderr.splitlines()
    assert lines and all(line.startswith("teams-package: ") for line in lines), refused.stderr
    assert missing in refused.stderr
    assert not (tmp_path / "t.zip").exists()


def test_a_bad_setting_value_is_not_repeated(tmp_path: Path) -> None:
    secret = "Qx7~short-Secret42Value"
    refused = build(
        tmp_path,
        MicrosoftAppId=APP_ID,
        MicrosoftAppPassword="p",
        WEBCHAT_TOKEN_SECRET=secret,
    )
    assert refused.returncode == 2, refused.stderr
    assert "teams-package: WEBCHAT_TOKEN_SECRET" in refused.stderr
    assert "Secret42Value" not in refused.stderr + refused.stdout
