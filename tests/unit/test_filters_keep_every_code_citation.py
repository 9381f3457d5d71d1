"""An answer whose code matches several public sources cites every one of them: Azure reports
each streamed chunk on its own, so each source comes in its own chunk's `protected_material_code`
(shared/reference/azure-openai-wire.md), and the verdict on the whole answer keeps them all."""

from __future__ import annotations

from typing import Any

from chat.filters import Citation, parse_answer, parse_results

MIT = Citation("https://github.com/a/x", "MIT")
GPL = Citation("https://github.com/b/y", "GPL-3.0")


def code(citation: Citation | None) -> dict[str, Any]:
    """One chunk's choice annotations: protected code detected with this citation, or nothing."""
    detection: dict[str, Any] = {"filtered": False, "detected": citation is not None}
    if citation is not None:
        detection["citation"] = {"URL": citation.url, "license": citation.license}
    return {"content_filter_results": {"protected_material_code": detection}}


def test_code_citations_from_different_chunks_all_reach_the_verdict_in_order() -> None:
    verdict = parse_answer([], [code(MIT), code(None), code(GPL)], "stop")
    assert verdict.citations() == [MIT, GPL]
    [result] = verdict.results
    assert result.detected is True and result.citations == (MIT, GPL)


def test_a_source_cited_by_several_chunks_is_cited_once() -> None:
    verdict = parse_answer([], [code(MIT), code(GPL), code(MIT), code(GPL)], "stop")
    assert verdict.citations() == [MIT, GPL]


def test_the_same_source_in_prompt_and_output_results_is_cited_once() -> None:
    # Two category results (one per source) naming one repository: the user is told it once.
    verdict = parse_answer(
        [{"content_filter_results": code(MIT)["content_filter_results"]}],
        [code(MIT), code(GPL)],
        "stop",
    )
    assert len(verdict.results) == 2
    assert verdict.citations() == [MIT, GPL]


def test_stored_verdict_lists_every_citation_and_keeps_the_first_in_the_old_field() -> None:
    [stored] = parse_answer([], [code(MIT), code(None), code(GPL)], "stop").to_json()["results"]
    assert stored["citations"] == [
        {"url": "https://github.com/a/x", "license": "MIT"},
        {"url": "https://github.com/b/y", "license": "GPL-3.0"},
    ]
    assert stored["citation"] == {"url": "https://github.com/a/x", "license": "MIT"}


def test_a_result_without_citation_stores_an_empty_list() -> None:
    verdict = parse_results(
        {"protected_material_code": {"filtered": False, "detected": False}}, "output"
    )
    [stored] = verdict.to_json()["results"]
    assert stored["citations"] == [] and stored["citation"] is None
    assert verdict.citations() == []
