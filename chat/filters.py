"""Azure OpenAI content-filter annotations, from every shape the service has sent, as one verdict.

Shapes accepted (see shared/reference/azure-openai-wire.md): severity categories
(`{filtered, severity}`), detection categories (`{filtered, detected}`, code with a `citation`
whose key is upper-case `URL`), custom blocklists as `{filtered, details: [...]}` or as a bare list,
ungrounded material with offsets, an `error` object ("The contents are not filtered") whose code is
a string or an integer, unknown future categories, `prompt_filter_results` and the old
`prompt_annotations`, and the prompt 400 with `innererror.content_filter_result` (real wire),
`inner_error`/`content_filter_results` (spec), or no inner error at all (old responses).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Source = Literal["prompt", "output"]
SEVERITIES = ("safe", "low", "medium", "high")
SEVERITY_CATEGORIES = frozenset({"hate", "sexual", "violence", "self_harm"})
# Categories whose detection alone means a reviewer should look, even when nothing was blocked.
REVIEW_DETECTIONS = frozenset(
    {"jailbreak", "indirect_attack", "protected_material_text", "protected_material_code"}
)
BLOCKLIST = "blocklist"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Citation:
    url: str
    license: str


@dataclass(frozen=True)
class CategoryResult:
    category: str
    source: Source
    filtered: bool = False
    severity: str | None = None
    detected: bool | None = None
    blocklist_ids: tuple[str, ...] = ()
    # A stream reports each chunk on its own, so snippets matching different repositories come
    # with different citations: all of them are kept, in the order they came, each once.
    citations: tuple[Citation, ...] = ()

    def severity_rank(self) -> int:
        return SEVERITIES.index(self.severity) if self.severity in SEVERITIES else 0

    def merged(self, other: CategoryResult) -> CategoryResult:
        if other == self:
            # A stream repeats the same judgement chunk after chunk: nothing to merge.
            return self
        severity = self.severity
        if other.severity_rank() > self.severity_rank() or severity is None:
            severity = other.severity or severity
        detected = self.detected
        if other.detected is not None:
            detected = bool(detected) or other.detected
        return replace(
            self,
            filtered=self.filtered or other.filtered,
            severity=severity,
            detected=detected,
            blocklist_ids=tuple(dict.fromkeys(self.blocklist_ids + other.blocklist_ids)),
            citations=tuple(dict.fromkeys(self.citations + other.citations)),
        )


@dataclass(frozen=True)
class FilterError:
    source: Source
    code: str
    message: str


@dataclass(frozen=True)
class StreamOffsets:
    check_offset: int
    start_offset: int
    end_offset: int


@dataclass
class Verdict:
    results: list[CategoryResult] = field(default_factory=list)
    errors: list[FilterError] = field(default_factory=list)
    offsets: list[StreamOffsets] = field(default_factory=list)

    @property
    def filtered(self) -> bool:
        return any(r.filtered for r in self.results)

    def filtered_categories(self, source: Source | None = None) -> list[str]:
        return list(
            dict.fromkeys(
                r.category
                for r in self.results
                if r.filtered and (source is None or r.source == source)
            )
        )

    def citations(self) -> list[Citation]:
        return list(dict.fromkeys(c for r in self.results if r.detected for c in r.citations))

    def add(self, other: Verdict) -> Verdict:
        merged = _by_category(self.results)
        _merge_into(merged, other.results)
        self.results = list(merged.values())
        self.errors = list(dict.fromkeys([*self.errors, *other.errors]))
        self.offsets = [*self.offsets, *other.offsets]
        return self

    def review_reasons(self, review_severity: str) -> list[str]:
        """Why a reviewer should look at this turn (flag reasons), blocked or not."""
        threshold = SEVERITIES.index(review_severity) if review_severity in SEVERITIES else 2
        reasons: list[str] = []
        for r in self.results:
            if (
                r.filtered
                or (r.detected and r.category in REVIEW_DETECTIONS)
                or (r.severity in SEVERITIES and r.severity_rank() >= threshold)
                or (r.category == BLOCKLIST and r.blocklist_ids)
            ):
                reasons.append(r.category)
        if self.errors:
            reasons.append("filter_error")
        return list(dict.fromkeys(reasons))

    @property
    def notable(self) -> bool:
        """Worth storing: anything but all-safe, nothing detected, no errors."""
        return bool(self.errors) or any(
            r.filtered or r.detected or r.severity not in (None, "safe") or r.blocklist_ids
            for r in self.results
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "filtered": self.filtered,
            "results": [
                {
                    "category": r.category,
                    "source": r.source,
                    "filtered": r.filtered,
                    "severity": r.severity,
                    "detected": r.detected,
                    "blocklist_ids": list(r.blocklist_ids),
                    "citations": [{"url": c.url, "license": c.license} for c in r.citations],
                    # The single-citation form verdicts were stored in before: kept (the first
                    # citation) so that readers of that form still find one.
                    "citation": (
                        {"url": r.citations[0].url, "license": r.citations[0].license}
                        if r.citations
                        else None
                    ),
                }
                for r in self.results
            ],
            "errors": [
                {"source": e.source, "code": e.code, "message": e.message} for e in self.errors
            ],
            "offsets": [
                {"check": o.check_offset, "start": o.start_offset, "end": o.end_offset}
                for o in self.offsets
            ],
        }


_CategoryKey = tuple[str, Source]


def _by_category(results: Iterable[CategoryResult]) -> dict[_CategoryKey, CategoryResult]:
    return {(r.category, r.source): r for r in results}


def _merge_into(
    merged: dict[_CategoryKey, CategoryResult], results: Iterable[CategoryResult]
) -> None:
    """Each result merged with what `merged` holds of its category and source, in place: a
    stream's verdict is made of a hundred or so of these, so nothing is rebuilt per result."""
    for result in results:
        key = (result.category, result.source)
        held = merged.get(key)
        merged[key] = result if held is None else held.merged(result)


def _blocklist(value: Any, source: Source) -> CategoryResult | None:
    # Current shape: {"filtered": bool, "details": [{"filtered": bool, "id": "name"}]};
    # older responses: a bare list [{"filtered": true, "id": "name"}] (or []).
    if isinstance(value, dict):
        details = value.get("details")
        entries = details if isinstance(details, list) else []
        filtered = bool(value.get("filtered"))
    elif isinstance(value, list):
        entries = value
        filtered = False
    else:
        return None
    ids: list[str] = []
    for entry in entries:
        if isinstance(entry, dict):
            filtered = filtered or bool(entry.get("filtered"))
            if entry.get("id") is not None:
                ids.append(str(entry["id"]))
    if not ids and not filtered:
        return None
    return CategoryResult(BLOCKLIST, source, filtered=filtered, blocklist_ids=tuple(ids))


def _citations(value: dict[str, Any]) -> tuple[Citation, ...]:
    citation = value.get("citation")
    if not isinstance(citation, dict):
        return ()
    url = citation.get("URL") or citation.get("url") or ""
    return (Citation(url=str(url), license=str(citation.get("license") or "")),)


def parse_results(results: Any, source: Source) -> Verdict:
    """One `content_filter_results` (or `content_filter_result`) object."""
    verdict = Verdict()
    if not isinstance(results, dict):
        return verdict
    merged: dict[_CategoryKey, CategoryResult] = {}
    for name, value in results.items():
        if name == "error":
            # The filter itself failed: "not filtered", but recorded, whatever shape it came in.
            if isinstance(value, dict):
                code, message = value.get("code"), value.get("message")
                code = "" if code is None else str(code)
                message = "" if message is None else str(message)
            else:
                # A bare string is the message (the code unknown); anything else says nothing.
                code, message = "unknown", value if isinstance(value, str) else ""
            verdict.errors.append(FilterError(source, code, message))
            continue
        if name == "custom_blocklists":
            blocklist = _blocklist(value, source)
            if blocklist is not None:
                _merge_into(merged, (blocklist,))
            continue
        if not isinstance(value, dict):
            continue
        severity = value.get("severity")
        detected = value.get("detected")
        ids: tuple[str, ...] = ()
        details = value.get("details")
        if isinstance(details, list):  # custom topics and similar future list-bearing shapes
            # Custom topics list every configured topic with `detected` true or false: only
            # those detected (or filtered) are hits. An entry that says neither is one.
            hits = [
                d
                for d in details
                if isinstance(d, dict)
                and "id" in d
                and (d.get("filtered") is True or d.get("detected") is not False)
            ]
            ids = tuple(str(d["id"]) for d in hits)
            if not isinstance(detected, bool) and any(d.get("detected") is True for d in hits):
                detected = True
        result = CategoryResult(
            category=str(name),
            source=source,
            filtered=bool(value.get("filtered")),
            severity=str(severity) if isinstance(severity, str) else None,
            detected=bool(detected) if isinstance(detected, bool) else None,
            blocklist_ids=ids,
            citations=_citations(value),
        )
        _merge_into(merged, (result,))
    verdict.results = list(merged.values())
    return verdict


def stream_judgement(results: Any) -> tuple[bool, bool]:
    """Whether one `content_filter_results` object blocks (a category filtered, a blocklist
    hit included) and whether the filter itself failed: what `parse_results(results, ...)`'s
    `filtered` and `errors` say, read without building the verdict (a stream carries one per
    chunk; the turn makes the whole verdict once, from all of them)."""
    if not isinstance(results, dict):
        return False, False
    blocks = failed = False
    for name, value in results.items():
        if name == "error":
            failed = True
        elif name == "custom_blocklists":
            blocklist = _blocklist(value, "output")
            blocks = blocks or (blocklist is not None and blocklist.filtered)
        elif isinstance(value, dict):
            blocks = blocks or bool(value.get("filtered"))
    return blocks, failed


def parse_prompt_annotations(items: Iterable[Any]) -> Verdict:
    """`prompt_filter_results` (or the old `prompt_annotations`) entries."""
    return _parse_items(items, "prompt")


def parse_output_annotations(items: Iterable[Any]) -> Verdict:
    """Choice-level `content_filter_results`, optionally with `content_filter_offsets`."""
    return _parse_items(items, "output")


def _parse_items(items: Iterable[Any], source: Source) -> Verdict:
    merged: dict[_CategoryKey, CategoryResult] = {}
    errors: dict[FilterError, None] = {}
    offsets: list[StreamOffsets] = []
    last_results: Any = None
    for item in items:
        if not isinstance(item, dict):
            continue
        results = item.get("content_filter_results")
        # A stream judges chunk after chunk alike ("safe" in every category): the same results
        # again merge to nothing new, and comparing the JSON costs far less than reading it.
        if results is None or results != last_results:
            one = parse_results(results, source)
            _merge_into(merged, one.results)
            errors.update(dict.fromkeys(one.errors))
            last_results = results
        if source == "prompt":
            continue  # offsets belong to the output's asynchronous annotations
        item_offsets = item.get("content_filter_offsets")
        if isinstance(item_offsets, dict):
            with contextlib.suppress(TypeError, ValueError):
                offsets.append(
                    StreamOffsets(
                        int(item_offsets.get("check_offset", 0)),
                        int(item_offsets.get("start_offset", 0)),
                        int(item_offsets.get("end_offset", 0)),
                    )
                )
    return Verdict(results=list(merged.values()), errors=list(errors), offsets=offsets)


def parse_answer(
    prompt_results: Iterable[Any], output_annotations: Iterable[Any], finish_reason: str | None
) -> Verdict:
    """The verdict on one model answer: its prompt and output annotations. An answer Azure
    stopped with `finish_reason: content_filter` whose results name no filtered output category
    was blocked all the same, for a reason not given: recorded as `unknown`, as a prompt refused
    in the old form is, so that it is flagged and shown to reviewers like any other block."""
    verdict = parse_prompt_annotations(prompt_results).add(
        parse_output_annotations(output_annotations)
    )
    if finish_reason == "content_filter" and not verdict.filtered_categories("output"):
        verdict.add(Verdict(results=[CategoryResult(UNKNOWN, "output", filtered=True)]))
    return verdict


def is_prompt_filter_error(body: Any) -> bool:
    error = _inner_error_dict(body)
    return error is not None and error.get("code") == "content_filter"


def parse_prompt_error(body: Any) -> Verdict:
    """The HTTP 400 `content_filter` body (the SDK's `e.body` or the whole response JSON)."""
    error = _inner_error_dict(body) or {}
    inner = error.get("innererror") or error.get("inner_error") or {}
    results = None
    if isinstance(inner, dict):
        results = inner.get("content_filter_result") or inner.get("content_filter_results")
    verdict = parse_results(results, "prompt")
    if not verdict.filtered:
        # Old responses carry no inner error: the prompt was blocked, the reason is unknown.
        verdict.add(Verdict(results=[CategoryResult(UNKNOWN, "prompt", filtered=True)]))
    return verdict


def _inner_error_dict(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        return error
    return body
