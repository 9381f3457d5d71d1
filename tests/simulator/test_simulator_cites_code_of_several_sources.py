"""`[cf:protected-code:two-sources]`: code matching two repositories, cited as Azure cites it in a
stream, one source per chunk's `protected_material_code`, with chunks citing nothing between
them (shared/reference/azure-openai-wire.md); the real SDK against the real simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from simulator.filters import load_triggers

TRIGGER = "[cf:protected-code:two-sources]"


def code_of(model: Any) -> dict[str, Any] | None:
    results = (model.model_extra or {}).get("content_filter_results") or {}
    code: dict[str, Any] | None = results.get("protected_material_code")
    return code


async def test_a_stream_cites_each_source_in_its_own_chunk_with_uncited_chunks_between(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    stream = await azure_client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": f"Two helpers please. {TRIGGER}"}],
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    content = [c.choices[0] for c in chunks if c.choices and c.choices[0].delta.content]
    codes = [code_of(choice) for choice in content]
    assert all(code is not None and code["filtered"] is False for code in codes)
    cited = [(i, code["citation"]) for i, code in enumerate(codes) if code and "citation" in code]
    assert [c["license"] for _, c in cited] == ["MIT", "GPL-3.0"]
    assert all(c["URL"].startswith("https://github.com/") for _, c in cited)
    assert cited[0][1]["URL"] != cited[1][1]["URL"]
    assert [i for i, _ in cited] == [0, len(codes) - 1]
    assert all(code == {"filtered": False, "detected": False} for code in codes[1:-1])
    assert len(codes) > 2


async def test_a_reply_not_streamed_carries_the_first_citation(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": f"Two helpers please. {TRIGGER}"}]
    )
    code = code_of(completion.choices[0])
    assert code is not None and code["detected"] is True
    assert code["citation"]["license"] == "MIT"


def test_a_trigger_with_both_citation_and_citations_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "triggers.yaml"
    bad.write_text(
        "triggers:\n"
        '  - {phrase: "[x]", outcome: annotate, side: output, category: protected_material_code,'
        ' citation: {URL: "https://a", license: MIT},'
        ' citations: [{URL: "https://b", license: MIT}]}\n',
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="citation and citations exclude each other"):
        load_triggers(bad)


def test_citations_are_refused_on_other_categories(tmp_path: Path) -> None:
    bad = tmp_path / "triggers.yaml"
    bad.write_text(
        "triggers:\n"
        '  - {phrase: "[x]", outcome: annotate, side: output, category: protected_material_text,'
        ' citations: [{URL: "https://b", license: MIT}]}\n',
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="citations are for an annotated protected_material_code"):
        load_triggers(bad)
