"""The soak machinery, run for a few seconds with tiny numbers: it drives turns through injected
faults, classifies every one and reports (no timing asserts; `make soak` runs ten minutes)."""

from __future__ import annotations

from pathlib import Path

from bench.soak import Knobs, soak


async def test_short_soak_reports_every_turn_and_loses_none(tmp_path: Path) -> None:
    report = await soak(
        Knobs(seconds=8, users=3, phase_seconds=1, seed=7, report=tmp_path / "soak.json")
    )
    assert report.attempted > 0
    assert report.answered + report.notices + report.errors_by_kind["channel:delivery_failed"] >= (
        report.attempted - report.lost
    )
    assert report.answered > 0
    assert report.lost == 0, report.lost_examples
    assert report.duplicates == 0
    assert sum(report.phases.values()) == report.attempted
    summary = report.to_json()
    assert set(summary) >= {"attempted", "answered", "notices", "lost", "duplicates"}
    assert "errors_by_kind" in summary
