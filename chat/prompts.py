"""The system prompt, rendered on the server from a template file; never taken from a client.

One default template, and optionally one per Entra tenant (from the tenant policy file).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from chat.texts import language_of

_LANGUAGE_NAMES = {"en": "English", "ja": "Japanese"}
DEFAULT_TEMPLATE_KEY = ""


class PromptTemplateError(ValueError):
    """A prompt template that is not valid Jinja; the message names the file and the line."""


def _compile(environment: SandboxedEnvironment, path: Path) -> Template:
    try:
        return environment.from_string(path.read_text(encoding="utf-8"))
    except TemplateSyntaxError as exc:
        raise PromptTemplateError(
            f"prompt template {path}: line {exc.lineno}: {exc.message}"
        ) from None


class PromptBuilder:
    def __init__(
        self,
        template_file: Path,
        organization_name: str,
        assistant_name: str,
        tenant_templates: Mapping[str, Path] | None = None,
    ) -> None:
        environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._template = _compile(environment, template_file)
        # Tenant ids (lower case) -> their own template, compiled now: a broken one fails at boot.
        self._tenant_templates: dict[str, tuple[str, Template]] = {
            tenant.lower(): (str(path), _compile(environment, path))
            for tenant, path in (tenant_templates or {}).items()
        }
        self._organization_name = organization_name
        self._assistant_name = assistant_name

    def template_key(self, tenant_id: str) -> str:
        """Which template a tenant gets (a cache key): its own file, or the default ("")."""
        entry = self._tenant_templates.get(tenant_id.strip().lower()) if tenant_id else None
        return entry[0] if entry else DEFAULT_TEMPLATE_KEY

    def system_prompt(self, locale: str, today: date | None = None, tenant_id: str = "") -> str:
        language = language_of(locale)
        entry = self._tenant_templates.get(tenant_id.strip().lower()) if tenant_id else None
        template = entry[1] if entry else self._template
        return template.render(
            organization_name=self._organization_name,
            assistant_name=self._assistant_name,
            today=(today or date.today()).isoformat(),
            locale=locale or "en-US",
            language_name=_LANGUAGE_NAMES.get(language, "English"),
        ).strip()
