"""`python -m bench`: the full turn over real HTTP, against stock botbuilder, in one run.

Starts, all on loopback: the channel (local OpenID provider + recording connector, in this
process), the simulator in its own process, our app (`bench.app_server`: app.py plus a store call
counter) and the stock botbuilder echo bot (`bench.stock_echo_bot`). Then:

1. stock echo bot, closed-loop load at each concurrency of the sweep;
2. our app with a 0 ms model: the same sweep (full turn: history, model call, persistence, reply),
   optionally under py-spy; then one long conversation (prompt tokens at turn 1 .. N);
3. our app with the simulated model latency: bot overhead at the latency concurrency, store
   operations per turn (back to back, and with a person's pause between turns), then
   `--memory-conversations` conversations at once for peak RSS.

Writes `<out>/<name>.json` and `<out>/<name>.png`. Targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.channel import BENCH_APP_ID, BENCH_APP_PASSWORD, Channel
from bench.load import LoadResult, drive, percentile
from bench.processes import (
    PROJECT_ROOT,
    Service,
    free_port,
    machine,
    process_cpu_seconds,
    process_rss_kib,
    process_tree_cpu_seconds,
)
from bench.worker_counts import final_counts
from simulator.server import timing_key
from storage.ids import safe_id

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
# How long the paced phase's person reads an answer before the next message (as before the
# settlements' hold depended on the room left, for runs to compare).
PACED_PAUSE_SECONDS = 5.0
LONG_TEXT = (
    "Please summarise our travel policy for a trip to the Osaka office, including per diem, "
    "hotel limits and how to book trains. [sim:long]"
)


@dataclass
class Options:
    sweep: list[int] = field(default_factory=lambda: [1, 8, 32, 64])
    turns: int = 15
    # The same conversations for both, so the ratio compares like with like.
    stock_turns: int = 15
    ratio_concurrency: int = 32
    latency_concurrency: int = 32
    latency_turns: int = 20
    model_latency_ms: float = 300.0
    start_spread_ms: float = 300.0
    workers: int = 2
    tokens_per_second: float = 0.0
    # A phase whose answers stream (the Web Chat channel) at this speed; 0 skips it.
    streaming_tokens_per_second: float = 50.0
    streaming_turns: int = 10
    memory_conversations: int = 1000
    memory_turns: int = 2
    paced_conversations: int = 4
    paced_turns: int = 3
    long_turns: int = 200
    time_limit: float = 60.0
    profile: bool = True
    out: Path = RESULTS_DIR
    name: str = "latest"
    chart: bool = True


def parse_args(argv: list[str] | None = None) -> Options:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", default=env("BENCH_SWEEP", "1,8,32,64"))
    parser.add_argument("--turns", type=int, default=int(env("BENCH_TURNS", "15")))
    parser.add_argument(
        "--stock-turns", type=int, default=None, help="default: the same as --turns"
    )
    parser.add_argument("--ratio-concurrency", type=int, default=32)
    parser.add_argument("--latency-concurrency", type=int, default=32)
    parser.add_argument("--latency-turns", type=int, default=int(env("BENCH_LATENCY_TURNS", "20")))
    parser.add_argument(
        "--model-latency-ms", type=float, default=float(env("BENCH_MODEL_LATENCY_MS", "300"))
    )
    parser.add_argument(
        "--start-spread-ms",
        type=float,
        default=None,
        help="the latency phase's conversations start spread over this (default: the model "
        "latency); a second run starts them all at once",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env("BENCH_WORKERS", "2")),
        help="also measure the app with this many APP_WORKERS (1: skip)",
    )
    parser.add_argument(
        "--tokens-per-second", type=float, default=float(env("BENCH_TOKENS_PER_SECOND", "0"))
    )
    parser.add_argument(
        "--streaming-tokens-per-second",
        type=float,
        default=50.0,
        help="the streamed (Web Chat) latency phase's answer speed; 0 skips that phase",
    )
    parser.add_argument("--streaming-turns", type=int, default=10)
    parser.add_argument(
        "--memory-conversations",
        type=int,
        default=int(env("BENCH_MEMORY_CONVERSATIONS", "1000")),
    )
    parser.add_argument("--memory-turns", type=int, default=2)
    parser.add_argument(
        "--paced-conversations",
        type=int,
        default=4,
        help="conversations whose turns come a few seconds apart, for the store operations "
        "a turn costs at a person's pace (0: skip)",
    )
    parser.add_argument("--paced-turns", type=int, default=3)
    parser.add_argument("--long-turns", type=int, default=int(env("BENCH_LONG_TURNS", "200")))
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per phase")
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        default=env("BENCH_PROFILE", "1") not in ("", "0"),
        help="skip the py-spy run (it needs ptrace)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="latest")
    parser.add_argument("--no-chart", dest="chart", action="store_false")
    args = parser.parse_args(argv)
    sweep = sorted({int(c) for c in str(args.sweep).split(",") if c.strip()})
    return Options(
        sweep=sweep,
        turns=args.turns,
        stock_turns=args.stock_turns if args.stock_turns is not None else args.turns,
        ratio_concurrency=args.ratio_concurrency,
        latency_concurrency=args.latency_concurrency,
        latency_turns=args.latency_turns,
        model_latency_ms=args.model_latency_ms,
        start_spread_ms=(
            args.model_latency_ms if args.start_spread_ms is None else args.start_spread_ms
        ),
        workers=args.workers,
        tokens_per_second=args.tokens_per_second,
        streaming_tokens_per_second=args.streaming_tokens_per_second,
        streaming_turns=args.streaming_turns,
        memory_conversations=args.memory_conversations,
        memory_turns=args.memory_turns,
        paced_conversations=args.paced_conversations,
        paced_turns=args.paced_turns,
        long_turns=args.long_turns,
        time_limit=args.time_limit,
        profile=args.profile,
        out=args.out,
        name=args.name,
        chart=args.chart,
    )


# --- the stacks under test

# What several workers must share instead of keeping per process (see config.py); local values
# for this run only.
WORKER_SECRETS = {
    "DIRECT_LINE_SECRET": "bench-direct-line-secret",
    "WEBCHAT_TOKEN_SECRET": secrets.token_urlsafe(32),
    "ADMIN_AUTH_MODE": "appservice",
    "ADMIN_SESSION_SECRET": secrets.token_urlsafe(32),
    "ADMIN_PSEUDONYM_KEY": secrets.token_urlsafe(32),
}


class OurStack:
    """Simulator process + our app process over a fresh SQLite file."""

    def __init__(
        self,
        label: str,
        channel: Channel,
        workdir: Path,
        opts: Options,
        ttft: float,
        workers: int = 1,
        tokens_per_second: float | None = None,
    ):
        self.label = label
        speed = opts.tokens_per_second if tokens_per_second is None else tokens_per_second
        self.data_dir = workdir / label
        sim_port, self.port = free_port(), free_port()
        self.sim_url = f"http://127.0.0.1:{sim_port}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.simulator = Service(
            f"simulator-{label}",
            [
                "-m",
                "simulator",
                "--port",
                str(sim_port),
                "--ttft-ms",
                str(ttft),
                "--tokens-per-second",
                str(speed),
            ],
            workdir,
        )
        self.app = Service(
            f"app-{label}",
            ["-m", "bench.app_server"],
            workdir,
            env={
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "LOG_LEVEL": "WARNING",
                "MicrosoftAppId": BENCH_APP_ID,
                "MicrosoftAppPassword": BENCH_APP_PASSWORD,
                "MicrosoftAppType": "MultiTenant",
                "BOT_OPENID_METADATA_URL": f"{channel.url}/.well-known/openidconfiguration",
                "BOT_LOGIN_AUTHORITY": channel.url,
                "AZURE_OPENAI_ENDPOINT": self.sim_url,
                "AZURE_OPENAI_API_KEY": "bench-key",
                "AZURE_OPENAI_DEPLOYMENT": "gpt-4o",
                "DATA_DIR": str(self.data_dir),
                # Counted, the realistic path (the store operations include it), but not
                # limiting: one bench user sends far more than a person's 30 messages a minute.
                # (0 would mean unlimited, and an unlimited user is not counted at all.)
                "QUOTA_USER_REQUESTS_PER_MINUTE": "100000000",
                "QUOTA_USER_TOKENS_PER_DAY": "100000000",
                "APP_WORKERS": str(workers),
                **(WORKER_SECRETS if workers > 1 else {}),
            },
        )

    @property
    def pids(self) -> dict[str, int]:
        return {"bot": self.app.pid, "simulator": self.simulator.pid}

    async def start(self) -> None:
        await self.simulator.start(f"{self.sim_url}/healthz")
        await self.app.start(f"{self.url}/healthz")

    async def stop(self) -> dict[str, int | None]:
        app_exit = await self.app.stop()
        sim_exit = await self.simulator.stop()
        return {"app_exit_code": app_exit, "simulator_exit_code": sim_exit}

    async def stats(
        self, session: aiohttp.ClientSession, since: float = 0.0, *, settled: bool = False
    ) -> dict[str, Any]:
        """Store call counters; waits until the app has finished every accepted turn.
        `settled`: the quota settlements still pending are written first, and counted."""
        query = f"since={since}" + ("&flush=1" if settled else "")
        for _ in range(300):
            async with session.get(f"{self.url}/bench/stats?{query}") as response:
                body: dict[str, Any] = await response.json()
            if body["turns_in_flight"] == 0:
                return body
            await asyncio.sleep(0.1)
        return body

    def stored_turns(self, conversation_ids: set[str]) -> dict[str, dict[str, Any]]:
        """Per incoming activity id: the answer's prompt tokens and model latency."""
        keys = [safe_id(f"test:{c}") for c in conversation_ids]
        db = sqlite3.connect(f"file:{self.data_dir / 'chat.db'}?mode=ro", uri=True)
        try:
            docs = []
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT doc FROM messages WHERE conversation_id IN ({marks})",  # noqa: S608
                    chunk,
                ).fetchall()
                docs += [json.loads(row[0]) for row in rows]
        finally:
            db.close()
        users = {d["id"]: d for d in docs if d.get("role") == "user"}
        turns: dict[str, dict[str, Any]] = {}
        for doc in docs:
            if doc.get("role") != "assistant" or doc.get("replyToId") not in users:
                continue
            activity_id = users[doc["replyToId"]].get("activityId")
            turns[str(activity_id)] = {
                "prompt_tokens": (doc.get("usage") or {}).get("prompt", 0),
                "model_ms": doc.get("latencyMs"),
            }
        return turns


class StockStack:
    def __init__(self, channel: Channel, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        assert channel.ca_file is not None
        self.service = Service(
            "stock-echo-bot",
            [
                "-m",
                "bench.stock_echo_bot",
                "--port",
                str(self.port),
                "--channel-url",
                channel.url,
                "--tls-url",
                channel.tls_url,
            ],
            workdir,
            env={"REQUESTS_CA_BUNDLE": str(channel.ca_file)},
        )

    async def start(self) -> None:
        await self.service.start(f"{self.url}/healthz")


# --- summaries


def summarize(result: LoadResult, model_ms: dict[str, float] | None = None) -> dict[str, Any]:
    latencies = [t.latency_ms for t in result.turns]
    summary: dict[str, Any] = {
        "target": result.target,
        "concurrency": result.concurrency,
        "turns_per_conversation": result.turns_per_conversation,
        "completed_turns": result.completed,
        "failed_turns": result.failed,
        "rejected_requests": result.rejected,
        "elapsed_s": round(result.elapsed, 3),
        "turns_per_second": round(result.turns_per_second, 1),
        "reply_latency_ms": _percentiles(latencies),
    }
    if model_ms is not None:
        # A turn whose model time is not known (NaN) is left out, not counted as 0.
        overheads = [t.latency_ms - model_ms.get(t.activity_id, 0.0) for t in result.turns]
        summary["bot_overhead_ms"] = _percentiles([o for o in overheads if not math.isnan(o)])
    return summary


LOAD_GENERATOR = "load_generator_and_channel"


def cpu_snapshot(pids: dict[str, int]) -> dict[str, tuple[int, float]]:
    """CPU seconds so far of each process under test (with its workers, if any) and of this
    one (load + channel; not its children, which are the processes under test)."""
    return {name: (pid, _cpu_seconds(name, pid)) for name, pid in pids.items()} | {
        LOAD_GENERATOR: (os.getpid(), _cpu_seconds(LOAD_GENERATOR, os.getpid()))
    }


def cpu_per_turn(before: dict[str, tuple[int, float]], turns: int) -> dict[str, Any]:
    """CPU milliseconds per completed turn, per process, since `before`."""
    return {
        "cpu_ms_per_turn": {
            name: round(1000 * (_cpu_seconds(name, pid) - seconds) / max(turns, 1), 2)
            for name, (pid, seconds) in before.items()
        }
    }


def _cpu_seconds(name: str, pid: int) -> float:
    return process_cpu_seconds(pid) if name == LOAD_GENERATOR else process_tree_cpu_seconds(pid)


async def measured_load(
    session: aiohttp.ClientSession,
    channel: Channel,
    bot: str,
    pids: dict[str, int],
    label: str,
    **load: Any,
) -> dict[str, Any]:
    """One closed-loop load on `bot`: its summary with the CPU per turn of `pids`, printed."""
    cpu = cpu_snapshot(pids)
    result = await drive(session, channel, bot, **load)
    summary = summarize(result) | cpu_per_turn(cpu, result.completed)
    print(_line(label, summary))
    return summary


def _percentiles(values: list[float]) -> dict[str, float]:
    return {
        f"p{q}": round(percentile(values, q), 2) if values else float("nan") for q in (50, 95, 99)
    } | {"max": round(max(values), 2) if values else float("nan")}


def store_ops_per_turn(before: dict[str, Any], after: dict[str, Any], turns: int) -> dict[str, Any]:
    calls = Counter(after["store_calls"])
    calls.subtract(Counter(before["store_calls"]))
    per_method = {k: round(v / max(turns, 1), 2) for k, v in sorted(calls.items()) if v}
    seconds = Counter(after.get("store_seconds", {}))
    seconds.subtract(Counter(before.get("store_seconds", {})))
    # Mean time from the call to its result (on the loop: the work; on the SQLite worker
    # thread: the queue behind it + the work).
    mean_ms = {k: round(1000 * seconds[k] / v, 2) for k, v in sorted(calls.items()) if v > 0}
    short = Counter(after.get("store_short_calls", {}))
    short.subtract(Counter(before.get("store_short_calls", {})))
    return {
        "turns": turns,
        "queries_per_turn": round((after["reads"] - before["reads"]) / max(turns, 1), 2),
        "writes_per_turn": round((after["writes"] - before["writes"]) / max(turns, 1), 2),
        "per_method": per_method,
        "mean_call_ms": mean_ms,
        "short_calls_on_loop": short["on_loop"],
        "short_calls_on_worker": short["on_worker"],
        "event_loop_lag_ms": after.get("loop_lag_ms", {}),
        "gc_pauses": after.get("gc_pauses", {}),
    }


# --- profiling


class Profiler:
    """py-spy sampling the app process (idle excluded); summarized by package and function."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Profiler:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.process = await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(self.pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--nonblocking",
            "--output",
            str(self.out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), timeout=30)


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Collapsed stacks -> share of samples by the package of the innermost frame (self time),
    by area anywhere on the stack (inclusive), and the top functions by self time."""
    if not raw.exists():
        return {"error": "py-spy produced no profile (is ptrace allowed here?)"}
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        by_function[leaf] += count
        by_package[_package(leaf)] += count
        for area in {_package(f) for f in frames}:
            inclusive[area] += count
    if not total:
        return {"error": "no samples"}

    def share(counter: Counter[str], n: int) -> list[list[Any]]:
        return [[k, round(100 * v / total, 1)] for k, v in counter.most_common(n)]

    return {
        "samples": total,
        "self_by_package_pct": share(by_package, 20),
        "inclusive_by_package_pct": share(inclusive, 25),
        "top_functions_self_pct": share(by_function, top),
    }


def _package(frame: str) -> str:
    """'func (path/to/file.py:12)' -> the top-level package or project folder of that file."""
    _, _, location = frame.rpartition("(")
    path = location.split(":")[0]
    if "site-packages/" in path:
        return path.split("site-packages/")[1].split("/")[0].removesuffix(".py")
    if "/lib/python3" in path:
        return "stdlib:" + path.rsplit("/", 1)[-1].removesuffix(".py")
    rel = path.removeprefix(str(PROJECT_ROOT) + "/")
    return rel.split("/")[0].removesuffix(".py") if "/" in rel else rel.removesuffix(".py")


# --- the run


async def run(opts: Options) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    opts.out.mkdir(parents=True, exist_ok=True)
    channel = Channel()
    await channel.start(workdir)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))
    report: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # Other work on the machine skews latency: the load average says how busy it was.
        "machine": machine() | {"load_average_at_start": os.getloadavg()},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
    }
    run_id = f"r{int(time.time())}"
    stack0: OurStack | None = None
    stack_latency: OurStack | None = None
    stock: StockStack | None = None
    try:
        # 1. stock botbuilder echo bot
        stock = StockStack(channel, workdir)
        await stock.start()
        bot = f"{stock.url}/api/messages"
        await drive(
            session,
            channel,
            bot,
            target="stock",
            concurrency=4,
            turns=3,
            run_id=f"{run_id}-stock-warm",
        )
        stock_sweep = [
            await measured_load(
                session,
                channel,
                bot,
                {"bot": stock.service.pid},
                "stock echo",
                target="stock",
                concurrency=c,
                turns=opts.stock_turns,
                run_id=f"{run_id}-stock-{c}",
                time_limit=opts.time_limit,
            )
            for c in opts.sweep
        ]
        report["stock"] = {
            "sweep": stock_sweep,
            "rss_kib": process_rss_kib(stock.service.pid),
            "exit_code": await stock.service.stop(),
        }

        # 2. ours, 0 ms model: throughput sweep, profile, long conversation
        stack0 = OurStack("model-0ms", channel, workdir, opts, ttft=0)
        await stack0.start()
        bot = f"{stack0.url}/api/messages"
        await drive(
            session, channel, bot, target="ours", concurrency=4, turns=3, run_id=f"{run_id}-warm"
        )
        ours_sweep = [
            await measured_load(
                session,
                channel,
                bot,
                stack0.pids,
                "ours (0 ms model)",
                target="ours",
                concurrency=c,
                turns=opts.turns,
                run_id=f"{run_id}-ours-{c}",
                time_limit=opts.time_limit,
            )
            for c in opts.sweep
        ]
        if opts.profile:
            # A separate run under py-spy, so sampling does not slow the measured sweep.
            raw_profile = workdir / "profile.raw"
            async with Profiler(stack0.app.pid, raw_profile):
                await drive(
                    session,
                    channel,
                    bot,
                    target="ours",
                    concurrency=opts.ratio_concurrency,
                    turns=opts.turns,
                    run_id=f"{run_id}-profile",
                    time_limit=opts.time_limit,
                )
            report["profile"] = summarize_profile(raw_profile)
            report["profile"]["phase"] = (
                f"ours, 0 ms model, {opts.ratio_concurrency} conversations x {opts.turns} turns"
            )
            if raw_profile.exists():
                shutil.copy(raw_profile, opts.out / f"{opts.name}-profile.txt")
        report["ours_model_0ms"] = {"sweep": ours_sweep}
        report["long_conversation"] = await long_conversation(
            session, channel, stack0, opts, run_id
        )
        report["ours_model_0ms"]["rss_kib"] = (await stack0.stats(session))["rss_kib"]
        report["ours_model_0ms"] |= await stack0.stop()
        stack0 = None

        # 3. ours, simulated model latency: overhead, store operations, memory
        stack_latency = OurStack(
            f"model-{int(opts.model_latency_ms)}ms", channel, workdir, opts, opts.model_latency_ms
        )
        await stack_latency.start()
        bot = f"{stack_latency.url}/api/messages"
        await drive(
            session, channel, bot, target="ours", concurrency=4, turns=2, run_id=f"{run_id}-warm2"
        )
        before = await stack_latency.stats(session, settled=True)
        latency, after = await latency_phase(
            session, channel, stack_latency, opts, f"{run_id}-lat", opts.start_spread_ms / 1000
        )
        report["ours_model_latency"] = latency
        report["store_ops"] = store_ops_per_turn(before, after, latency["completed_turns"])
        print(_line(f"ours ({opts.model_latency_ms:.0f} ms model, starts spread)", latency))
        # The same load with every conversation starting at once: in step with a constant
        # model latency, each round arrives as one burst of `latency_concurrency` turns.
        burst, after_burst = await latency_phase(
            session, channel, stack_latency, opts, f"{run_id}-burst", start_spread=0.0
        )
        burst["event_loop_lag_ms"] = after_burst.get("loop_lag_ms", {})
        report["ours_model_latency_burst"] = burst
        print(_line(f"ours ({opts.model_latency_ms:.0f} ms model, one burst)", burst))
        if opts.paced_conversations > 0:
            report["store_ops_paced"] = await paced_phase(
                session, channel, stack_latency, opts, f"{run_id}-paced"
            )
            print(
                f"  store writes per turn at a person's pace: "
                f"{report['store_ops_paced']['writes_per_turn']}"
            )

        memory = await drive(
            session,
            channel,
            bot,
            target="ours",
            concurrency=opts.memory_conversations,
            turns=opts.memory_turns,
            run_id=f"{run_id}-mem",
            time_limit=max(opts.time_limit, 120),
            reply_timeout=120,
        )
        stats = await stack_latency.stats(session)
        report["memory"] = summarize(memory) | {"app_rss_kib": stats["rss_kib"]}
        print(_line(f"ours ({opts.memory_conversations} conversations)", report["memory"]))
        report["ours_model_latency"] |= await stack_latency.stop()
        stack_latency = None

        # 4. the same latency, answers streamed as Web Chat gets them (typing activities with
        # streaminfo, then the final message): the path most users' turns take.
        if opts.streaming_tokens_per_second > 0:
            report["ours_model_latency_streaming"] = await streaming_phase(
                session, channel, workdir, opts, run_id
            )

        # 5. the same app with APP_WORKERS processes: throughput and overhead again
        if opts.workers > 1:
            report["ours_workers"] = await workers_phases(session, channel, workdir, opts, run_id)
    finally:
        for stack in (stack0, stack_latency):
            if stack is not None:
                await stack.stop()
        if stock is not None:
            await stock.service.stop()
        await session.close()
        await channel.stop()
    shutil.rmtree(workdir, ignore_errors=True)  # kept (logs) when the run failed
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["summary"] = headline(report, opts)
    return report


async def streaming_phase(
    session: aiohttp.ClientSession,
    channel: Channel,
    workdir: Path,
    opts: Options,
    run_id: str,
) -> dict[str, Any]:
    stack = OurStack(
        "model-streaming",
        channel,
        workdir,
        opts,
        opts.model_latency_ms,
        tokens_per_second=opts.streaming_tokens_per_second,
    )
    await stack.start()
    try:
        warm = await drive(
            session,
            channel,
            f"{stack.url}/api/messages",
            target="ours",
            concurrency=4,
            turns=2,
            run_id=f"{run_id}-warm-stream",
            channel_id="webchat",
        )
        updates_before = channel.stream_updates
        # The conversations start spread over one turn's length, as in the latency phase (there
        # the model's 300 ms): a streamed turn lasts as long as its answer streams (about 2.5 s),
        # and a 300 ms spread had all 32 start and end within 300 ms of each other every turn,
        # a burst whose queueing was most of this phase's overhead tail.
        spread = (
            percentile([t.latency_ms for t in warm.turns], 50) / 1000
            if warm.turns
            else opts.start_spread_ms / 1000
        )
        streamed, _ = await latency_phase(
            session,
            channel,
            stack,
            opts,
            f"{run_id}-stream",
            spread,
            channel_id="webchat",
            turns=opts.streaming_turns,
        )
        streamed["tokens_per_second"] = opts.streaming_tokens_per_second
        streamed["stream_updates"] = channel.stream_updates - updates_before
        print(_line(f"ours ({opts.model_latency_ms:.0f} ms model, streamed)", streamed))
    finally:
        streamed_exit = await stack.stop()
    return streamed | streamed_exit


async def paced_phase(
    session: aiohttp.ClientSession,
    channel: Channel,
    stack: OurStack,
    opts: Options,
    run_id: str,
) -> dict[str, Any]:
    """Store operations per turn when a person reads each answer (`PACED_PAUSE_SECONDS`)
    before the next message. A quota settlement rides on the user's next counter update, as
    back to back, while the user has room before the limit (`controls.quotas`); the last one of
    each conversation is a write of its own, counted here: the counts are taken once what the
    turns left pending has been written."""
    pause = PACED_PAUSE_SECONDS
    before = await stack.stats(session, settled=True)
    result = await drive(
        session,
        channel,
        f"{stack.url}/api/messages",
        target="ours",
        concurrency=opts.paced_conversations,
        turns=opts.paced_turns,
        run_id=run_id,
        time_limit=max(opts.time_limit, opts.paced_turns * (pause + 5)),
        pause=pause,
    )
    after = await stack.stats(session, settled=True)
    ops = store_ops_per_turn(before, after, result.completed)
    return ops | {"pause_seconds": pause}


async def long_conversation(
    session: aiohttp.ClientSession,
    channel: Channel,
    stack: OurStack,
    opts: Options,
    run_id: str,
) -> dict[str, Any]:
    result = await drive(
        session,
        channel,
        f"{stack.url}/api/messages",
        target="ours",
        concurrency=1,
        turns=opts.long_turns,
        run_id=f"{run_id}-long",
        time_limit=max(opts.time_limit, 300),
        text=lambda _c, t: f"({t + 1}) {LONG_TEXT}",
    )
    await stack.stats(session)  # until the last answer is stored
    stored = stack.stored_turns({t.conversation_id for t in result.turns})
    by_index = {t.index + 1: stored.get(t.activity_id, {}) for t in result.turns}
    prompt = {i: int(v.get("prompt_tokens") or 0) for i, v in sorted(by_index.items())}
    marks = sorted({1, 2, 10, 50, 100, 200, len(prompt)} & set(prompt))
    window = 10 if len(result.turns) >= 20 else 1
    first = [t.latency_ms for t in result.turns[:window]]
    last = [t.latency_ms for t in result.turns[-window:]]
    return {
        "turns": result.completed,
        "failed_turns": result.failed,
        "prompt_tokens_at_turn": {str(i): prompt[i] for i in marks},
        "prompt_tokens_max": max(prompt.values(), default=0),
        "history_token_budget": 6000,
        "history_max_messages": 40,
        "reply_latency_ms_first_turns_p50": round(percentile(first, 50), 2),
        "reply_latency_ms_last_turns_p50": round(percentile(last, 50), 2),
        "prompt_tokens_by_turn": list(prompt.values()),
    }


async def latency_phase(
    session: aiohttp.ClientSession,
    channel: Channel,
    stack: OurStack,
    opts: Options,
    run_id: str,
    start_spread: float,
    *,
    channel_id: str = "test",
    turns: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The latency load on `stack`: its summary (overhead against the simulator's own time for
    each request, against the model time the bot measured, and against the configured one; CPU
    per turn) and the app's stats since it started. With `channel_id` "webchat" the answers
    stream; the simulator's time then holds the streaming too (the configured figure does not)."""
    started = time.monotonic()
    async with session.delete(f"{stack.sim_url}/_sim/stats") as response:
        response.raise_for_status()
    cpu = cpu_snapshot(stack.pids)
    result = await drive(
        session,
        channel,
        f"{stack.url}/api/messages",
        target="ours",
        concurrency=opts.latency_concurrency,
        turns=opts.latency_turns if turns is None else turns,
        run_id=run_id,
        time_limit=opts.time_limit,
        start_spread=start_spread,
        channel_id=channel_id,
    )
    after = await stack.stats(session, since=started, settled=True)
    async with session.get(f"{stack.sim_url}/_sim/timings") as response:
        timings: dict[str, float] = (await response.json())["timings"]
    # The model's own time: from the request's arrival at the simulator to its last byte. What
    # the bot measured around its model call also holds the bot's own work in that call (the
    # SDK, the event loop getting to the answer), so it is reported beside, not subtracted.
    simulated = {t.activity_id: timings.get(timing_key(t.text), math.nan) for t in result.turns}
    missing = sum(math.isnan(v) for v in simulated.values())
    stored = stack.stored_turns({t.conversation_id for t in result.turns})
    measured = {a: float(v["model_ms"] or 0) for a, v in stored.items()}
    configured = dict.fromkeys((t.activity_id for t in result.turns), opts.model_latency_ms)
    summary = summarize(result, simulated) | cpu_per_turn(cpu, result.completed)
    summary["start_spread_ms"] = round(start_spread * 1000, 1)
    summary["turns_without_simulator_timing"] = missing
    summary["bot_overhead_vs_bot_measured_model_ms"] = summarize(result, measured)[
        "bot_overhead_ms"
    ]
    summary["bot_overhead_vs_configured_model_ms"] = summarize(result, configured)[
        "bot_overhead_ms"
    ]
    summary["model_latency_ms_measured_by_bot"] = _percentiles(list(measured.values()))
    summary["model_latency_ms_in_simulator"] = _percentiles(
        [v for v in simulated.values() if not math.isnan(v)]
    )
    timed = [t for t in result.turns if not math.isnan(simulated[t.activity_id])]
    summary["overhead_samples_ms"] = sorted(
        round(t.latency_ms - simulated[t.activity_id], 2) for t in timed
    )
    # Round n = every conversation's turn n: shows whether a tail is a cold start or steady.
    by_round: dict[int, list[float]] = {}
    for t in timed:
        by_round.setdefault(t.index, []).append(t.latency_ms - simulated[t.activity_id])
    summary["overhead_max_ms_by_round"] = [round(max(by_round[n]), 1) for n in sorted(by_round)]
    return summary, after


async def workers_phases(
    session: aiohttp.ClientSession,
    channel: Channel,
    workdir: Path,
    opts: Options,
    run_id: str,
) -> dict[str, Any]:
    """Throughput with a 0 ms model and overhead with the simulated latency (starts spread), on
    the app with `opts.workers` worker processes. CPU is the whole process tree's. What each
    worker counted (hand-overs, store calls on the loop or its worker thread) is read when the
    app has stopped, warm-up turns included."""
    report: dict[str, Any] = {"workers": opts.workers}
    warm_up_conversations, warm_up_turns = 8, 2

    @contextlib.asynccontextmanager
    async def warm_stack(label: str, ttft: float) -> AsyncIterator[OurStack]:
        stack = OurStack(f"workers-{label}", channel, workdir, opts, ttft, workers=opts.workers)
        await stack.start()
        try:
            await drive(
                session,
                channel,
                f"{stack.url}/api/messages",
                target="ours",
                concurrency=warm_up_conversations,
                turns=warm_up_turns,
                run_id=f"{run_id}-w",
            )
            yield stack
        finally:
            await stack.stop()
        counts = final_counts(stack.data_dir)
        turns = report[label]["completed_turns"] + warm_up_conversations * warm_up_turns
        handed_over = counts["peers"].get("handed_over", 0)
        report[label]["workers_counted"] = counts | {
            "turns_including_warm_up": turns,
            "handed_over_share": round(handed_over / turns, 3) if turns else None,
        }

    async with warm_stack("0ms", 0.0) as stack:
        report["0ms"] = await measured_load(
            session,
            channel,
            f"{stack.url}/api/messages",
            stack.pids,
            f"ours, {opts.workers} workers (0 ms model)",
            target="ours",
            concurrency=opts.ratio_concurrency,
            turns=opts.turns,
            run_id=f"{run_id}-w0",
            time_limit=opts.time_limit,
        )
    async with warm_stack("latency", opts.model_latency_ms) as stack:
        # (/bench/stats answers from one worker: its loop lag would not be the app's.)
        report["latency"], _ = await latency_phase(
            session, channel, stack, opts, f"{run_id}-wlat", opts.start_spread_ms / 1000
        )
        print(
            _line(
                f"ours, {opts.workers} workers ({opts.model_latency_ms:.0f} ms model)",
                report["latency"],
            )
        )
    return report


def headline(report: dict[str, Any], opts: Options) -> dict[str, Any]:
    # The ratio at --ratio-concurrency, or at the highest swept concurrency below it.
    ratio_at = max((c for c in opts.sweep if c <= opts.ratio_concurrency), default=opts.sweep[0])

    def at(sweep: list[dict[str, Any]]) -> float:
        return float(next(s["turns_per_second"] for s in sweep if s["concurrency"] == ratio_at))

    ours = at(report["ours_model_0ms"]["sweep"])
    stock = at(report["stock"]["sweep"])
    latency = report["ours_model_latency"]
    long = report["long_conversation"]
    peak_rss_mib = report["memory"]["app_rss_kib"].get("VmHWM", 0) / 1024
    ops = report["store_ops"]
    paced = report.get("store_ops_paced", ops)
    return {
        "ratio_concurrency": ratio_at,
        "ours_turns_per_second": ours,
        "stock_turns_per_second": stock,
        "throughput_ratio": round(ours / stock, 1) if stock else None,
        # Reply latency less the simulator's own time for that request.
        "bot_overhead_p99_ms": latency["bot_overhead_ms"]["p99"],
        "bot_overhead_p99_ms_vs_bot_measured_model": latency[
            "bot_overhead_vs_bot_measured_model_ms"
        ]["p99"],
        "bot_overhead_p99_ms_vs_configured_model": latency["bot_overhead_vs_configured_model_ms"][
            "p99"
        ],
        "bot_overhead_p99_ms_one_burst": report["ours_model_latency_burst"]["bot_overhead_ms"][
            "p99"
        ],
        "bot_overhead_p99_ms_streamed": (
            report["ours_model_latency_streaming"]["bot_overhead_ms"]["p99"]
            if "ours_model_latency_streaming" in report
            else None
        ),
        **_workers_headline(report, stock),
        "peak_rss_mib": round(peak_rss_mib, 1),
        "memory_conversations": opts.memory_conversations,
        "prompt_tokens_turn_1": long["prompt_tokens_at_turn"].get("1"),
        "prompt_tokens_last_turn": long["prompt_tokens_at_turn"].get(str(long["turns"])),
        "prompt_tokens_max": long["prompt_tokens_max"],
        "store_queries_per_turn": ops["queries_per_turn"],
        "store_writes_per_turn": ops["writes_per_turn"],
        "store_queries_per_turn_paced": paced["queries_per_turn"],
        "store_writes_per_turn_paced": paced["writes_per_turn"],
        "targets": {
            "throughput_ratio_at_least_10": bool(stock) and ours / stock >= 10,
            "overhead_p99_at_most_20_ms": latency["bot_overhead_ms"]["p99"] <= 20,
            "peak_rss_at_most_300_mib": peak_rss_mib <= 300,
            "prompt_tokens_within_budget": long["prompt_tokens_max"] <= 6000,
            "store_at_most_1_query_3_writes": max(
                ops["queries_per_turn"], paced["queries_per_turn"]
            )
            <= 1
            and max(ops["writes_per_turn"], paced["writes_per_turn"]) <= 3,
        },
    }


def _workers_headline(report: dict[str, Any], stock: float) -> dict[str, Any]:
    workers = report.get("ours_workers")
    if not workers:
        return {}
    ours = float(workers["0ms"]["turns_per_second"])
    return {
        "workers": workers["workers"],
        "workers_turns_per_second": ours,
        "workers_throughput_ratio": round(ours / stock, 1) if stock else None,
        "workers_bot_overhead_p99_ms": workers["latency"]["bot_overhead_ms"]["p99"],
    }


def _line(label: str, summary: dict[str, Any]) -> str:
    lat = summary["reply_latency_ms"]
    extra = ""
    if "bot_overhead_ms" in summary:
        o = summary["bot_overhead_ms"]
        extra = f"  overhead p50/p95/p99 {o['p50']}/{o['p95']}/{o['p99']} ms"
    return (
        f"{label:>28}: C={summary['concurrency']:<5} {summary['completed_turns']:>5} turns "
        f"{summary['turns_per_second']:>7} turns/s  reply p50/p99 {lat['p50']}/{lat['p99']} ms"
        f"  failed {summary['failed_turns']}{extra}"
    )


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    report = asyncio.run(run(opts))
    path = opts.out / f"{opts.name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {path}")
    if opts.chart:
        from bench.chart import draw

        png = draw(report, opts.out / f"{opts.name}.png")
        print(f"chart: {png}")
    print(json.dumps(report["summary"], indent=2))
