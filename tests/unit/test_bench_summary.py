"""bench.summary: the README's ranges come from the runs' JSON."""

from __future__ import annotations

import json
from pathlib import Path

from bench.summary import runs_since, summarize


def write_run(results: Path, name: str, at: str, ratio: float, p99: float) -> None:
    run = {
        "generated_at": at,
        "summary": {"throughput_ratio": ratio, "bot_overhead_p99_ms": p99},
        "stock": {"sweep": [{"concurrency": 32, "cpu_ms_per_turn": {"bot": 20.0}}]},
    }
    (results / f"{name}.json").write_text(json.dumps(run), encoding="utf-8")


def test_ranges_and_targets_met_come_from_the_runs_since_the_given_time(tmp_path: Path) -> None:
    write_run(tmp_path, "old", "2026-11-20T10:00:00Z", 2.0, 500.0)
    write_run(tmp_path, "b", "2026-11-23T10:00:00Z", 6.0, 19.5)
    write_run(tmp_path, "a", "2026-11-22T18:00:00Z", 8.5, 31.0)
    write_run(tmp_path, "latest", "2026-11-23T10:00:00Z", 6.0, 19.5)

    runs = runs_since("2026-11-22T15:44:00Z", tmp_path)
    lines = summarize(runs)

    assert [name for name, _ in runs] == ["a", "b"]
    assert lines[0] == "2 runs, a to b"
    assert "ratio, one process: 6-8.5 (2 runs)" in lines
    assert "stock CPU ms per turn at 32: 20-20 (2 runs)" in lines
    assert "ratio, two workers: not measured" in lines
    assert "overhead p99 at most 20 ms, one process: met in 1 of 2" in lines
