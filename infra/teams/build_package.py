"""Build the Microsoft Teams app package (`make teams-package`).

The package is a zip with `manifest.json`, `color.png` (192x192), `outline.png` (32x32, white
on transparent) and one localization file per additional language (`ja.json`) at its root. The
manifest comes from `manifest.template.json`, with `${{NAME}}` placeholders filled from the app's
settings (`config.load_settings()`: environment, then `.env`): `MicrosoftAppId` (the bot id, also
the Teams app id), `PUBLIC_BASE_URL` (an https URL: the developer website and the valid domain),
`ASSISTANT_NAME` and `ORGANIZATION_NAME`. Each file the manifest's
`localizationInfo.additionalLanguages` names (`ja.json`) comes from the template of the same
stem (`ja.template.json`), filled the same way; Teams shows its strings (name, descriptions,
command titles and descriptions) to users whose Teams language matches.

    python -m infra.teams.build_package [--output PATH] [--app-version 1.2.0]
        [--privacy-url URL] [--terms-url URL]

Upload the zip in Teams (Apps > Manage your apps > Upload an app) or in the Teams admin center.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config import ConfigurationError, Settings, load_settings

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "manifest.template.json"
COLOR_ICON = HERE / "color.png"
OUTLINE_ICON = HERE / "outline.png"
DEFAULT_OUTPUT = HERE / "build" / "teams-app.zip"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_PLACEHOLDER = re.compile(r"\$\{\{([A-Z_]+)\}\}")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
# Manifest limits (MicrosoftTeams.schema.json): name.short and developer.name.
MAX_SHORT_NAME = 30
MAX_DEVELOPER_NAME = 32
# A fixed timestamp: the same inputs give a byte-identical package.
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


class PackageError(Exception):
    """A setting the package needs is missing or invalid; the message says which and why."""


@dataclass(frozen=True)
class PackageOptions:
    app_version: str = "1.0.0"
    privacy_url: str | None = None
    terms_url: str | None = None


def manifest_values(settings: Settings, options: PackageOptions) -> dict[str, str]:
    app_id = settings.microsoft_app_id.strip()
    if not app_id:
        raise PackageError(
            "MicrosoftAppId is empty: set it (environment or .env) to the bot's Microsoft App ID "
            "(a GUID, the app registration of the Azure Bot resource) before building the package."
        )
    if not _GUID.match(app_id):
        raise PackageError(f"MicrosoftAppId must be a GUID, got {app_id!r}.")
    base = settings.public_base_url.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme != "https" or not parts.hostname:
        raise PackageError(
            "PUBLIC_BASE_URL must be the bot's public https URL (e.g. "
            "https://chat-assistant.azurewebsites.net): the package names it as the developer "
            "website and as the valid domain."
        )
    if len(settings.assistant_name) > MAX_SHORT_NAME:
        raise PackageError(f"ASSISTANT_NAME is longer than Teams allows ({MAX_SHORT_NAME}).")
    if len(settings.organization_name) > MAX_DEVELOPER_NAME:
        raise PackageError(f"ORGANIZATION_NAME is longer than Teams allows ({MAX_DEVELOPER_NAME}).")
    if not _SEMVER.match(options.app_version):
        raise PackageError("--app-version must look like 1.2.3.")
    return {
        "APP_VERSION": options.app_version,
        "BOT_ID": app_id.lower(),
        "ORGANIZATION_NAME": settings.organization_name,
        "ASSISTANT_NAME": settings.assistant_name,
        "WEBSITE_URL": base,
        "PRIVACY_URL": options.privacy_url or base,
        "TERMS_URL": options.terms_url or base,
        "PUBLIC_HOST": parts.hostname,
    }


def _fill(node: Any, values: dict[str, str]) -> Any:
    """Placeholders are replaced inside parsed JSON strings, so a value can never break the
    document's syntax (quotes, backslashes)."""
    if isinstance(node, str):
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], node)
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    return node


def _render(template: Path, values: dict[str, str]) -> dict[str, Any]:
    rendered: dict[str, Any] = _fill(json.loads(template.read_text(encoding="utf-8")), values)
    return rendered


def render_manifest(settings: Settings, options: PackageOptions | None = None) -> dict[str, Any]:
    return _render(TEMPLATE, manifest_values(settings, options or PackageOptions()))


def localization_files(manifest: dict[str, Any]) -> list[str]:
    """The localization files the manifest names (`localizationInfo.additionalLanguages`)."""
    languages = manifest.get("localizationInfo", {}).get("additionalLanguages", [])
    return [str(language["file"]) for language in languages]


def render_localizations(
    settings: Settings, options: PackageOptions | None = None
) -> dict[str, dict[str, Any]]:
    """Each localization file the manifest names, by file name, from `<stem>.template.json`."""
    values = manifest_values(settings, options or PackageOptions())
    return {
        name: _render(HERE / f"{Path(name).stem}.template.json", values)
        for name in localization_files(_render(TEMPLATE, values))
    }


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False).encode()


def build_package(
    settings: Settings, output: Path = DEFAULT_OUTPUT, options: PackageOptions | None = None
) -> Path:
    manifest = render_manifest(settings, options)
    localizations = render_localizations(settings, options)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        for name, data in (
            ("manifest.json", _json_bytes(manifest)),
            *((file, _json_bytes(strings)) for file, strings in localizations.items()),
            (manifest["icons"]["color"], COLOR_ICON.read_bytes()),
            (manifest["icons"]["outline"], OUTLINE_ICON.read_bytes()),
        ):
            package.writestr(zipfile.ZipInfo(name, _ZIP_TIME), data, zipfile.ZIP_DEFLATED)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(buffer.getvalue())
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Microsoft Teams app package.")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--app-version", default="1.0.0", help="the package version (semver)")
    parser.add_argument("--privacy-url", help="default: PUBLIC_BASE_URL")
    parser.add_argument("--terms-url", help="default: PUBLIC_BASE_URL")
    args = parser.parse_args(argv)
    options = PackageOptions(args.app_version, args.privacy_url, args.terms_url)
    try:
        path = build_package(load_settings(), args.output, options)
    except PackageError as exc:
        sys.stderr.write(f"teams-package: {exc}\n")
        return 2
    except ConfigurationError as exc:
        # One line per problem, each naming the setting and never its value (the settings hold
        # MicrosoftAppPassword): what `python app.py` says for the same settings.
        for problem in str(exc).splitlines():
            sys.stderr.write(f"teams-package: {problem}\n")
        return 2
    sys.stdout.write(f"Teams app package: {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
