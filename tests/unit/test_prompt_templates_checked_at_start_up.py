"""Prompt templates are rendered once when the app builds its services, with the variables it
passes on every turn: a template that cannot be rendered stops the start, naming the file and the
variable, instead of failing every turn afterwards."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from chat.prompts import PromptBuilder, PromptTemplateError

EVERY_VARIABLE = (
    "You are {{ assistant_name }} of {{ organization_name }}. Today is {{ today }}.\n"
    "{% if language_name == 'Japanese' %}日本語で答えてください ({{ locale }})."
    "{% else %}Answer in {{ language_name }} ({{ locale }}).{% endif %}\n"
    "{% set shown = namespace(count=0) %}{% for i in range(2) %}{% endfor %}"
)


def template(tmp_path: Path, text: str, name: str = "prompt.j2") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_template_using_every_variable_in_both_languages_is_accepted(tmp_path: Path) -> None:
    prompts = PromptBuilder(template(tmp_path, EVERY_VARIABLE), "Contoso", "Contoso Assistant")
    english = prompts.system_prompt("en-US", date(2025, 1, 2))
    japanese = prompts.system_prompt("ja-JP", date(2025, 1, 2))
    assert "Contoso Assistant of Contoso. Today is 2025-01-02." in english
    assert "Answer in English (en-US)." in english
    assert "日本語で答えてください (ja-JP)." in japanese


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("You are {{ assistant_name }}.\n{{ undefined_var }}", ["line 2", "undefined_var"]),
        # Only Japanese turns would take this branch.
        ("{% if locale.startswith('ja') %}{{ department }}{% endif %}", ["line 1", "department"]),
        ("Year {{ today.year }}", ["cannot be rendered", "has no attribute 'year'"]),
        ("{% include 'other.j2' %}", ["cannot be rendered"]),
    ],
)
def test_a_default_template_that_cannot_be_rendered_is_refused_naming_the_file(
    tmp_path: Path, text: str, says: list[str]
) -> None:
    path = template(tmp_path, text)
    with pytest.raises(PromptTemplateError) as raised:
        PromptBuilder(path, "Contoso", "Contoso Assistant")
    for words in [str(path), *says]:
        assert words in str(raised.value)


def test_a_tenant_template_with_an_unknown_variable_is_refused_naming_its_file(
    tmp_path: Path,
) -> None:
    default = template(tmp_path, EVERY_VARIABLE)
    tenant = template(tmp_path, "{{ assistant_name }} for {{ tenant_name }}", "fabrikam.j2")
    with pytest.raises(PromptTemplateError) as raised:
        PromptBuilder(default, "Contoso", "Contoso Assistant", {"72f988bf": tenant})
    assert str(tenant) in str(raised.value) and "tenant_name" in str(raised.value)
