"""The benchmark's PNG: throughput against concurrency (ours vs stock botbuilder) and the
distribution of our bot's own overhead per turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def draw(report: dict[str, Any], path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    ours = report["ours_model_0ms"]["sweep"]
    stock = report["stock"]["sweep"]
    left.plot(
        [s["concurrency"] for s in ours],
        [s["turns_per_second"] for s in ours],
        "o-",
        label="ours: full turn (history, 0 ms model, persistence, reply)",
    )
    left.plot(
        [s["concurrency"] for s in stock],
        [s["turns_per_second"] for s in stock],
        "s--",
        label="stock botbuilder CloudAdapter echo bot",
    )
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("concurrent conversations")
    left.set_ylabel("turns per second")
    left.set_title("Throughput against concurrency")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)

    latency = report["ours_model_latency"]
    samples = latency.get("overhead_samples_ms") or []
    if samples:
        n = len(samples)
        right.plot(samples, [100 * (i + 1) / n for i in range(n)], "-")
        for q, style in (("p50", ":"), ("p95", "--"), ("p99", "-.")):
            value = latency["bot_overhead_ms"][q]
            right.axvline(value, linestyle=style, color="grey", label=f"{q} = {value:.1f} ms")
    options = report["options"]
    right.set_xlabel("bot overhead per turn, ms (reply arrival - send - the model's own time)")
    right.set_ylabel("% of turns at or below")
    right.set_title(
        f"Overhead at {options['latency_concurrency']} conversations, "
        f"{options['model_latency_ms']:.0f} ms model"
    )
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    machine = report["machine"]
    fig.suptitle(
        f"{report['generated_at']} - {machine['cpus']} CPUs, {machine['cpu_model']}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
