"""How long a SQLite store write takes: on the event loop with the checkpoint thread (the
default), and on the worker thread alone.

    python -m bench.store_writes [--writes 4000] [--rate 300] [--rounds 2]

Writes messages (about 1 kB of text each, over 64 conversations) through `SqliteStore`, one at a
time at random intervals averaging 1/rate seconds (300 a second is about what the bench's
latency phase asks of the store: some 100 turns a second, three writes each), and times each
`add_message` from the event loop: the statements and the commit, plus the hop to the worker
thread and back when the call goes there. It also notes the largest size the write-ahead log
reached and where the writes ran. Each round runs both ways on a fresh file, alternating:
without the checkpoint thread (every call on the worker, which checkpoints in the commit that
fills the log past 1,000 pages: SQLite's default) and with it (calls on the loop unless they
would wait). Prints the distributions and writes them as JSON
(bench/results/store_writes.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from storage.models import Message, Role
from storage.sqlite import CHECKPOINT_EVERY_SECONDS, SqliteStore

MODES = {
    "worker alone, checkpoints in its commits": None,
    "loop, with the checkpoint thread": CHECKPOINT_EVERY_SECONDS,
}
CONVERSATIONS = 64


async def _time_writes(
    store: SqliteStore, log: Path, writes: int, rate: float, rng: random.Random
) -> tuple[list[float], list[float], int]:
    """Each write's time in ms, those that ran on the loop, and the largest size the
    write-ahead log reached."""
    seqs = [0] * CONVERSATIONS
    text = "words " * 150
    took: list[float] = []
    on_loop: list[float] = []
    largest_log = 0
    for number in range(writes):
        conversation = rng.randrange(CONVERSATIONS)
        seqs[conversation] += 1
        message = Message(
            id=f"m{number}",
            conversation_id=f"c{conversation}",
            seq=seqs[conversation],
            role=Role.USER if number % 2 else Role.ASSISTANT,
            text=text,
            user_id=f"u{conversation}",
        )
        ran_on_loop = store.short_calls_on_loop
        started = time.perf_counter()
        await store.add_message(message)
        took.append((time.perf_counter() - started) * 1000)
        if store.short_calls_on_loop > ran_on_loop:
            on_loop.append(took[-1])
        # A stat of a local file, between writes and outside their timing.
        largest_log = max(largest_log, log.stat().st_size)  # noqa: ASYNC240
        await asyncio.sleep(rng.expovariate(rate))
    return took, on_loop, largest_log


def _summary(took: list[float], on_loop: list[float], largest_log: int) -> dict[str, Any]:
    ordered = sorted(took)
    count = len(ordered)
    return {
        "writes": count,
        "p50_ms": round(ordered[count // 2], 3),
        "p99_ms": round(ordered[int(count * 0.99)], 3),
        "p999_ms": round(ordered[int(count * 0.999)], 3),
        "max_ms": round(ordered[-1], 3),
        "over_5_ms": sum(1 for ms in ordered if ms > 5),
        # How long the event loop itself was held by a write.
        "max_ms_on_loop": round(max(on_loop), 3) if on_loop else None,
        "over_5_ms_on_loop": sum(1 for ms in on_loop if ms > 5),
        "largest_log_mib": round(largest_log / 2**20, 1),
    }


async def run(writes: int, rate: float, rounds: int, seed: int) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for round_number in range(rounds):
        for mode, every in MODES.items():
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "chat.db"
                store = SqliteStore(path, checkpoint_every_seconds=every)
                await store.open()
                try:
                    rng = random.Random(seed + round_number)
                    log = path.with_name(path.name + "-wal")
                    summary = _summary(*await _time_writes(store, log, writes, rate, rng))
                    summary["ran_on_loop"] = store.short_calls_on_loop
                    summary["ran_on_worker"] = store.short_calls_on_worker
                finally:
                    await store.close()
            results[mode].append(summary)
            print(f"round {round_number + 1}, {mode}: {summary}", flush=True)
    return {"writes_per_round": writes, "rate_per_second": rate, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_writes", description=__doc__)
    parser.add_argument("--writes", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/store_writes.json"))
    args = parser.parse_args()
    report = asyncio.run(run(args.writes, args.rate, args.rounds, args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
