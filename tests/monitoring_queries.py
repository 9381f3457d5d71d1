"""What the queries in infra/monitoring/*.kql read from Application Insights: for each statement,
the table, the item names it selects (`name == "…"`, `name in (…)`, `message == "…"`) and the
customDimensions keys it reads. Enough KQL for the way those queries are written (one source
table per `let` statement), not a KQL parser."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from chat.telemetry import ANY_LOG_LINE

QUERIES_DIR = Path(__file__).resolve().parents[1] / "infra" / "monitoring"
TABLES = ("requests", "dependencies", "traces", "exceptions", "customMetrics", "customEvents")

_COMMENT = re.compile(r"//[^\n]*")
_STRING = r'"((?:[^"\\]|\\.)*)"'
_KEY = re.compile(r"customDimensions(?:\[\s*" + _STRING + r"\s*\]|\.([A-Za-z_]\w*))")
_NAME_IS = re.compile(r"\b(name|message)\s*==\s*" + _STRING)
_NAME_IN = re.compile(r"\bname\s+in\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Read:
    query: str
    statement: str
    tables: frozenset[str]
    names: frozenset[str]
    keys: frozenset[str]


def queries() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(QUERIES_DIR.glob("*.kql"))}


def reads(name: str, text: str) -> list[Read]:
    found = []
    for statement in _COMMENT.sub("", text).split(";"):
        tables = frozenset(t for t in TABLES if re.search(rf"\b{t}\b", statement))
        names = {m.group(2) for m in _NAME_IS.finditer(statement)}
        for listed in _NAME_IN.finditer(statement):
            names |= set(re.findall(_STRING, listed.group(1)))
        keys = frozenset(a or b for a, b in _KEY.findall(statement))
        found.append(Read(name, statement.strip(), tables, frozenset(names), keys))
    return found


def problems(
    name: str, text: str, exported: Mapping[str, Mapping[str, frozenset[str]]]
) -> list[str]:
    """Where a query reads something `exported` (table -> item name -> customDimensions keys)
    does not hold, or reads a column that cannot mean what the query wants of it."""
    found = []
    for read in reads(name, text):
        where = f"{name}: {read.statement.splitlines()[0]}"
        if read.keys and len(read.tables) != 1:
            found.append(f"{where}: reads customDimensions of {sorted(read.tables)} at once")
            continue
        for table in read.tables:
            items = exported.get(table, {})
            if table == "requests":
                # Named per route; the app sets no customDimensions on them.
                if read.keys:
                    found.append(f"{where}: requests carry no customDimensions {set(read.keys)}")
                continue
            selected = read.names or ({ANY_LOG_LINE} if read.keys else set())
            for item in selected:
                if item not in items:
                    found.append(f"{where}: nothing is exported to {table} as {item!r}")
                    continue
                unknown = read.keys - items[item]
                if unknown:
                    found.append(f"{where}: {table} {item!r} has no {sorted(unknown)}")
            if table == "customMetrics" and re.search(r"\bvalue\b|percentile", read.statement):
                found.append(
                    f"{where}: a customMetrics row holds an interval's aggregate "
                    "(valueSum, valueCount, valueMin, valueMax), not one value"
                )
            if table == "dependencies" and read.names and "resultCode" in read.statement:
                found.append(f"{where}: the app's own spans' resultCode is always '0'")
    return found
