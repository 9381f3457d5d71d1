"""Reading the store for reviewers: list filters, the bounded text search, and the views of
summaries and messages that pages, the JSON API and exports all share (so they agree)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from admin.pseudonyms import Pseudonyms
from admin.texts import Text
from storage.base import Store
from storage.ids import person_ids
from storage.models import (
    ConversationSummary,
    Message,
    Page,
    SummaryQuery,
    log_unreadable_summary,
)
from storage.summaries import is_shared_owner

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
# The text search reads messages, so it is bounded: one request scans at most this many
# conversations (newest first, after the other filters) and their newest messages; the
# continuation token goes on from there.
SEARCH_MAX_CONVERSATIONS = 200
SEARCH_MESSAGES_PER_CONVERSATION = 20
# How many conversations one export of a text search reads at most (`conversations_to_export`).
EXPORT_SEARCH_MAX_CONVERSATIONS = 1000
MAX_QUERY_CHARS = 200
# Variation selectors choose a glyph, not a character: 葛城市 with U+E0100 after 葛 (the glyph a
# register of names uses) is 葛城市 to a reader, and an emoji with or without U+FE0F is the same.
_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
# Flag categories the chat service writes into summaries (chat/filters.py), for the filter menu.
# The service also writes Azure's own name for a category this list does not know yet, so the
# filter takes any name of that shape (still a query parameter, never part of the query text).
FLAG_CATEGORIES = [
    "violence",
    "hate",
    "sexual",
    "self_harm",
    "jailbreak",
    "indirect_attack",
    "protected_material_text",
    "protected_material_code",
    "profanity",
    "blocklist",
    "filter_error",
    "unknown",
    "negative_feedback",
]
_CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
SEVERITIES = {"safe", "low", "medium", "high"}
# What a transcript does with a stored summary that cannot be read (the log says it "was ...").
TRANSCRIPT_UNREADABLE = "left out of a transcript (its messages are shown)"


def shown_user(pseudonyms: Pseudonyms, user_id: str) -> str:
    """What a viewer sees for a stored user id: the person's pseudonym, the same for both of
    their ids (so a reveal names their object id), or the id as stored when pseudonymization
    is off."""
    if not user_id:
        return ""
    return pseudonyms.of_person(user_id) if pseudonyms.enabled else user_id


class BadRequest(ValueError):
    """A filter or parameter the caller sent is invalid. `key` names its text (admin/texts.yaml,
    safe to show): a page says it in the reader's language; str() and the API, in English."""

    def __init__(self, key: str, **values: object) -> None:
        self.text = Text(key, values)
        super().__init__(self.text.plain())


def text_value(value: Any, name: str) -> str:
    """A text field as the caller sent it (JSON body, form or query), or "" when absent. Only a
    string of valid Unicode passes: JSON can carry a lone surrogate (`"\\ud800"`), which no
    store can encode, and a list or an object is not a user id or a reason."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest("error_field_not_a_string", name=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest("error_field_not_text", name=name) from exc
    return value


@dataclass(frozen=True)
class Filters:
    query: SummaryQuery
    text: str | None
    page_size: int
    continuation: str | None
    # The filters as given (for links to the next page and to exports).
    echo: dict[str, str]


def _flag(params: Mapping[str, str], name: str) -> bool | None:
    value = params.get(name, "").strip().lower()
    if value in ("", "any"):
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise BadRequest("error_field_not_a_flag", name=name)


# A calendar date (2026-11-21), alone or with a time and offset after `T`. Python also reads
# 20261121 or 2026-W47, where "up to the end of that day" would cut a day or a week short.
_DATE_FORM = re.compile(r"\d{4}-\d{2}-\d{2}(T\S+)?")
# An offset's `+` typed into a URL as it is arrives as a space: 2026-11-23T00:00 09:00.
_SPACED_OFFSET = re.compile(r"(T[\d:.]+) (\d{2}(:?\d{2})?)")


def _moment(params: Mapping[str, str], name: str, end_of_day: bool) -> datetime | None:
    value = _SPACED_OFFSET.sub(r"\1+\2", params.get(name, "").strip())
    if not value:
        return None
    if not _DATE_FORM.fullmatch(value):
        raise BadRequest("error_field_not_a_date", name=name)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest("error_field_not_a_date", name=name) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        # In UTC, as the stores compare. At the edges of the calendar there is no such time:
        # 0001-01-01T00:00+14:00 is before year 1 in UTC, and 9999-12-31 has no next day.
        moment = moment.astimezone(UTC)
        if end_of_day and "T" not in value:
            # `until=2026-11-21` means up to the end of that day.
            moment += timedelta(days=1)
    except OverflowError as exc:
        raise BadRequest("error_field_out_of_range", name=name) from exc
    return moment


def date_range(params: Mapping[str, str]) -> tuple[datetime | None, datetime | None]:
    """`since` and `until` as the stores compare them (`until` left out, a day alone ending at
    the next day's 00:00). A range reversed as typed holds nothing: said, rather than shown as
    an empty list or log."""
    since = _moment(params, "since", end_of_day=False)
    until = _moment(params, "until", end_of_day=True)
    # `until` is exclusive (a day's end is the next day's start): a From at or after it, one day
    # apart as typed (since=2026-11-25&until=2026-11-24) too, is after every moment To takes in.
    if since is not None and until is not None and since >= until:
        raise BadRequest("error_since_after_until")
    return since, until


# The conversation list's filters, as its form and links name them.
LIST_FILTERS = (
    "since",
    "until",
    "user",
    "tenant",
    "channel",
    "flagged",
    "category",
    "negative_feedback",
    "errors",
    "q",
)


def whole_number(value: str | None, default: int) -> int | None:
    """`value` written in ASCII digits (int() also takes "+5", " 5" and other scripts' digits,
    which no link of ours writes); None when it is not one. Empty: `default`."""
    if not value:
        return default
    if not (value.isascii() and value.isdigit()):
        return None
    # Past any range checked (and int() refuses thousands of digits).
    digits = value.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def parse_filters(params: Mapping[str, str], pseudonyms: Pseudonyms) -> Filters:
    names = [*LIST_FILTERS, "page_size"]
    for name, value in params.items():
        text_value(value, name)
    echo = {k: params[k].strip() for k in names if params.get(k, "").strip()}
    page_size = whole_number(params.get("page_size"), DEFAULT_PAGE_SIZE)
    if page_size is None:
        # "-1" or "2.5" is a number too: what is wanted is said, not only what was not.
        raise BadRequest("error_page_size_not_a_number", max=MAX_PAGE_SIZE)
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise BadRequest("error_page_size_range", max=MAX_PAGE_SIZE)
    category = params.get("category", "").strip() or None
    if category is not None and not _CATEGORY_NAME.fullmatch(category):
        raise BadRequest("error_category_name")
    text = params.get("q", "").strip() or None
    if text is not None and len(text) > MAX_QUERY_CHARS:
        raise BadRequest("error_search_too_long", max=MAX_QUERY_CHARS)
    user = params.get("user", "").strip()
    since, until = date_range(params)
    query = SummaryQuery(
        user_ids=person_ids(pseudonyms.user_id(user)) if user else None,
        # Theirs, and the shared conversations they wrote in, as their deletion and export find.
        with_shared=bool(user),
        tenant_id=params.get("tenant", "").strip() or None,
        channel_id=params.get("channel", "").strip() or None,
        since=since,
        until=until,
        flagged=True if category else _flag(params, "flagged"),
        flag_reason=category,
        negative_feedback=_flag(params, "negative_feedback"),
        has_errors=_flag(params, "errors"),
    )
    continuation = params.get("continuation", "").strip() or None
    return Filters(query, text, page_size, continuation, echo)


@dataclass
class ListResult:
    items: list[ConversationSummary]
    continuation: str | None
    # Conversations whose messages the text search read (0 without a search).
    scanned: int = 0


def searchable(text: str) -> str:
    """Text as the search compares it, the search text and what it looks in alike: NFKC, so that
    full-width ＶＰＮ is VPN and half-width ﾊﾟｽﾜｰﾄﾞ is パスワード; casefolded (NFKC again after
    it, as Unicode's NFKC_Casefold); without variation selectors. Only compared, never stored
    or shown: both stores hand their rows to this module, which does all the matching."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _VARIATION_SELECTORS.sub("", folded)


async def _text_matches(store: Store, summary: ConversationSummary, needle: str) -> bool:
    if needle in searchable(summary.title):
        return True
    messages = await store.recent_messages(
        summary.conversation_id, SEARCH_MESSAGES_PER_CONVERSATION
    )
    return any(needle in searchable(m.text or "") for m in messages)


async def _page(store: Store, filters: Filters, continuation: str | None) -> Page:
    """One store page from `continuation`. The stores raise ValueError for a continuation token
    that is not theirs: a 400 only when it is the token the caller sent. A stored summary that
    cannot be read is not the caller's doing either: the stores skip (and log) it, and any other
    ValueError is a fault of ours (a 500), never blamed on the token."""
    try:
        return await store.list_summaries(filters.query, filters.page_size, continuation)
    except ValueError as exc:
        if continuation is None or continuation != filters.continuation:
            raise
        raise BadRequest("error_continuation") from exc


async def list_conversations(
    store: Store, filters: Filters, max_scanned: int = SEARCH_MAX_CONVERSATIONS
) -> ListResult:
    """One page of the list, newest first. The store's continuation tokens stay opaque: with a
    text search a page holds the matches of whole store pages, so it may be a little longer or
    shorter than page_size, and a page with no match may still have a continuation. A search
    stops once it has read `max_scanned` conversations (after a whole store page)."""
    if filters.text is None:
        page = await _page(store, filters, filters.continuation)
        return ListResult(page.items, page.continuation)
    needle = searchable(filters.text)
    found: list[ConversationSummary] = []
    scanned = 0
    continuation = filters.continuation
    while True:
        page = await _page(store, filters, continuation)
        for summary in page.items:
            scanned += 1
            if await _text_matches(store, summary, needle):
                found.append(summary)
        continuation = page.continuation
        if continuation is None or len(found) >= filters.page_size or scanned >= max_scanned:
            return ListResult(found, continuation, scanned)


@dataclass(frozen=True)
class ExportedList:
    items: list[ConversationSummary]
    # False: more conversations may match than the export holds (its limit, or the bound on
    # what a text search reads).
    complete: bool
    # Where an export with the same filters goes on from, when the store can say (not when the
    # limit fell inside a store page).
    continuation: str | None
    scanned: int


async def conversations_to_export(
    store: Store,
    filters: Filters,
    limit: int,
    max_searched: int = EXPORT_SEARCH_MAX_CONVERSATIONS,
) -> ExportedList:
    """The conversations matching the filters, up to `limit` (exports). A text search reads
    the messages of about `max_searched` conversations at most (whole store pages), as a
    page's search reads a few hundred: without a bound, one export could read every
    conversation stored."""
    found: list[ConversationSummary] = []
    scanned = 0
    continuation = filters.continuation
    while True:
        remaining = max_searched - scanned
        page_size = MAX_PAGE_SIZE if filters.text is None else min(MAX_PAGE_SIZE, remaining)
        batch = Filters(filters.query, filters.text, page_size, continuation, filters.echo)
        result = await list_conversations(
            store, batch, max_scanned=min(SEARCH_MAX_CONVERSATIONS, remaining)
        )
        found.extend(result.items)
        scanned += result.scanned
        continuation = result.continuation
        if len(found) > limit:
            # The store's token goes on after its whole page, not after the limit's item.
            return ExportedList(found[:limit], False, None, scanned)
        searched_enough = filters.text is not None and scanned >= max_searched
        if continuation is None or len(found) == limit or searched_enough:
            return ExportedList(found, continuation is None, continuation, scanned)


async def transcript_summary(
    store: Store, conversation_id: str
) -> tuple[ConversationSummary | None, bool]:
    """The summary a transcript shows, and whether a stored one could not be read. The stores'
    `find_summary` raises pydantic's ValidationError for a summary that cannot be read (a caller
    that needs its owner must not guess one); a transcript shows its messages without it, and
    the summary is logged by the conversation's reference, never its text."""
    try:
        return await store.find_summary(conversation_id), False
    except ValidationError as exc:
        log_unreadable_summary(exc, conversation_id, TRANSCRIPT_UNREADABLE)
        return None, True


def summary_view(
    summary: ConversationSummary, pseudonyms: Pseudonyms, owners: Collection[str] | None = None
) -> dict[str, Any]:
    """`owners`: the stored ids of the person a list is filtered by; a conversation they do not
    own is listed because they wrote in it, so it is shared: it holds other people's messages."""
    shared = is_shared_owner(summary.user_id) or (
        owners is not None and summary.user_id not in owners
    )
    return {
        "id": summary.conversation_id,
        "user": shown_user(pseudonyms, summary.user_id),
        "tenant": summary.tenant_id,
        "channel": summary.channel_id,
        "title": summary.title,
        "createdAt": summary.created_at.isoformat(),
        "lastActivityAt": summary.last_activity_at.isoformat(),
        "messageCount": summary.message_count,
        "promptTokens": summary.prompt_tokens,
        "completionTokens": summary.completion_tokens,
        "filteredCount": summary.filtered_count,
        "errorCount": summary.error_count,
        "negativeFeedbackCount": summary.negative_feedback_count,
        "flagged": summary.flagged,
        "flagReasons": list(summary.flag_reasons),
        "shared": shared,
    }


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _citations(result: dict[str, Any]) -> list[dict[str, str | None]]:
    """Every code citation of one stored result: `citations` (a list) since answers could cite
    several sources, else the single `citation` that verdicts stored before then."""
    raw = result.get("citations")
    if not isinstance(raw, list):
        raw = [result.get("citation")]
    citations = [
        {"url": _str(c.get("url")), "license": _str(c.get("license"))}
        for c in raw
        if isinstance(c, dict)
    ]
    return [c for i, c in enumerate(citations) if c not in citations[:i]]


def _badges(verdict: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Badges from a stored filter verdict (chat/filters.py's JSON). Tolerant: missing or
    unknown keys are skipped, never an error; only results worth a reviewer's eye are kept:
    blocked, detected, a severity of low or above, or hits naming a blocklist or custom topic
    (a blocklist hit that blocked nothing still flags its conversation: the reviewer must see
    why)."""
    if not isinstance(verdict, dict):
        return [], []
    badges: list[dict[str, Any]] = []
    results = verdict.get("results")
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict):
            continue
        severity = _str(result.get("severity"))
        severity = severity if severity in SEVERITIES else None
        filtered = result.get("filtered") is True
        detected = result.get("detected") is True
        ids = result.get("blocklist_ids")
        hits = [str(i) for i in ids] if isinstance(ids, list) else []
        citations = _citations(result)
        if not (filtered or detected or severity in ("low", "medium", "high") or hits):
            continue
        badges.append(
            {
                "category": _str(result.get("category")) or "unknown",
                "source": _str(result.get("source")) or "unknown",
                "severity": severity,
                "filtered": filtered,
                "detected": detected,
                "blocklistIds": hits,
                "citations": citations,
                # The first, as the API said before answers could cite several sources.
                "citation": citations[0] if citations else None,
            }
        )
    errors: list[dict[str, Any]] = []
    raw_errors = verdict.get("errors")
    for error in raw_errors if isinstance(raw_errors, list) else []:
        if isinstance(error, dict):
            errors.append(
                {
                    "source": _str(error.get("source")) or "unknown",
                    "code": _str(error.get("code")) or "unknown",
                    "message": _str(error.get("message")) or "",
                }
            )
    return badges, errors


def message_view(message: Message, pseudonyms: Pseudonyms) -> dict[str, Any]:
    badges, filter_errors = _badges(message.filter)
    feedback = message.feedback
    return {
        "id": message.id,
        "seq": message.seq,
        "role": message.role.value,
        "user": shown_user(pseudonyms, message.user_id),
        "text": message.text,
        "withheldText": message.withheld_text,
        "locale": message.locale,
        "createdAt": message.created_at.isoformat(),
        "status": message.status.value,
        "tokens": message.tokens,
        "usage": {"prompt": message.usage.prompt, "completion": message.usage.completion}
        if message.usage
        else None,
        "deployment": message.deployment,
        "latencyMs": message.latency_ms,
        "finishReason": message.finish_reason,
        "filtered": bool(isinstance(message.filter, dict) and message.filter.get("filtered")),
        "badges": badges,
        "filterErrors": filter_errors,
        "feedback": {
            "reaction": feedback.reaction,
            "text": feedback.text,
            "at": feedback.at.isoformat(),
            # Who gave it, as users are shown (in a group chat anyone may rate any answer);
            # None for feedback stored before raters were recorded.
            "rater": shown_user(pseudonyms, feedback.user_id) if feedback.user_id else None,
        }
        if feedback
        else None,
        "error": message.error,
        "correlationId": message.correlation_id,
        # The user deleted (status `withdrawn`, no text left) or edited it in their channel; on
        # an answer: they did so to its prompt, and it left the model's context.
        "revisedAt": message.revised_at.isoformat() if message.revised_at else None,
        "promptChanged": bool(message.prompt_changed),
    }
