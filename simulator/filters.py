"""Content-filter mode: the trigger table and the verdict it gives for one prompt.

The table (`triggers.yaml`) is data; this module only validates it and turns the rows that match
the last user message into Azure's content-filter results.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from simulator import wire

DEFAULT_TRIGGERS_FILE = Path(__file__).resolve().parent / "triggers.yaml"

Outcome = Literal["prompt_filtered", "output_filtered", "annotate"]
Side = Literal["prompt", "output"]
OUTCOMES = ("prompt_filtered", "output_filtered", "annotate")
SIDES = ("prompt", "output")
SEVERITIES = ("safe", "low", "medium", "high")
DETECTION_CATEGORIES = {
    "jailbreak": "prompt",
    "indirect_attack": "prompt",
    "profanity": None,
    "protected_material_text": "output",
    "protected_material_code": "output",
}
OTHER_CATEGORIES = ("custom_blocklists", "error")
FILTER_NOT_RUN_MESSAGE = "The contents are not filtered"


@dataclass(frozen=True)
class Trigger:
    phrase: str
    outcome: Outcome
    side: Side
    category: str | None = None
    severity: str | None = None
    filter_mode: Literal["sync", "async", "async_late"] = "sync"
    body: Literal["innererror", "legacy"] = "innererror"
    blocklist_shape: Literal["details", "list"] = "details"
    blocklist_id: str = "blocklist"
    error_code: int | str = 499
    citation: dict[str, str] | None = None
    citations: list[dict[str, str]] | None = None

    @property
    def filtered(self) -> bool:
        return self.outcome != "annotate"


def _check(row: dict[str, Any]) -> Trigger:
    """Build one row, refusing the inconsistent ones so a typo in the table fails at start-up."""
    trigger = Trigger(**row)
    where = f"trigger {trigger.phrase!r}"
    choices = {
        "outcome": (trigger.outcome, OUTCOMES),
        "side": (trigger.side, SIDES),
        "filter_mode": (trigger.filter_mode, ("sync", "async", "async_late")),
        "body": (trigger.body, ("innererror", "legacy")),
        "blocklist_shape": (trigger.blocklist_shape, ("details", "list")),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{where}: {name} must be one of {allowed}")
    if trigger.outcome == "prompt_filtered" and trigger.side != "prompt":
        raise ValueError(f"{where}: prompt_filtered needs side prompt")
    if trigger.outcome == "output_filtered" and trigger.side != "output":
        raise ValueError(f"{where}: output_filtered needs side output")
    category = trigger.category
    if category in wire.SEVERITY_CATEGORIES:
        if trigger.severity not in SEVERITIES:
            raise ValueError(f"{where}: {category} needs a severity in {SEVERITIES}")
    elif category in DETECTION_CATEGORIES:
        only_side = DETECTION_CATEGORIES[category]
        if only_side is not None and only_side != trigger.side:
            raise ValueError(f"{where}: {category} is reported on the {only_side} side only")
    elif category is None:
        if trigger.outcome != "annotate":
            raise ValueError(f"{where}: a filtered outcome needs a category")
    elif category not in OTHER_CATEGORIES:
        raise ValueError(f"{where}: unknown category {category!r}")
    if category == "error" and trigger.filtered:
        raise ValueError(f"{where}: a filter error never filters")
    if trigger.citations is not None:
        if category != "protected_material_code" or trigger.outcome != "annotate":
            raise ValueError(f"{where}: citations are for an annotated protected_material_code")
        if trigger.citation is not None:
            raise ValueError(f"{where}: citation and citations exclude each other")
        if not trigger.citations or not all(isinstance(c, dict) for c in trigger.citations):
            raise ValueError(f"{where}: citations must be a list of {{URL, license}}")
    return trigger


def load_triggers(path: Path | None = None) -> list[Trigger]:
    raw = yaml.safe_load((path or DEFAULT_TRIGGERS_FILE).read_text(encoding="utf-8"))
    rows = cast(list[dict[str, Any]], raw["triggers"])
    triggers = [_check(row) for row in rows]
    phrases = [t.phrase.lower() for t in triggers]
    if len(set(phrases)) != len(phrases):
        raise ValueError("trigger phrases must be unique")
    return triggers


def _apply(results: wire.JSON, trigger: Trigger) -> wire.JSON:
    """Return `results` with the trigger's category set (filtered or only annotated)."""
    category, filtered = trigger.category, trigger.filtered
    if category is None:
        return results
    if category == "error":
        # The filter did not run: Azure sends the error object instead of any category.
        return {"error": {"code": trigger.error_code, "message": FILTER_NOT_RUN_MESSAGE}}
    updated = dict(results)
    if category in wire.SEVERITY_CATEGORIES:
        updated[category] = {"filtered": filtered, "severity": trigger.severity}
    elif category == "custom_blocklists":
        hit = {"filtered": filtered, "id": trigger.blocklist_id}
        updated[category] = (
            [hit] if trigger.blocklist_shape == "list" else {"filtered": filtered, "details": [hit]}
        )
    else:
        detection: wire.JSON = {"filtered": filtered, "detected": True}
        if trigger.citation is not None:
            detection["citation"] = dict(trigger.citation)
        updated[category] = detection
    return updated


@dataclass(frozen=True)
class Verdict:
    """What the content filter says about one request."""

    prompt_results: wire.JSON
    output_results: wire.JSON  # on text that passes
    blocked_prompt: Trigger | None  # the row that makes the request a 400
    blocked_output_results: wire.JSON | None  # the results of the cut, when the output is filtered
    async_mode: bool
    # Asynchronous mode with the filter far behind: every annotation comes after all the text.
    annotations_late: bool = False
    # Results that single chunks carry in place of `output_results`, spread over the stream:
    # Azure judges each chunk on its own, so code matching several sources is cited chunk by
    # chunk, one source each, with chunks that match nothing between them.
    spread_output_results: tuple[wire.JSON, ...] = ()

    def output_results_of(self, index: int, count: int) -> wire.JSON:
        """The results of the `index`-th of `count` results-bearing chunks (text chunks, or the
        annotations of the asynchronous filter; a reply that is not streamed is one chunk, and
        so carries the first of the spread results). Spread ones go first, last and evenly
        between; a reply of fewer chunks than there are spread results drops the later ones."""
        spread = self.spread_output_results
        if not spread:
            return self.output_results
        if len(spread) == 1 or count <= 1:
            return spread[0] if index == 0 else self.output_results
        for position, results in enumerate(spread):
            if position * (count - 1) // (len(spread) - 1) == index:
                return results
        return self.output_results

    def prompt_error(self) -> wire.JSON:
        """The 400 body of a filtered prompt, in the shape the blocking row asks for."""
        assert self.blocked_prompt is not None
        error: wire.JSON = {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy. Please modify your prompt and retry. To learn more about "
            "our content filtering policies please read our documentation: "
            "https://go.microsoft.com/fwlink/?linkid=2198766",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
        }
        if self.blocked_prompt.body == "innererror":
            error["innererror"] = {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": copy.deepcopy(self.prompt_results),
            }
        return {"error": error}


def judge(triggers: list[Trigger], text: str) -> Verdict:
    lowered = text.lower()
    matched = [t for t in triggers if t.phrase.lower() in lowered]
    prompt_results = wire.safe_prompt_results()
    output_results = wire.safe_output_results()
    blocked_output: Trigger | None = None
    spread: list[Trigger] = []
    for trigger in matched:
        if trigger.side == "prompt":
            prompt_results = _apply(prompt_results, trigger)
        elif trigger.outcome == "output_filtered":
            blocked_output = blocked_output or trigger
        elif trigger.citations is not None:
            spread.append(trigger)
        else:
            output_results = _apply(output_results, trigger)
    blocked_prompt = next((t for t in matched if t.outcome == "prompt_filtered"), None)
    return Verdict(
        prompt_results=prompt_results,
        output_results=output_results,
        blocked_prompt=blocked_prompt,
        blocked_output_results=(
            _apply(output_results, blocked_output) if blocked_output is not None else None
        ),
        async_mode=any(t.filter_mode in ("async", "async_late") for t in matched),
        annotations_late=any(t.filter_mode == "async_late" for t in matched),
        spread_output_results=tuple(
            _apply(output_results, replace(t, citation=citation))
            for t in spread
            for citation in t.citations or []
        ),
    )
