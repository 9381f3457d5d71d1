"""The system prompt, rendered on the server from a template file; never taken from a client.

One default template, and optionally one per Entra tenant (from the tenant policy file). A
conversation several people share gets a fixed note after it, whichever template it uses
(`prompts/shared_conversation.yaml`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path

import yaml
from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from chat.texts import LANGUAGES, Language, language_of

_LANGUAGE_NAMES = {"en": "English", "ja": "Japanese"}
DEFAULT_TEMPLATE_KEY = ""
# What a template may use (README, SYSTEM_PROMPT_FILE); `system_prompt` passes exactly these.
VARIABLES = ("organization_name", "assistant_name", "today", "locale", "language_name")
# One locale per language the bot speaks: a template may branch on either.
_CHECKED_LOCALES = ("en-US", "ja-JP")
# What a conversation several people share adds to the system prompt, in each language.
SHARED_NOTE_FILE = Path(__file__).resolve().parent / "prompts" / "shared_conversation.yaml"


def _shared_notes(path: Path) -> dict[Language, str]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {language: str(loaded[language]).strip() for language in LANGUAGES}


class PromptTemplateError(ValueError):
    """A prompt template the app cannot render (not valid Jinja, a variable it does not pass);
    the message names the file and, where Jinja knows it, the line."""


def _compile(environment: SandboxedEnvironment, path: Path) -> Template:
    source = path.read_text(encoding="utf-8")
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as exc:
        raise PromptTemplateError(
            f"prompt template {path}: line {exc.lineno}: {exc.message}"
        ) from None
    # Found in every branch, not only the ones a check render takes.
    unknown = meta.find_undeclared_variables(tree) - set(VARIABLES) - set(environment.globals)
    if unknown:
        name, line = min(
            (
                (node.name, node.lineno)
                for node in tree.find_all(nodes.Name)
                if node.name in unknown
            ),
            key=lambda found: found[1],
        )
        raise PromptTemplateError(
            f"prompt template {path}: line {line}: unknown variable {name} (the variables are "
            f"{', '.join(VARIABLES)})"
        )
    return environment.from_string(source)


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
        self._shared_notes = _shared_notes(SHARED_NOTE_FILE)
        # Once now with the real values: a template that fails would fail every turn instead.
        for path, template in [
            (template_file, self._template),
            *((Path(path), template) for path, template in self._tenant_templates.values()),
        ]:
            for locale in _CHECKED_LOCALES:
                self._check_render(path, template, locale)

    def _check_render(self, path: Path, template: Template, locale: str) -> None:
        try:
            self._render(template, locale, date.today())
        except Exception as exc:
            # `'str object' has no attribute 'year'`, the sandbox, an include (there is no
            # loader): the same on every turn. The text is Jinja's about the template only.
            detail = str(exc) if isinstance(exc, TemplateError) else type(exc).__name__
            raise PromptTemplateError(
                f"prompt template {path}: cannot be rendered ({locale}): {detail}"
            ) from None

    def _render(self, template: Template, locale: str, today: date) -> str:
        return template.render(
            organization_name=self._organization_name,
            assistant_name=self._assistant_name,
            today=today.isoformat(),
            locale=locale or "en-US",
            language_name=_LANGUAGE_NAMES.get(language_of(locale), "English"),
        ).strip()

    def tenants_with_templates(self) -> list[str]:
        """The tenants (lower case) that have a template of their own."""
        return list(self._tenant_templates)

    def template_key(self, tenant_id: str) -> str:
        """Which template a tenant gets (a cache key): its own file, or the default ("")."""
        entry = self._tenant_templates.get(tenant_id.strip().lower()) if tenant_id else None
        return entry[0] if entry else DEFAULT_TEMPLATE_KEY

    def system_prompt(
        self, locale: str, today: date | None = None, tenant_id: str = "", shared: bool = False
    ) -> str:
        """`shared`: several people write in the conversation; the prompt then ends by saying
        how their messages name who wrote them (chat.speakers), in the locale's language."""
        entry = self._tenant_templates.get(tenant_id.strip().lower()) if tenant_id else None
        template = entry[1] if entry else self._template
        rendered = self._render(template, locale, today or date.today())
        if not shared:
            return rendered
        return f"{rendered}\n\n{self._shared_notes[language_of(locale)]}"
