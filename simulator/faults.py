"""Fault modes and the tokens-per-minute budget, for routing, spillover and reliability tests."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STATUS_FAULTS = ("429", "500", "503", "408", "404")
STREAM_FAULTS = ("drop_mid_stream", "malformed_sse", "error_event")
# A stream that ends cleanly right after its finish chunk: no annotations (asynchronous filter),
# no usage chunk, no [DONE], as when a proxy closes it early. (Non-streaming: no fault.)
CUT_AFTER_FINISH = "cut_after_finish"
MODES = (*STATUS_FAULTS, "slow_first_token", *STREAM_FAULTS, CUT_AFTER_FINISH)
DEFAULT_RETRY_AFTER_S = 1
DEFAULT_SLOW_DELAY_MS = 2000


@dataclass(frozen=True)
class Fault:
    mode: str
    retry_after_s: float | None = None
    retry_after_ms: int | None = None
    delay_ms: float = DEFAULT_SLOW_DELAY_MS

    def retry_after(self) -> tuple[int, int]:
        """(`retry-after` seconds, `retry-after-ms`): either given value derives the other."""
        if self.retry_after_ms is not None:
            seconds = (
                self.retry_after_s if self.retry_after_s is not None else self.retry_after_ms / 1000
            )
            return math.ceil(seconds), self.retry_after_ms
        seconds = self.retry_after_s if self.retry_after_s is not None else DEFAULT_RETRY_AFTER_S
        return math.ceil(seconds), round(seconds * 1000)


# Prompt markers: the same faults, typed into the last user message.
MARKER_FAULTS = {
    "[sim:429]": Fault("429"),
    "[sim:quota]": Fault("429", retry_after_s=86400),  # a daily quota exhausted
    "[sim:500]": Fault("500"),
    "[sim:503]": Fault("503"),
    "[sim:408]": Fault("408"),
    "[sim:404]": Fault("404"),
    "[sim:slow]": Fault("slow_first_token"),
    "[sim:drop]": Fault("drop_mid_stream"),
    "[sim:malformed]": Fault("malformed_sse"),
    "[sim:error-event]": Fault("error_event"),
    "[sim:cut-after-finish]": Fault(CUT_AFTER_FINISH),
}


def marker_fault(text: str) -> Fault | None:
    lowered = text.lower()
    return next((fault for marker, fault in MARKER_FAULTS.items() if marker in lowered), None)


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a non-negative number")
    return float(value)


def parse_fault_request(body: Any) -> tuple[Fault, int | None]:
    """Read a `POST /_sim/faults` body: the fault and how many requests it hits (None = all)."""
    if not isinstance(body, dict) or body.get("mode") not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    count = body.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError("count must be a positive integer")
    retry_after_ms = _number(body, "retry_after_ms")
    delay_ms = _number(body, "delay_ms")
    fault = Fault(
        mode=str(body["mode"]),
        retry_after_s=_number(body, "retry_after_s"),
        retry_after_ms=None if retry_after_ms is None else round(retry_after_ms),
        delay_ms=DEFAULT_SLOW_DELAY_MS if delay_ms is None else delay_ms,
    )
    return fault, count


@dataclass
class FaultControl:
    """The fault set through the control endpoint, for the next `remaining` requests."""

    fault: Fault | None = None
    remaining: int | None = None  # None = until cleared

    def set(self, fault: Fault, count: int | None) -> None:
        self.fault, self.remaining = fault, count

    def clear(self) -> None:
        self.fault, self.remaining = None, None

    def take(self) -> Fault | None:
        fault = self.fault
        if fault is not None and self.remaining is not None:
            self.remaining -= 1
            if self.remaining == 0:
                self.clear()
        return fault

    def as_json(self) -> dict[str, Any]:
        if self.fault is None:
            return {"mode": None}
        return {"mode": self.fault.mode, "remaining": self.remaining}


WINDOW_S = 60.0
# Azure grants 6 requests per minute for every 1000 tokens per minute of quota.
REQUESTS_PER_1000_TOKENS = 6


class TokenBudget:
    """Azure-like tokens-per-minute limit over a sliding 60 s window.

    A request costs its prompt tokens plus `max_tokens`, counted when it is accepted, as Azure's
    rate limiter estimates it before the model runs.
    """

    def __init__(self, tokens_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = tokens_per_minute
        self._clock = clock
        self._spent: deque[tuple[float, int]] = deque()

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0][0] + WINDOW_S <= now:
            self._spent.popleft()

    def used(self) -> int:
        self._expire(self._clock())
        return sum(cost for _, cost in self._spent)

    def try_spend(self, cost: int) -> float | None:
        """Spend `cost` and return None, or return the seconds until enough budget frees up."""
        now = self._clock()
        self._expire(now)
        excess = sum(c for _, c in self._spent) + cost - self.limit
        if excess <= 0:
            self._spent.append((now, cost))
            return None
        if cost > self.limit:
            return WINDOW_S  # never fits; Azure still answers 429
        freed = 0
        for spent_at, spent in self._spent:
            freed += spent
            if freed >= excess:
                return spent_at + WINDOW_S - now
        return WINDOW_S

    def headers(self) -> dict[str, str]:
        now = self._clock()
        self._expire(now)
        requests_limit = max(1, self.limit * REQUESTS_PER_1000_TOKENS // 1000)
        return {
            "x-ratelimit-remaining-tokens": str(max(0, self.limit - self.used())),
            "x-ratelimit-remaining-requests": str(max(0, requests_limit - len(self._spent))),
        }
