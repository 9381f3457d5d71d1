"""`make teams-package`: the Teams app zip validates against the manifest JSON schema of its
`manifestVersion` (shipped offline by the pinned npm package @microsoft/app-manifest), carries
icons of the sizes Teams requires, and a Japanese localization file valid against the
localization schema of the same version."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from chat.texts import localize
from config import PROJECT_ROOT, Settings
from dialogs.commands import Command, parse_command
from infra.teams.build_package import PackageError, build_package, render_manifest

SCHEMAS = PROJECT_ROOT / "node_modules" / "@microsoft" / "app-manifest" / "build" / "json-schemas"
APP_ID = "3c1c6f5e-2b1a-4f3e-9d7c-2f1e0b6a5c4d"
PACKAGE_SETTINGS = {
    "MicrosoftAppId": APP_ID,
    "MicrosoftAppPassword": "secret",
    "PUBLIC_BASE_URL": "https://chat-assistant.contoso.example/",
    "ASSISTANT_NAME": "Contoso Assistant",
    "ORGANIZATION_NAME": "Contoso",
}
# Draft-04 has no `const`, but the Teams schemas use it (manifestVersion): check it too.
TeamsSchemaValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"const": jsonschema.Draft6Validator.VALIDATORS["const"]},
)


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **{**PACKAGE_SETTINGS, **overrides})  # type: ignore[call-arg]


def schema_for(version: str, name: str = "MicrosoftTeams.schema.json") -> dict[str, Any]:
    path = SCHEMAS / "teams" / f"v{version}" / name
    assert path.exists(), f"{path} is missing: run `make setup` (npm ci) first"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def newest_schema_version() -> str:
    versions = [
        p.name[1:] for p in (SCHEMAS / "teams").iterdir() if re.fullmatch(r"v\d+\.\d+", p.name)
    ]
    return max(versions, key=lambda v: tuple(int(n) for n in v.split(".")))


@pytest.fixture
def package(tmp_path: Path) -> zipfile.ZipFile:
    return zipfile.ZipFile(build_package(settings(), tmp_path / "app.zip"))


def test_package_holds_the_manifest_and_both_icons_at_its_root(package: zipfile.ZipFile) -> None:
    assert sorted(package.namelist()) == ["color.png", "ja.json", "manifest.json", "outline.png"]


def test_manifest_is_valid_against_the_current_teams_schema(package: zipfile.ZipFile) -> None:
    manifest = json.loads(package.read("manifest.json"))

    assert manifest["manifestVersion"] == newest_schema_version()
    assert manifest["$schema"].endswith(
        f"/v{manifest['manifestVersion']}/MicrosoftTeams.schema.json"
    )
    errors = sorted(
        TeamsSchemaValidator(schema_for(manifest["manifestVersion"])).iter_errors(manifest),
        key=str,
    )
    assert errors == []


def test_schema_validation_catches_a_broken_manifest() -> None:
    manifest = render_manifest(settings())
    manifest["bots"][0]["scopes"] = ["personal", "everyone"]
    manifest["manifestVersion"] = "1.0"

    validator = TeamsSchemaValidator(schema_for(newest_schema_version()))
    problems = {e.validator for e in validator.iter_errors(manifest)}

    assert {"enum", "const"} <= problems


def test_manifest_names_the_bot_scopes_commands_and_domain(package: zipfile.ZipFile) -> None:
    manifest = json.loads(package.read("manifest.json"))

    assert manifest["id"] == APP_ID
    [bot] = manifest["bots"]
    assert bot["botId"] == APP_ID
    assert sorted(bot["scopes"]) == ["groupChat", "personal", "team"]
    [commands] = bot["commandLists"]
    assert [c["title"] for c in commands["commands"]] == ["/help", "/new", "/usage", "/feedback"]
    assert manifest["validDomains"] == ["chat-assistant.contoso.example"]
    assert manifest["developer"]["websiteUrl"] == "https://chat-assistant.contoso.example"
    assert manifest["name"]["short"] == "Contoso Assistant"
    assert "${{" not in json.dumps(manifest)


def test_new_command_is_described_as_the_app_behaves(package: zipfile.ZipFile) -> None:
    # `/new` starts a fresh context; the earlier messages stay stored (and visible to reviewers).
    manifest = json.loads(package.read("manifest.json"))
    japanese = json.loads(package.read("ja.json"))
    [commands] = manifest["bots"][0]["commandLists"]
    [new] = [c["description"] for c in commands["commands"] if c["title"] == "/new"]

    assert "stay stored" in new and "forget" not in new
    assert "stay stored" in manifest["description"]["full"]
    assert "保存されたまま" in japanese["bots[0].commandLists[0].commands[1].description"]


def test_japanese_localization_is_declared_packaged_and_valid(package: zipfile.ZipFile) -> None:
    manifest = json.loads(package.read("manifest.json"))
    version = manifest["manifestVersion"]
    japanese = json.loads(package.read("ja.json"))

    assert manifest["localizationInfo"] == {
        "defaultLanguageTag": "en",
        "additionalLanguages": [{"languageTag": "ja", "file": "ja.json"}],
    }
    assert japanese["$schema"].endswith(f"/v{version}/MicrosoftTeams.Localization.schema.json")
    schema = schema_for(version, "MicrosoftTeams.Localization.schema.json")
    assert sorted(TeamsSchemaValidator(schema).iter_errors(japanese), key=str) == []
    assert japanese["name.short"] == "Contoso Assistant"
    assert "Contosoの社内AIアシスタント" in japanese["description.short"]
    assert "${{" not in json.dumps(japanese, ensure_ascii=False)


def test_japanese_strings_exist_for_every_command(package: zipfile.ZipFile) -> None:
    manifest = json.loads(package.read("manifest.json"))
    japanese = json.loads(package.read("ja.json"))
    [commands] = manifest["bots"][0]["commandLists"]

    for index, command in enumerate(commands["commands"]):
        key = f"bots[0].commandLists[0].commands[{index}]"
        title, description = japanese[f"{key}.title"], japanese[f"{key}.description"]
        # Teams sends the localized title as the message: the bot must know it as that command.
        english, localized = parse_command(command["title"]), parse_command(title)
        assert english is not None and localized is not None
        assert english.command is not None and localized.command == english.command
        assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", description), description


def test_no_app_text_calls_the_quota_day_today(package: zipfile.ZipFile) -> None:
    """The daily limits reset at midnight UTC (09:00 in Japan), as the bot's texts say."""
    manifest = package.read("manifest.json").decode()
    japanese = package.read("ja.json").decode()
    assert not re.search(r"\btoday\b", manifest, re.IGNORECASE)
    assert "本日" not in japanese and "今日" not in japanese


def test_icons_have_the_sizes_teams_requires_and_the_outline_is_white_on_transparent(
    package: zipfile.ZipFile,
) -> None:
    manifest = json.loads(package.read("manifest.json"))
    color = Image.open(io.BytesIO(package.read(manifest["icons"]["color"])))
    outline = Image.open(io.BytesIO(package.read(manifest["icons"]["outline"])))

    assert (color.format, color.size) == ("PNG", (192, 192))
    assert (outline.format, outline.size) == ("PNG", (32, 32))
    rgba = outline.convert("RGBA")
    visible = [(r, g, b) for r, g, b, a in rgba.get_flattened_data() if a > 0]
    transparent = [a for *_, a in rgba.get_flattened_data() if a == 0]
    assert visible and set(visible) == {(255, 255, 255)}
    assert len(transparent) > 32 * 32 // 2  # mostly transparent: an outline, not a tile
    assert len(set(color.convert("RGB").get_flattened_data())) > 2  # a colour drawing, not blank


def test_package_is_byte_identical_for_the_same_settings(tmp_path: Path) -> None:
    first = build_package(settings(), tmp_path / "a.zip").read_bytes()
    second = build_package(settings(), tmp_path / "b.zip").read_bytes()

    assert first == second


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"MicrosoftAppId": "", "MicrosoftAppPassword": ""}, "MicrosoftAppId is empty"),
        ({"MicrosoftAppId": "my-bot"}, "MicrosoftAppId must be a GUID"),
        ({"PUBLIC_BASE_URL": ""}, "PUBLIC_BASE_URL must be"),
        ({"PUBLIC_BASE_URL": "http://localhost:3978"}, "PUBLIC_BASE_URL must be"),
        ({"ASSISTANT_NAME": "A" * 31}, "ASSISTANT_NAME is longer"),
    ],
)
def test_missing_or_invalid_settings_fail_with_a_clear_message(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(PackageError, match=message):
        build_package(settings(**overrides), tmp_path / "app.zip")
    assert not (tmp_path / "app.zip").exists()


def _run_builder(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # A clean environment plus the given settings (which win over a developer's `.env`).
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "SYSTEMROOT"}}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "infra.teams.build_package", "--output", str(tmp_path / "t.zip")],
        cwd=PROJECT_ROOT,
        env={**keep, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_line_builds_the_zip_and_refuses_an_empty_app_id(tmp_path: Path) -> None:
    built = _run_builder(tmp_path, **PACKAGE_SETTINGS)
    refused = _run_builder(tmp_path / "empty", **{**PACKAGE_SETTINGS, "MicrosoftAppId": ""})

    assert built.returncode == 0, built.stderr
    assert zipfile.ZipFile(tmp_path / "t.zip").namelist()
    assert refused.returncode == 2
    assert "MicrosoftAppId is empty" in refused.stderr
    assert "secret" not in refused.stderr + built.stdout


def test_every_command_is_advertised_in_both_languages_by_the_names_help_gives(
    package: zipfile.ZipFile,
) -> None:
    manifest = json.loads(package.read("manifest.json"))
    japanese = json.loads(package.read("ja.json"))
    [commands] = manifest["bots"][0]["commandLists"]
    titles = [c["title"] for c in commands["commands"]]
    localized = [
        japanese[f"bots[0].commandLists[0].commands[{i}].title"] for i in range(len(titles))
    ]

    assert sorted(titles) == sorted(f"/{command.value}" for command in Command)
    # The Japanese names are the ones /help gives (e.g. /利用状況, like the /usage heading).
    assert "/利用状況" in localized
    for english, title in zip(titles, localized, strict=True):
        assert f"**{english}** または **{title}**" in localize("help", "ja-JP")
        assert title in localize("help", "en-US")
    usage = titles.index("/usage")
    described = commands["commands"][usage]["description"]
    assert described == "Your usage since the daily reset and limits"
    assert "quota" not in json.dumps(manifest)
    assert "/feedback" in manifest["description"]["full"]
    assert "/フィードバック" in japanese["description.full"]


def test_app_description_says_where_the_answers_are_generated_in_plain_words(
    package: zipfile.ZipFile,
) -> None:
    english = json.loads(package.read("manifest.json"))["description"]["full"]
    japanese = json.loads(package.read("ja.json"))["description.full"]

    assert (
        "Answers are generated by an AI model (Azure OpenAI) that runs in Contoso's own Azure "
        "subscription" in english
    )
    assert "回答はContosoの Azure 環境で動作するAIモデル（Azure OpenAI）が生成します。" in japanese
    assert "deployment" not in english and "デプロイ" not in japanese


def test_the_longest_names_allowed_still_give_a_valid_package(tmp_path: Path) -> None:
    longest = settings(ASSISTANT_NAME="A" * 30, ORGANIZATION_NAME="O" * 32)
    package = zipfile.ZipFile(build_package(longest, tmp_path / "app.zip"))
    manifest = json.loads(package.read("manifest.json"))
    japanese = json.loads(package.read("ja.json"))
    version = manifest["manifestVersion"]

    validator = TeamsSchemaValidator(schema_for(version))
    assert sorted(validator.iter_errors(manifest), key=str) == []
    localization = schema_for(version, "MicrosoftTeams.Localization.schema.json")
    assert sorted(TeamsSchemaValidator(localization).iter_errors(japanese), key=str) == []
