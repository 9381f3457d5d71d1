"""Routing between model deployments: priority order, spill-over, cooldowns, a circuit breaker.

The usual set-up is a provisioned (PTU) deployment first and pay-as-you-go behind it. A 429 or
503 names how long to wait (`retry-after-ms` / `retry-after`, or in its message when a gateway
dropped those): that deployment cools down for that long and the turn spills over to the next one;
a 429 that names no wait cools down for the default cooldown. Quota exhaustion (a retry-after of
hours) parks a deployment until then the same way. Other errors (500s, 503s without a wait,
timeouts, dropped connections, streams that break off, a deployment that refuses our
credentials or does not exist) count towards a circuit breaker that stops sending to a failing
deployment for a while, then lets one trial request through. A whole model call has a deadline
across attempts; an answer still streaming when it passes is cut there, without counting against
its deployment (a long answer is not a fault).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from chat.model import (
    Completion,
    DeploymentClient,
    FilterWatch,
    ModelCaller,
    ModelError,
    PromptFiltered,
    TextListener,
)
from chat.reachability import Reachability, first_hop
from chat.telemetry import ChatTelemetry

log = logging.getLogger(__name__)

# Above this, a retry-after means a spent quota rather than a burst: log it as parked.
PARKED_AFTER_SECONDS = 300.0
# Cooldowns this short are waited out within the turn's deadline, up to this much in total.
WAIT_OUT_COOLDOWN_SECONDS = 3.0
_MAX_ROUNDS = 10


def _filter_blocked(watch: FilterWatch | None) -> bool:
    """The content filter blocked the streamed answer: the deployment answered, with a verdict."""
    return watch is not None and watch.filtered


class AllDeploymentsBusy(ModelError):
    """No deployment could answer; `retry_after` says when the first one should be back.
    `throttled` tells capacity limits (429/503 with a wait) from failures (5xx, unreachable)."""

    def __init__(self, retry_after: float, last_error: ModelError | None, throttled: bool) -> None:
        super().__init__(
            "all_deployments_busy",
            deployment=last_error.deployment if last_error else "",
            status=last_error.status if last_error else None,
            retry_after=retry_after,
        )
        self.throttled = throttled


@dataclass
class DeploymentHealth:
    cooldown_until: float = 0.0
    consecutive_failures: int = 0
    breaker_open_until: float = 0.0
    # While half-open, one trial request is in flight; others skip this deployment.
    trial_in_flight: bool = False

    def available_at(self) -> float:
        return max(self.cooldown_until, self.breaker_open_until)


class DeploymentRouter:
    def __init__(
        self,
        clients: list[DeploymentClient],
        *,
        breaker_failures: int = 3,
        breaker_open_seconds: float = 30.0,
        default_cooldown_seconds: float = 10.0,
        deadline_seconds: float = 90.0,
        telemetry: ChatTelemetry | None = None,
    ) -> None:
        if not clients:
            raise ValueError("at least one deployment is required")
        self._clients = sorted(clients, key=lambda c: c.deployment.priority)
        self._health = {c.deployment.name: DeploymentHealth() for c in self._clients}
        self._breaker_failures = breaker_failures
        self._breaker_open_seconds = breaker_open_seconds
        self._default_cooldown = default_cooldown_seconds
        self._deadline = deadline_seconds
        self._telemetry = telemetry or ChatTelemetry()
        # One check per host and port: several deployments of one resource share it.
        checks: dict[tuple[str, int], Reachability] = {}
        self._reachability: dict[str, Reachability] = {}
        for client in self._clients:
            address = first_hop(client.deployment.endpoint)
            if address is not None:
                check = checks.setdefault(address, Reachability(address))
                self._reachability[client.deployment.name] = check

    @property
    def deployment_names(self) -> list[str]:
        return [c.deployment.name for c in self._clients]

    def health(self, name: str) -> DeploymentHealth:
        return self._health[name]

    def usable(self) -> bool:
        """At least one deployment is not cooling down or broken (readiness)."""
        now = time.monotonic()
        return any(h.available_at() <= now for h in self._health.values())

    async def ready(self) -> bool:
        """Readiness: a deployment that is `usable` and whose host accepts a TCP connection
        (`chat.reachability`: no request, no tokens; checked at most every few seconds)."""
        now = time.monotonic()
        usable = [name for name, h in self._health.items() if h.available_at() <= now]
        if not usable:
            return False
        if any(name not in self._reachability for name in usable):
            return True  # one names no host to check: usable is all that can be said
        checks = {self._reachability[name] for name in usable}
        answers = await asyncio.gather(*(check.reachable() for check in checks))
        return any(answers)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._clients))

    async def complete(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        on_text: TextListener | None = None,
        caller: ModelCaller | None = None,
        watch: FilterWatch | None = None,
    ) -> Completion:
        deadline = time.monotonic() + self._deadline
        streamed = False

        async def listen(text_so_far: str) -> None:
            nonlocal streamed
            streamed = True
            if on_text is not None:
                await on_text(text_so_far)

        last_error: ModelError | None = None
        previous: str | None = None
        out_of_time = False
        waited = 0.0
        for _round in range(_MAX_ROUNDS):
            for client in self._clients:
                name = client.deployment.name
                health = self._health[name]
                now = time.monotonic()
                if health.available_at() > now or health.trial_in_flight:
                    continue
                remaining = deadline - now
                if remaining <= 0:
                    out_of_time = True
                    break
                if previous is not None:
                    self._telemetry.spillover.add(1, {"from": previous, "to": name})
                    log.warning(
                        "spilling over", extra={"event": "spillover", "from": previous, "to": name}
                    )
                half_open = health.breaker_open_until > 0
                health.trial_in_flight = half_open
                try:
                    # Only the deployment's answer fails the attempt's span; a Stop or a
                    # cancellation passing through is not its doing.
                    with self._telemetry.span(
                        "chat.model_attempt", deployment=name, failures=()
                    ) as attempt:
                        try:
                            completion = await asyncio.wait_for(
                                client.complete(
                                    messages, max_tokens, listen if on_text else None, caller, watch
                                ),
                                timeout=remaining,
                            )
                        except PromptFiltered as exc:
                            self._telemetry.prompt_filtered(attempt, exc.status)
                            raise
                        except ModelError as exc:
                            self._telemetry.model_failed(attempt, exc.kind, exc.status)
                            raise
                        except TimeoutError:
                            if not (streamed or _filter_blocked(watch)):
                                self._telemetry.model_failed(attempt, "deadline", None)
                            raise
                except TimeoutError:
                    if streamed or _filter_blocked(watch):
                        # Text was still arriving: a long answer, not a hung deployment (or
                        # the filter had already blocked the answer: the turn withholds it).
                        # The turn keeps what was shown; nothing is retried or counted against it.
                        self._record_outcome_without_penalty(health)
                        raise ModelError(
                            "deadline", deployment=name, retryable=False, fault=False
                        ) from None
                    last_error = ModelError("deadline", deployment=name, retryable=False)
                    self._record_failure(health, name, last_error)
                    out_of_time = True
                    break
                except ModelError as exc:
                    last_error = exc
                    if not exc.retryable:
                        # Not a deployment problem (a filtered prompt, a bad request), or a
                        # stream that broke off after the user saw text (a fault all the same):
                        # trying elsewhere would not help this turn.
                        if exc.fault:
                            self._record_failure(health, name, exc)
                        else:
                            self._record_outcome_without_penalty(health)
                        raise
                    self._record_failure(health, name, exc)
                    previous = name
                    continue
                finally:
                    if half_open:
                        # Only the trial ends the trial: an attempt that began before the
                        # breaker opened may finish while the trial still runs.
                        health.trial_in_flight = False
                self._record_success(health, name)
                return completion
            # Every deployment is cooling down: wait out a short cooldown (a burst of 429s with
            # a retry-after of a second or two) instead of telling the user to come back later.
            wait = self._short_cooldown_left()
            if (
                out_of_time
                or wait is None
                or waited + wait > WAIT_OUT_COOLDOWN_SECONDS
                or time.monotonic() + wait >= deadline
            ):
                break
            waited += wait
            await asyncio.sleep(wait)
            previous = None
        now = time.monotonic()
        throttled = any(h.cooldown_until > now for h in self._health.values())
        raise AllDeploymentsBusy(self._seconds_until_available(), last_error, throttled)

    def _short_cooldown_left(self) -> float | None:
        """Seconds until the first deployment whose only obstacle is a cooldown of at most
        WAIT_OUT_COOLDOWN_SECONDS is back; None when there is none (failures, open breakers,
        long waits: those get the busy notice now)."""
        now = time.monotonic()
        waits = [
            h.cooldown_until - now
            for h in self._health.values()
            if h.breaker_open_until <= now and not h.trial_in_flight
        ]
        short = [w for w in waits if 0 < w <= WAIT_OUT_COOLDOWN_SECONDS]
        return min(short) if short else None

    def _seconds_until_available(self) -> float:
        now = time.monotonic()
        soonest = min(h.available_at() for h in self._health.values())
        return max(0.0, soonest - now)

    def _record_success(self, health: DeploymentHealth, name: str) -> None:
        if health.breaker_open_until:
            log.info(
                "circuit breaker closed", extra={"event": "breaker_closed", "deployment": name}
            )
        health.consecutive_failures = 0
        health.breaker_open_until = 0.0

    @staticmethod
    def _record_outcome_without_penalty(health: DeploymentHealth) -> None:
        health.consecutive_failures = 0

    def _record_failure(self, health: DeploymentHealth, name: str, error: ModelError) -> None:
        now = time.monotonic()
        if error.status in (429, 503):
            self._telemetry.throttled.add(1, {"deployment": name, "status": error.status})
        # Only throttling names a wait that means "come back later"; a retry-after on another
        # status (a 500 from a proxy) is a failure all the same, counted towards the breaker.
        wait = error.retry_after if error.status in (429, 503) else None
        if wait is None and error.status == 429:
            # Throttled without saying for how long: a cooldown of our own (a breaker opened by
            # 429s would outlast the throttling).
            wait = self._default_cooldown
        if wait is not None:
            # Throttling is a cooldown, not a sign of a broken backend. A shorter wait answered
            # to an earlier request does not cut a longer one short (a parked daily quota).
            health.cooldown_until = max(health.cooldown_until, now + wait)
            event = "parked" if wait >= PARKED_AFTER_SECONDS else "throttled"
            log.warning(
                "deployment %s",
                event,
                extra={
                    "event": f"model_{event}",
                    "deployment": name,
                    "status": error.status,
                    "retry_after_s": math.ceil(wait),
                },
            )
            return
        health.consecutive_failures += 1
        if health.consecutive_failures >= self._breaker_failures or health.breaker_open_until:
            health.breaker_open_until = now + self._breaker_open_seconds
            log.error(
                "circuit breaker open",
                extra={
                    "event": "breaker_open",
                    "deployment": name,
                    "kind": error.kind,
                    "status": error.status,
                    "open_s": self._breaker_open_seconds,
                },
            )
        else:
            log.warning(
                "model call failed",
                extra={
                    "event": "model_error",
                    "deployment": name,
                    "kind": error.kind,
                    "status": error.status,
                },
            )
