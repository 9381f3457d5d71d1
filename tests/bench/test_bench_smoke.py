"""`python -m bench` end to end with tiny numbers: every process starts, every turn is answered
through JWT auth and the recording connector, and the JSON and PNG are written. Nothing here
asserts speed; the figures are `make bench`'s business."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from bench.processes import PROJECT_ROOT


def test_benchmark_runs_both_bots_and_writes_results(tmp_path: Path) -> None:
    args = [
        "--sweep=1,2",
        "--turns=4",
        "--stock-turns=2",
        "--ratio-concurrency=2",
        "--latency-concurrency=2",
        "--latency-turns=2",
        "--streaming-turns=2",
        "--model-latency-ms=50",
        "--memory-conversations=5",
        "--memory-turns=1",
        "--long-turns=4",
        "--paced-conversations=2",
        "--paced-turns=2",
        "--workers=2",
        "--time-limit=60",
        f"--out={tmp_path}",
        "--name=smoke",
    ]
    run = subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "bench", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "smoke.json").read_text())

    for target in ("stock", "ours_model_0ms"):
        sweep = report[target]["sweep"]
        assert [s["concurrency"] for s in sweep] == [1, 2]
        for phase in sweep:
            assert phase["failed_turns"] == 0 and phase["rejected_requests"] == 0
            assert (
                phase["completed_turns"] == phase["concurrency"] * phase["turns_per_conversation"]
            )
            assert phase["turns_per_second"] > 0
            assert phase["cpu_ms_per_turn"]["bot"] >= 0
        # CPU time comes from /proc in 10 ms ticks: a few fast turns may round to none, the
        # whole sweep does not.
        assert sum(phase["cpu_ms_per_turn"]["bot"] for phase in sweep) > 0

    latency = report["ours_model_latency"]
    assert latency["completed_turns"] == 4
    # The simulator timed every request, and its time is what is subtracted; the bot's own
    # measure of its model call is at least as long (it holds the simulator's).
    assert latency["turns_without_simulator_timing"] == 0
    in_simulator = latency["model_latency_ms_in_simulator"]
    assert in_simulator["p50"] >= 50
    assert latency["model_latency_ms_measured_by_bot"]["p50"] >= in_simulator["p50"]
    assert latency["bot_overhead_ms"]["p50"] < latency["reply_latency_ms"]["p50"]
    assert (
        latency["bot_overhead_ms"]["p50"] >= latency["bot_overhead_vs_bot_measured_model_ms"]["p50"]
    )
    assert len(latency["overhead_samples_ms"]) == 4
    # One tail per round (2 turns per conversation), each the worst of that round's samples.
    by_round = latency["overhead_max_ms_by_round"]
    assert len(by_round) == 2
    assert abs(max(by_round) - max(latency["overhead_samples_ms"])) <= 0.1  # both rounded
    # Clean shutdowns: SIGTERM drained and closed everything.
    assert latency["app_exit_code"] == 0
    assert report["ours_model_0ms"]["app_exit_code"] == 0

    # The same latency with the answers streamed (Web Chat): the simulator's time holds the
    # streaming, and what is left is the bot's.
    streamed = report["ours_model_latency_streaming"]
    assert streamed["completed_turns"] == 4 and streamed["failed_turns"] == 0
    assert streamed["turns_without_simulator_timing"] == 0
    assert streamed["stream_updates"] > 0
    assert streamed["model_latency_ms_in_simulator"]["p50"] > in_simulator["p50"]
    assert streamed["bot_overhead_ms"]["p50"] < streamed["reply_latency_ms"]["p50"]
    assert streamed["app_exit_code"] == 0
    assert report["summary"]["bot_overhead_p99_ms_streamed"] is not None

    ops = report["store_ops"]
    assert ops["per_method"]["recent_messages"] == 1  # the window: one query per turn
    assert ops["per_method"]["add_message"] == 2  # the prompt and the answer
    assert ops["queries_per_turn"] == 1

    # At a person's pace, far from the limit (the bench's users have limits, never reached),
    # each message's count carries the previous turn's quota settlement; only each
    # conversation's last is written on its own (2 conversations of 2 turns: 4 counts + 2).
    paced = report["store_ops_paced"]
    assert paced["turns"] == 4
    assert paced["per_method"]["add_usage"] == 1.5
    assert paced["per_method"]["add_message"] == 2 and paced["queries_per_turn"] == 1
    assert report["summary"]["store_writes_per_turn_paced"] == paced["writes_per_turn"]

    workers = report["ours_workers"]
    assert workers["workers"] == 2
    assert workers["0ms"]["completed_turns"] == 8 and workers["latency"]["completed_turns"] == 4
    # The workers' CPU is counted, not only the parent's (which serves no turns).
    assert (
        workers["0ms"]["cpu_ms_per_turn"]["bot"] + workers["latency"]["cpu_ms_per_turn"]["bot"] > 0
    )
    # Every worker wrote what it counted when it stopped: each turn's store calls (at least
    # its message, window, answer and summary) and, for any activity handed to its owner,
    # that it was taken over on the other side.
    counted = workers["0ms"]["workers_counted"]
    assert counted["turns_including_warm_up"] == 8 + 16
    assert sum(counted["store_short_calls"].values()) >= 4 * 24
    peers = counted["peers"]
    assert peers.get("handed_over", 0) == peers.get("taken_over", 0)
    assert 0 <= counted["handed_over_share"] <= 1

    memory = report["memory"]
    assert memory["completed_turns"] == 5
    assert memory["app_rss_kib"]["VmHWM"] > 0

    long = report["long_conversation"]
    tokens = long["prompt_tokens_by_turn"]
    assert long["turns"] == 4 and len(tokens) == 4
    assert 0 < tokens[0] < tokens[-1] <= long["history_token_budget"]

    summary = report["summary"]
    assert summary["ratio_concurrency"] == 2
    assert summary["throughput_ratio"] > 0
    assert set(summary["targets"]) == {
        "throughput_ratio_at_least_10",
        "overhead_p99_at_most_20_ms",
        "peak_rss_at_most_300_mib",
        "prompt_tokens_within_budget",
        "store_at_most_1_query_3_writes",
    }

    # py-spy sampled a separate run (or the report says why it could not).
    assert "samples" in report["profile"] or "error" in report["profile"]

    with Image.open(tmp_path / "smoke.png") as chart:
        assert chart.format == "PNG" and chart.width > 600


def test_store_write_benchmark_times_every_write_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "store_writes.json"
    run = subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "bench.store_writes", "--writes=60", "--rate=2000", f"--out={out}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert sorted(results) == [
        "loop, with the checkpoint thread",
        "worker alone, checkpoints in its commits",
    ]
    for rounds in results.values():
        assert [r["writes"] for r in rounds] == [60, 60]
        assert all(0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] for r in rounds)
        assert all(r["ran_on_loop"] + r["ran_on_worker"] == 60 for r in rounds)
    assert all(r["ran_on_loop"] == 0 for r in results["worker alone, checkpoints in its commits"])
    assert all(r["ran_on_loop"] > 0 for r in results["loop, with the checkpoint thread"])
    assert all(
        r["max_ms_on_loop"] <= r["max_ms"] for r in results["loop, with the checkpoint thread"]
    )
