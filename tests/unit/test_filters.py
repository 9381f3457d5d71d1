"""The content-filter parser over every shape Azure OpenAI has sent (shared/reference)."""

from __future__ import annotations

from typing import Any

import pytest

from chat.filters import (
    Citation,
    is_prompt_filter_error,
    parse_answer,
    parse_output_annotations,
    parse_prompt_annotations,
    parse_prompt_error,
    parse_results,
    stream_judgement,
)
from chat.service import ChatService

SAFE = {
    "hate": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
}


def results(**overrides: Any) -> dict[str, Any]:
    return {**SAFE, **overrides}


def test_all_safe_results_are_not_notable_and_raise_no_flags() -> None:
    verdict = parse_results(results(jailbreak={"filtered": False, "detected": False}), "prompt")
    assert not verdict.filtered and not verdict.notable
    assert verdict.review_reasons("medium") == []
    assert {r.category for r in verdict.results} == {
        "hate",
        "sexual",
        "violence",
        "self_harm",
        "jailbreak",
    }


def test_severity_category_filtered_with_source() -> None:
    verdict = parse_results(results(violence={"filtered": True, "severity": "high"}), "output")
    assert verdict.filtered
    assert verdict.filtered_categories() == ["violence"]
    assert verdict.filtered_categories("prompt") == []
    [violence] = [r for r in verdict.results if r.category == "violence"]
    assert violence.source == "output" and violence.severity == "high"


@pytest.mark.parametrize(
    ("severity", "threshold", "flagged"),
    [
        ("low", "medium", False),
        ("medium", "medium", True),
        ("low", "low", True),
        ("high", "high", True),
        ("medium", "high", False),
    ],
)
def test_unblocked_severity_flags_at_the_review_threshold(
    severity: str, threshold: str, flagged: bool
) -> None:
    verdict = parse_results(results(hate={"filtered": False, "severity": severity}), "prompt")
    assert not verdict.filtered
    assert ("hate" in verdict.review_reasons(threshold)) is flagged


@pytest.mark.parametrize("category", ["jailbreak", "indirect_attack", "protected_material_text"])
def test_detections_flag_for_review_without_blocking(category: str) -> None:
    verdict = parse_results(results(**{category: {"filtered": False, "detected": True}}), "prompt")
    assert not verdict.filtered
    assert verdict.review_reasons("high") == [category]


def test_protected_code_citation_with_upper_case_url_key() -> None:
    code = {
        "filtered": False,
        "detected": True,
        "citation": {"URL": "https://github.com/example/repo", "license": "MIT"},
    }
    verdict = parse_results({"protected_material_code": code}, "output")
    assert verdict.citations() == [Citation("https://github.com/example/repo", "MIT")]
    assert verdict.to_json()["results"][0]["citation"] == {
        "url": "https://github.com/example/repo",
        "license": "MIT",
    }


def test_blocklist_current_shape_with_details() -> None:
    verdict = parse_results(
        {
            "custom_blocklists": {
                "filtered": True,
                "details": [
                    {"filtered": True, "id": "CompanyBannedTerms"},
                    {"filtered": False, "id": "Watch"},
                ],
            }
        },
        "prompt",
    )
    [blocklist] = verdict.results
    assert blocklist.category == "blocklist" and blocklist.filtered
    assert blocklist.blocklist_ids == ("CompanyBannedTerms", "Watch")


def test_blocklist_old_list_shape_and_empty_list() -> None:
    verdict = parse_results({"custom_blocklists": [{"filtered": True, "id": "Old"}]}, "output")
    assert verdict.filtered_categories() == ["blocklist"]
    assert verdict.results[0].blocklist_ids == ("Old",)
    assert parse_results({"custom_blocklists": []}, "output").results == []


def test_blocklist_hit_without_blocking_is_flagged() -> None:
    verdict = parse_results(
        {"custom_blocklists": {"filtered": False, "details": [{"filtered": False, "id": "W"}]}},
        "prompt",
    )
    assert not verdict.filtered and verdict.review_reasons("high") == ["blocklist"]


def test_custom_topics_name_only_the_topics_detected() -> None:
    # Azure lists every configured topic, each with whether it was detected.
    topics = {
        "filtered": False,
        "details": [
            {"filtered": False, "detected": True, "id": "MergerTalk"},
            {"filtered": False, "detected": False, "id": "Layoffs"},
        ],
    }
    [hit] = parse_results(results(custom_topics=topics), "output").results[-1:]
    assert (hit.category, hit.detected, hit.blocklist_ids) == (
        "custom_topics",
        True,
        ("MergerTalk",),
    )
    none = {"filtered": False, "details": [{"filtered": False, "detected": False, "id": "Layoffs"}]}
    verdict = parse_results(results(custom_topics=none), "output")
    assert not verdict.notable


def test_an_answer_stopped_without_a_category_is_blocked_for_an_unknown_reason() -> None:
    outputs = [{"content_filter_results": results()}]
    verdict = parse_answer([], outputs, "content_filter")
    assert verdict.filtered_categories("output") == ["unknown"]
    assert verdict.review_reasons("medium") == ["unknown"]
    # A category named, or an answer not stopped: nothing is added.
    named = [{"content_filter_results": results(sexual={"filtered": True, "severity": "high"})}]
    assert parse_answer([], named, "content_filter").filtered_categories() == ["sexual"]
    assert parse_answer([], outputs, "stop").filtered_categories() == []


@pytest.mark.parametrize("code", [499, "499"])
def test_filter_error_with_integer_or_string_code_is_not_filtered_but_recorded(
    code: int | str,
) -> None:
    verdict = parse_results(
        {"error": {"code": code, "message": "The contents are not filtered"}}, "output"
    )
    assert not verdict.filtered
    assert [(e.source, e.code) for e in verdict.errors] == [("output", "499")]
    assert verdict.review_reasons("high") == ["filter_error"]
    assert verdict.notable


def test_a_filter_error_without_a_code_or_as_a_bare_message_keeps_what_it_said() -> None:
    without_code = parse_results(
        {"error": {"code": None, "message": "The contents are not filtered"}}, "output"
    )
    bare = parse_results({"error": "The contents are not filtered"}, "prompt")

    assert [(e.code, e.message) for e in without_code.errors] == [
        ("", "The contents are not filtered")
    ]
    assert [(e.code, e.message) for e in bare.errors] == [
        ("unknown", "The contents are not filtered")
    ]


def test_a_blocklist_whose_details_are_not_a_list_still_reads_its_verdict() -> None:
    verdict = parse_results({"custom_blocklists": {"filtered": True, "details": 7}}, "output")
    assert verdict.filtered_categories() == ["blocklist"]
    assert verdict.results[0].blocklist_ids == ()


@pytest.mark.parametrize("error", ["The contents are not filtered", 500, ["x"]])
def test_a_filter_error_of_another_shape_is_recorded_as_unknown(error: object) -> None:
    verdict = parse_results({"error": error}, "prompt")
    assert not verdict.filtered
    assert [(e.source, e.code) for e in verdict.errors] == [("prompt", "unknown")]
    assert verdict.review_reasons("high") == ["filter_error"]


def test_ungrounded_material_and_unknown_future_categories_parse() -> None:
    verdict = parse_results(
        {
            "ungrounded_material": {
                "filtered": False,
                "detected": True,
                "details": [{"completion_start_offset": 3, "completion_end_offset": 9}],
            },
            "brand_new_category": {"filtered": True, "detected": True, "extra": [1, 2]},
            "weird_scalar": 5,
        },
        "output",
    )
    assert {r.category for r in verdict.results} == {"ungrounded_material", "brand_new_category"}
    assert verdict.filtered_categories() == ["brand_new_category"]


def test_prompt_400_with_singular_innererror_content_filter_result() -> None:
    body = {
        "message": "The response was filtered due to the prompt triggering ...",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": results(violence={"filtered": True, "severity": "medium"}),
        },
    }
    assert is_prompt_filter_error(body)
    verdict = parse_prompt_error(body)
    assert verdict.filtered_categories("prompt") == ["violence"]


def test_prompt_400_spec_shape_inner_error_plural_and_wrapped_in_error() -> None:
    body = {
        "error": {
            "code": "content_filter",
            "inner_error": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_results": {"jailbreak": {"filtered": True, "detected": True}},
            },
        }
    }
    assert is_prompt_filter_error(body)
    assert parse_prompt_error(body).filtered_categories() == ["jailbreak"]


def test_old_prompt_400_without_innererror_is_filtered_for_an_unknown_reason() -> None:
    body = {"code": "content_filter", "message": "filtered", "param": "prompt", "status": 400}
    verdict = parse_prompt_error(body)
    assert verdict.filtered_categories() == ["unknown"]


def test_other_400s_are_not_filter_errors() -> None:
    assert not is_prompt_filter_error({"code": "context_length_exceeded"})
    assert not is_prompt_filter_error("not json")


def test_prompt_filter_results_and_the_old_prompt_annotations_name() -> None:
    items = [
        {
            "prompt_index": 0,
            "content_filter_results": results(jailbreak={"filtered": False, "detected": True}),
        }
    ]
    assert parse_prompt_annotations(items).review_reasons("high") == ["jailbreak"]
    assert parse_prompt_annotations([{"prompt_index": 0}, "junk"]).results == []


def test_async_annotation_chunks_with_offsets_merge_into_one_verdict() -> None:
    annotations = [
        {
            "content_filter_results": results(),
            "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 40},
        },
        {
            "content_filter_results": results(hate={"filtered": True, "severity": "high"}),
            "content_filter_offsets": {"check_offset": 40, "start_offset": 40, "end_offset": 90},
        },
    ]
    verdict = parse_output_annotations(annotations)
    assert verdict.filtered_categories("output") == ["hate"]
    assert [o.end_offset for o in verdict.offsets] == [40, 90]
    assert len([r for r in verdict.results if r.category == "hate"]) == 1, "merged per category"
    assert verdict.to_json()["offsets"][-1] == {"check": 40, "start": 40, "end": 90}


def test_merge_keeps_the_worst_severity_and_any_filtering() -> None:
    first = parse_results({"sexual": {"filtered": False, "severity": "medium"}}, "output")
    second = parse_results({"sexual": {"filtered": True, "severity": "low"}}, "output")
    [merged] = first.add(second).results
    assert merged.filtered and merged.severity == "medium"


@pytest.mark.parametrize(
    "raw",
    [
        results(),
        results(violence={"filtered": True, "severity": "high"}),
        results(jailbreak={"filtered": False, "detected": True}),
        results(protected_material_code={"filtered": True, "detected": True}),
        {"custom_blocklists": {"filtered": True, "details": [{"filtered": True, "id": "b"}]}},
        {"custom_blocklists": {"filtered": False, "details": [{"filtered": True, "id": "b"}]}},
        {"custom_blocklists": {"filtered": False, "details": [{"filtered": False, "id": "b"}]}},
        {"custom_blocklists": [{"filtered": True, "id": "old-shape"}]},
        {"custom_topics": {"filtered": True, "details": [{"detected": True, "id": "t"}]}},
        {"error": {"code": "content_filter_error", "message": "the filter failed"}},
        {"error": "not even an object", "hate": {"filtered": True}},
        {"hate": "not an object"},
        {},
        None,
        ["not", "a", "dict"],
    ],
)
def test_a_streams_per_chunk_judgement_says_what_the_whole_verdict_would(raw: Any) -> None:
    """The stream reads only whether a chunk blocks and whether the filter failed; the turn's
    verdict, built once from all the chunks, must agree with it."""
    verdict = parse_results(raw, "output")
    assert stream_judgement(raw) == (verdict.filtered, bool(verdict.errors))


def test_a_long_stream_of_alike_judgements_gives_the_verdict_of_merging_each_one() -> None:
    """Chunks judged alike are read once; a different judgement anywhere in the run (a
    filtered category, a citation, a filter error, alike chunks again after it) still counts,
    and every chunk's offsets are kept."""
    cited = results(
        protected_material_code={
            "filtered": False,
            "detected": True,
            "citation": {"URL": "https://example.com/a", "license": "MIT"},
        }
    )
    failed = {"error": {"code": "content_filter_error", "message": "the filter failed"}}
    judgements = [results()] * 50 + [cited] + [results()] * 30 + [failed, failed] + [cited] * 3
    judgements += [results(violence={"filtered": True, "severity": "medium"})] + [results()] * 20
    annotations: list[Any] = [
        {
            "content_filter_results": judgement,
            "content_filter_offsets": {"check_offset": i, "start_offset": i, "end_offset": i + 1},
        }
        for i, judgement in enumerate(judgements)
    ]
    annotations.insert(10, "not an annotation")

    one_by_one = parse_results(None, "output")
    for judgement in judgements:
        one_by_one.add(parse_results(judgement, "output"))
    verdict = parse_output_annotations(annotations)

    assert verdict.to_json()["results"] == one_by_one.to_json()["results"]
    assert verdict.to_json()["errors"] == one_by_one.to_json()["errors"]
    assert verdict.filtered_categories("output") == ["violence"]
    assert [c.url for c in verdict.citations()] == ["https://example.com/a"]
    assert len(verdict.errors) == 1
    assert [o.end_offset for o in verdict.offsets] == list(range(1, len(judgements) + 1))


def _citation_sentence(url: str, license_name: str, locale: str = "en-US") -> str:
    code = {"filtered": False, "detected": True, "citation": {"URL": url, "license": license_name}}
    verdict = parse_results({"protected_material_code": code}, "output")
    return ChatService._citation_text(verdict, locale)


def test_a_citations_license_cannot_become_markdown_of_our_sentence() -> None:
    """The license goes into our own sentence, which both channels render as Markdown: bold
    text and a link of its own there would read as the assistant's."""
    sentence = _citation_sentence(
        "https://github.com/example/repo",
        "MIT). **Session expired: [sign in again](https://evil.example/login)** (x",
    )
    assert "`MIT). **Session expired: [sign in again](https://evil.example/login)** (x`" in sentence
    assert _citation_sentence("https://github.com/example/repo", "MIT").endswith(
        "(license: `MIT`)."
    )
    assert "`a'b c`" in _citation_sentence("https://github.com/example/repo", "a`b\nc")


@pytest.mark.parametrize(
    "url", ["javascript:alert(document.cookie)", "//evil.example/x", "https://a.example/x y", ""]
)
def test_a_citation_whose_url_is_no_web_address_is_not_shown_to_the_user(url: str) -> None:
    assert _citation_sentence(url, "MIT") == ""


def test_a_citation_urls_markdown_characters_are_percent_encoded_after_the_host() -> None:
    sentence = _citation_sentence("https://github.com/a/my_repo/blob/x/(y)*z*", "MIT", "ja-JP")
    assert "https://github.com/a/my_repo/blob/x/%28y%29%2Az%2A （ライセンス: `MIT`）" in sentence
