"""JSON and CSV exports. CSV cells that a spreadsheet would run as a formula are neutralized
(OWASP "CSV injection": a leading = + - @ tab or carriage return gets a leading apostrophe)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from storage.models import AuditRecord

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

CONVERSATION_COLUMNS = [
    "id",
    "user",
    "tenant",
    "channel",
    "title",
    "createdAt",
    "lastActivityAt",
    "messageCount",
    "promptTokens",
    "completionTokens",
    "filteredCount",
    "errorCount",
    "negativeFeedbackCount",
    "flagged",
    "flagReasons",
    "shared",
]
MESSAGE_COLUMNS = [
    "conversationId",
    "seq",
    "id",
    "role",
    "user",
    "createdAt",
    "status",
    "text",
    "withheldText",
    "filters",
    "tokens",
    "promptTokens",
    "completionTokens",
    "deployment",
    "latencyMs",
    "feedbackReaction",
    "feedbackText",
    "feedbackRater",
    "error",
    "correlationId",
]


def safe_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = ";".join(str(v) for v in value)
    text = str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def to_csv(columns: list[str], rows: Iterable[dict[str, Any]]) -> str:
    return csv_header(columns) + csv_rows(columns, rows)


# First in a CSV download: the byte order mark tells a spreadsheet the file is UTF-8. Excel
# reads a CSV without it in the system's code page (Shift JIS on Japanese Windows), garbling
# every Japanese title and message.
UTF8_BOM = "\ufeff"


def csv_header(columns: list[str]) -> str:
    """The start of `to_csv` (the byte order mark and the column names); `csv_rows` the rest,
    so a long export goes out in pieces."""
    return UTF8_BOM + _csv_lines([columns])


def csv_rows(columns: list[str], rows: Iterable[dict[str, Any]]) -> str:
    return _csv_lines([safe_cell(row.get(column)) for column in columns] for row in rows)


def _csv_lines(lines: Iterable[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(lines)
    return out.getvalue()


def message_row(conversation_id: str, message: dict[str, Any]) -> dict[str, Any]:
    usage = message.get("usage") or {}
    feedback = message.get("feedback") or {}
    # source:category:level[ids][:filtered], e.g. "prompt:blocklist:[CompanyWatchList]".
    filters = [
        f"{b['source']}:{b['category']}:{b['severity'] or ('detected' if b['detected'] else '')}"
        + (f"[{','.join(b['blocklistIds'])}]" if b.get("blocklistIds") else "")
        + (":filtered" if b["filtered"] else "")
        for b in message.get("badges", [])
    ]
    return {
        **message,
        "conversationId": conversation_id,
        "filters": filters,
        "promptTokens": usage.get("prompt"),
        "completionTokens": usage.get("completion"),
        "feedbackReaction": feedback.get("reaction"),
        "feedbackText": feedback.get("text"),
        "feedbackRater": feedback.get("rater"),
    }


# What an audit record's detail says of the administrator who acted (their name, how they signed
# in): left out of a person's data export, with the actor's id and address (`audit_entry`).
_ACTOR_DETAIL = ("actorName", "via")


def audit_entry(record: AuditRecord) -> dict[str, Any]:
    """An audit record about a person as their data export holds it: when, what was done and
    why (the reason given, the outcome and counts), and whether the app (`system`: a refusal) or
    an administrator did it, but not which administrator nor from which address. Those are the
    administrator's personal data, not the person's (on access to such logs, the Court of
    Justice's Pankki S judgment, C-579/21); `id` finds the whole record in the audit log."""
    doc = record.to_doc()
    return {
        "id": doc["id"],
        "at": doc["at"],
        "action": doc["action"],
        "target": doc.get("target", ""),
        "actor": "system" if record.actor == "system" else "administrator",
        "detail": _without_administrators(doc.get("detail", {})),
    }


def _without_administrators(detail: dict[str, Any]) -> dict[str, Any]:
    """`detail` without what names an administrator: their name and sign-in (`_ACTOR_DETAIL`),
    and the actor filter of an audit log read (`read_audit`, `export_audit`: whose actions an
    administrator looked up, while looking this person up)."""
    kept = {k: v for k, v in detail.items() if k not in _ACTOR_DETAIL}
    filters = kept.get("filters")
    if isinstance(filters, dict) and "actor" in filters:
        kept["filters"] = {k: v for k, v in filters.items() if k != "actor"}
    return kept


AUDIT_COLUMNS = [
    "id",
    "at",
    "actor",
    "actorName",
    "action",
    "target",
    "subjects",
    "outcome",
    "reason",
    "detail",
    "clientIp",
]


def audit_row(doc: dict[str, Any]) -> dict[str, Any]:
    """An audit record (its stored document) as a row of the audit log's CSV export: the
    fields most searched for in cells of their own, and the whole detail as JSON."""
    detail = doc.get("detail") or {}
    return {
        **doc,
        "actorName": detail.get("actorName"),
        "outcome": detail.get("outcome"),
        "reason": detail.get("reason"),
        "detail": json.dumps(detail, ensure_ascii=False, sort_keys=True),
    }


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


class StreamedJson:
    """`to_json` of one object, the same text, written in pieces: its leading fields at once, then
    lists item by item, so a long list is never held whole (a user's data export). Call `begin`,
    then `open_list`, `item`... and `close_list` for each list, any `field` after them, then
    `end`."""

    def __init__(self) -> None:
        self._items = 0  # in the list being written

    def begin(self, fields: dict[str, Any]) -> str:
        """The object up to the end of `fields` (at least one: `{}` has no end to cut off)."""
        if not fields:
            raise ValueError("begin with at least one field")
        return to_json(fields).removesuffix("\n}")

    def open_list(self, key: str) -> str:
        self._items = 0
        return f",\n  {json.dumps(key, ensure_ascii=False)}: ["

    def item(self, value: Any) -> str:
        # indent=2 one level deeper: JSON escapes a newline inside a string, so every newline
        # in the text is between tokens.
        text = to_json(value).replace("\n", "\n    ")
        self._items += 1
        return ("\n    " if self._items == 1 else ",\n    ") + text

    def close_list(self) -> str:
        return "\n  ]" if self._items else "]"

    def field(self, key: str, value: Any) -> str:
        """A field after the lists (one known only once they are written: their counts)."""
        text = to_json(value).replace("\n", "\n  ")
        return f",\n  {json.dumps(key, ensure_ascii=False)}: {text}"

    def end(self) -> str:
        return "\n}"


# A user's data export (admin/web.py `_export_user`) says first what it holds, for the person
# who receives it and whoever answers their request. The version changes when a section is
# added, removed or changes its meaning.
USER_EXPORT_SCHEMA_VERSION = 1
USER_EXPORT_SECTIONS: dict[str, str] = {
    "user": "the person, by the pseudonym the admin review and its audit log name them by",
    "exportedAt": "when this file was made (UTC, ISO 8601)",
    "storedIds": (
        "the ids their data was found under: each id their channels gave them (the Entra "
        "object id, and dl_<object id> through Azure's Direct Line)"
    ),
    "conversations": "the summaries of the conversations they own, as stored",
    "messages": (
        "their messages anywhere and every message of the conversations they own, as stored, "
        "each with its verdicts, usage and feedback (except feedback someone else gave on it, "
        "which is theirs)"
    ),
    "feedback": (
        "the feedback they gave on other people's answers in shared conversations: the "
        "reaction, comment and time, with the conversation and message id, never the message"
    ),
    "states": (
        "their saved dialog states: the usage-policy acceptance, a message waiting for it, and "
        "the welcome marker of their Teams one-to-one chat"
    ),
    "usage": "their quota usage documents of the last two days, as the store counts them",
    "audit": (
        "the audit records about them, newest first, this export's request included: time, "
        "action, reason and outcome, and whether the app or an administrator acted (not which "
        "administrator, nor from where)"
    ),
    "counts": "how many items each list above holds (at the end of the file)",
}
USER_EXPORT_COUNTS_NOTE = (
    "The number of items in each list is at the end of the file, under counts: it is known "
    "only once everything has been streamed. A download that failed part-way is broken off "
    "and has no counts."
)


def user_export_contents() -> dict[str, Any]:
    """The leading `contents` section of a user's data export: what each section holds."""
    return {
        "schemaVersion": USER_EXPORT_SCHEMA_VERSION,
        "sections": dict(USER_EXPORT_SECTIONS),
        "counts": USER_EXPORT_COUNTS_NOTE,
    }
