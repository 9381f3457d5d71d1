"""Our app, as `python app.py` runs it, plus one benchmark route: `GET /bench/stats` answers the
store operations counted at the store boundary (every call into the SQLite store, whoever made
it: chat service, controls, dialogs) and the process's peak RSS. Each process also writes its
counts when it stops (bench/worker_counts.py): with APP_WORKERS a request reaches one worker.

    python -m bench.app_server      (settings from the environment, like app.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

import app as app_module
from bench.load import percentile
from bench.worker_counts import write_counts
from bot.peers import WorkerGroup
from storage.base import READ_OPERATIONS, WRITE_OPERATIONS, Store

# Counted per turn: the data operations, less the hourly retention purge.
OPERATIONS = (READ_OPERATIONS | WRITE_OPERATIONS) - {"purge_expired"}


class CountingStore:
    """Wraps the app's store (through `create_app(store_wrapper=...)`): counts the calls and time
    of every store operation, whoever makes it (chat service, controls, dialogs), and forwards
    everything unchanged."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        STORES.append(self)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in OPERATIONS:
            return attribute

        @functools.wraps(attribute)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            started = time.perf_counter()
            try:
                return await attribute(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started

        return counted


STORES: list[CountingStore] = []


LAGS: list[tuple[float, float]] = []  # (time.monotonic(), lag ms)
GC_PAUSES: list[tuple[float, int, float]] = []  # (time.monotonic(), generation, pause ms)
_gc_started = 0.0


def _time_gc(phase: str, info: dict[str, int]) -> None:
    """Garbage collector pauses stop the whole process: they show as bot overhead."""
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        pause = (time.perf_counter() - _gc_started) * 1000
        GC_PAUSES.append((time.monotonic(), info["generation"], pause))
        del GC_PAUSES[:-100_000]


async def _watch_loop_lag(app: web.Application) -> Any:
    """Event-loop lag: how late a 10 ms sleep wakes up (a blocked or saturated loop shows)."""

    async def watch() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            LAGS.append((time.monotonic(), (time.perf_counter() - started - 0.01) * 1000))
            del LAGS[:-100_000]

    task = asyncio.create_task(watch())
    yield
    task.cancel()


def rss_kib() -> dict[str, int]:
    """Current and peak resident set size of this process (Linux /proc)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                values[key] = int(rest.split()[0])
    return values


def _short_calls() -> Counter[str]:
    """The SQLite store's short calls: run on the loop, or on its worker thread."""
    short_calls: Counter[str] = Counter()
    for store in STORES:
        short_calls["on_loop"] += getattr(store, "short_calls_on_loop", 0)
        short_calls["on_worker"] += getattr(store, "short_calls_on_worker", 0)
    return short_calls


async def _write_final_counts(app: web.Application) -> None:
    """After the drain: this process's store calls and hand-overs, for `final_counts`."""
    peers = app.get(app_module.PEERS)
    counts = {
        "store_short_calls": dict(_short_calls()),
        "peers": dict(peers.counts) if peers is not None else {},
    }
    write_counts(app[app_module.SETTINGS].data_dir, counts)


async def stats(request: web.Request) -> web.Response:
    queue = request.app[app_module.TURNS]
    # Taken before the flush: a turn that ends during it settles after it, unwritten.
    in_flight = queue.in_flight
    if request.query.get("flush"):
        # What the quota settlements hold back is written now, to be counted with the turns
        # that made it (they would write it within two minutes).
        await request.app[app_module.QUOTAS].flush()
    calls: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for store in STORES:
        calls.update(store.calls)
        seconds.update(store.seconds)
    short_calls = _short_calls()
    return web.json_response(
        {
            "store_calls": dict(calls),
            "store_seconds": dict(seconds),
            "store_short_calls": dict(short_calls),
            "reads": sum(v for k, v in calls.items() if k in READ_OPERATIONS),
            "writes": sum(v for k, v in calls.items() if k in WRITE_OPERATIONS),
            "rss_kib": rss_kib(),
            "turns_in_flight": in_flight,
            # Since `?since=` (time.monotonic(): the same clock in every process on Linux).
            "loop_lag_ms": _lag_summary(float(request.query.get("since", "0"))),
            "gc_pauses": _gc_summary(float(request.query.get("since", "0"))),
        }
    )


def _lag_summary(since: float) -> dict[str, float]:
    lags = sorted(lag for at, lag in LAGS if at >= since)
    if not lags:
        return {}
    return {
        "samples": len(lags),
        "p50": round(percentile(lags, 50), 2),
        "p99": round(percentile(lags, 99), 2),
        "max": round(lags[-1], 2),
    }


def _gc_summary(since: float) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for generation in (0, 1, 2):
        pauses = [p for at, g, p in GC_PAUSES if at >= since and g == generation]
        if pauses:
            summary[f"gen{generation}"] = {
                "count": len(pauses),
                "total_ms": round(sum(pauses), 1),
                "max_ms": round(max(pauses), 2),
            }
    return summary


def main() -> None:
    import os
    import sys

    if os.environ.get("BENCH_SWITCH_INTERVAL"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    settings = app_module.load_settings()
    app_module.configure_logging(settings.log_level)

    def build(workers: WorkerGroup | None) -> web.Application:
        application = app_module.create_app(settings, store_wrapper=CountingStore, workers=workers)
        application.router.add_get("/bench/stats", stats)
        application.cleanup_ctx.append(_watch_loop_lag)
        # on_cleanup runs after the app's own clean-up (the drain) in aiohttp.
        application.on_cleanup.append(_write_final_counts)
        return application

    gc.callbacks.append(_time_gc)
    app_module.serve(build, settings)


if __name__ == "__main__":
    main()
