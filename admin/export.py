"""JSON and CSV exports. CSV cells that a spreadsheet would run as a formula are neutralized
(OWASP "CSV injection": a leading = + - @ tab or carriage return gets a leading apostrophe)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

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
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([safe_cell(row.get(column)) for column in columns])
    return out.getvalue()


def message_row(conversation_id: str, message: dict[str, Any]) -> dict[str, Any]:
    usage = message.get("usage") or {}
    feedback = message.get("feedback") or {}
    filters = [
        f"{b['source']}:{b['category']}:{b['severity'] or ('detected' if b['detected'] else '')}"
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
    }


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)
