"""The ranges the README's performance table gives, computed from the runs' JSON rather than by
hand: `python -m bench.summary [--since 2026-11-22T15:44:00Z]`.

Every `bench/results/<name>.json` generated at or after `--since` (default: when the overhead got
its current definition) is read; `latest.json` is left out (it is a copy of one of them, or a
run without a name). Each line gives the lowest and highest value over those runs, and how many
runs met each target."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
# Runs before this measured the overhead against the bot's own measure of the model call.
CURRENT_OVERHEAD_SINCE = "2026-11-22T15:44:00Z"

Run = dict[str, Any]


def runs_since(since: str, results: Path = RESULTS) -> list[tuple[str, Run]]:
    found = []
    for path in sorted(results.glob("*.json")):
        if path.stem in ("latest", "store_writes"):
            continue
        run = json.loads(path.read_text(encoding="utf-8"))
        if "summary" in run and str(run.get("generated_at", "")) >= since:
            found.append((path.stem, run))
    return sorted(found, key=lambda pair: str(pair[1]["generated_at"]))


def _sweep_at(run: Run, section: str, concurrency: int) -> Run | None:
    block = run.get(section) or {}
    for level in block.get("sweep") or []:
        if level.get("concurrency") == concurrency:
            return dict(level)
    return None


def _value(run: Run, pick: Callable[[Run], Any]) -> float | None:
    try:
        value = pick(run)
    except (KeyError, TypeError, IndexError):
        return None
    return float(value) if isinstance(value, int | float) else None


def _range(values: Iterable[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "not measured"
    return f"{min(present):g}-{max(present):g} ({len(present)} runs)"


def _met(values: Iterable[float | None], meets: Callable[[float], bool]) -> str:
    present = [v for v in values if v is not None]
    return f"{sum(meets(v) for v in present)} of {len(present)}"


# What the table and the text below it give: (label, how to read it from a run).
FIGURES: list[tuple[str, Callable[[Run], Any]]] = [
    ("stock turns/s at 32", lambda r: r["summary"]["stock_turns_per_second"]),
    ("ours turns/s at 32, one process", lambda r: r["summary"]["ours_turns_per_second"]),
    ("ratio, one process", lambda r: r["summary"]["throughput_ratio"]),
    ("ratio, two workers", lambda r: r["summary"]["workers_throughput_ratio"]),
    ("overhead p99 ms, one process", lambda r: r["summary"]["bot_overhead_p99_ms"]),
    (
        "overhead p99 ms vs configured model, one process",
        lambda r: r["summary"]["bot_overhead_p99_ms_vs_configured_model"],
    ),
    ("overhead p99 ms, two workers", lambda r: r["summary"]["workers_bot_overhead_p99_ms"]),
    ("overhead p99 ms, all at once", lambda r: r["summary"]["bot_overhead_p99_ms_one_burst"]),
    ("peak RSS MiB, 1,000 conversations", lambda r: r["summary"]["peak_rss_mib"]),
    ("prompt tokens, last turn", lambda r: r["summary"]["prompt_tokens_last_turn"]),
    ("store writes per turn", lambda r: r["summary"]["store_writes_per_turn"]),
    ("store writes per turn, paced", lambda r: r["summary"]["store_writes_per_turn_paced"]),
    (
        "stock CPU ms per turn at 32",
        lambda r: (_sweep_at(r, "stock", 32) or {})["cpu_ms_per_turn"]["bot"],
    ),
    (
        "ours CPU ms per turn at 32",
        lambda r: (_sweep_at(r, "ours_model_0ms", 32) or {})["cpu_ms_per_turn"]["bot"],
    ),
    (
        "stock reply p50 ms at 1",
        lambda r: (_sweep_at(r, "stock", 1) or {})["reply_latency_ms"]["p50"],
    ),
    (
        "ours reply p50 ms at 1",
        lambda r: (_sweep_at(r, "ours_model_0ms", 1) or {})["reply_latency_ms"]["p50"],
    ),
    (
        "200-turn conversation, first turns p50 ms",
        lambda r: r["long_conversation"]["reply_latency_ms_first_turns_p50"],
    ),
    (
        "200-turn conversation, last turns p50 ms",
        lambda r: r["long_conversation"]["reply_latency_ms_last_turns_p50"],
    ),
]

TARGETS: list[tuple[str, str, Callable[[float], bool]]] = [
    ("ratio at least 10x, one process", "ratio, one process", lambda v: v >= 10),
    ("ratio at least 10x, two workers", "ratio, two workers", lambda v: v >= 10),
    ("overhead p99 at most 20 ms, one process", "overhead p99 ms, one process", lambda v: v <= 20),
    (
        "the same against the configured model latency",
        "overhead p99 ms vs configured model, one process",
        lambda v: v <= 20,
    ),
    (
        "overhead p99 at most 20 ms, two workers",
        "overhead p99 ms, two workers",
        lambda v: v <= 20,
    ),
]


def summarize(runs: list[tuple[str, Run]]) -> list[str]:
    if not runs:
        return ["no runs"]
    lines = [f"{len(runs)} runs, {runs[0][0]} to {runs[-1][0]}"]
    values = {label: [_value(run, pick) for _, run in runs] for label, pick in FIGURES}
    lines += [f"{label}: {_range(values[label])}" for label, _ in FIGURES]
    lines += [f"{label}: met in {_met(values[key], meets)}" for label, key, meets in TARGETS]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__)
    parser.add_argument("--since", default=CURRENT_OVERHEAD_SINCE)
    args = parser.parse_args(argv)
    print("\n".join(summarize(runs_since(args.since))))


if __name__ == "__main__":
    main()
