"""What each process of the benchmarked app counted, written when it stops and added up by the
benchmark. With APP_WORKERS, `GET /bench/stats` reaches one worker only; these files reach all."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

KINDS = ("store_short_calls", "peers")


def write_counts(data_dir: Path, counts: dict[str, dict[str, int]]) -> None:
    (data_dir / f"bench-worker-{os.getpid()}.json").write_text(json.dumps(counts))


def final_counts(data_dir: Path) -> dict[str, dict[str, int]]:
    """The counts every process of a stopped app wrote, added up by kind."""
    totals: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
    for path in sorted(data_dir.glob("bench-worker-*.json")):
        counts = json.loads(path.read_text())
        for kind, total in totals.items():
            total.update(counts.get(kind, {}))
    return {kind: dict(total) for kind, total in totals.items()}
