"""The system prompt, rendered on the server from a template file; never taken from a client."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from chat.texts import language_of

_LANGUAGE_NAMES = {"en": "English", "ja": "Japanese"}


class PromptBuilder:
    def __init__(self, template_file: Path, organization_name: str, assistant_name: str) -> None:
        environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._template = environment.from_string(template_file.read_text(encoding="utf-8"))
        self._organization_name = organization_name
        self._assistant_name = assistant_name

    def system_prompt(self, locale: str, today: date | None = None) -> str:
        language = language_of(locale)
        return self._template.render(
            organization_name=self._organization_name,
            assistant_name=self._assistant_name,
            today=(today or date.today()).isoformat(),
            locale=locale or "en-US",
            language_name=_LANGUAGE_NAMES.get(language, "English"),
        ).strip()
