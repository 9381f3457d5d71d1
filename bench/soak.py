"""Soak: mixed load with injected faults for SOAK_SECONDS (default 600), then a report.

    python -m bench.soak            (or `make soak`)

Runs in one process, on loopback only: the app (create_app, its built-in Azure OpenAI
simulator, a SQLite store in a temporary folder wrapped by tests/faults.py's FaultyStore) and a
recording channel connector. SOAK_USERS conversations send messages in a bounded loop, some
with simulator fault markers; every few seconds a new fault phase starts (store throttling or
timeouts on reads or writes, a 429 burst or 500s from the model, the channel refusing replies).

Afterwards every message sent is classified from what the channel received and what the store
holds: answered, notice (by kind), or lost (the prompt neither stored nor refused with "send it
again"; or stored but never answered nor noticed nor recorded as delivery_failed); duplicates
count a second final message for one activity or a second answer stored for one prompt. The
report is printed and written as JSON (SOAK_REPORT, default bench/results/soak.json); the exit
code is 1 when anything was lost or duplicated.

Knobs (environment): SOAK_SECONDS, SOAK_USERS (8), SOAK_PHASE_SECONDS (5), SOAK_SEED (1),
SOAK_REPORT, SOAK_LOG_LEVEL (CRITICAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from app import MODEL_ENDPOINT, STORE, TURNS, create_app
from config import Settings
from storage.ids import message_id, safe_id
from storage.models import MessageStatus, Role
from tests.faults import FaultyStore, faulty
from tests.reliability.support import FlakyConnector, is_answer, notice_key
from tests.support import message_activity

log = logging.getLogger("bench.soak")
RESULTS = Path(__file__).resolve().parent / "results"
# Markers in a share of the prompts: the simulator fails that one request that way.
MARKERS = [""] * 16 + ["[sim:500]", "[sim:drop]", "[sim:malformed]", "[sim:503]"]
PHASES = [
    "calm",
    "store_write_throttled",
    "store_read_timeouts",
    "store_user_write_errors",
    "store_slow",
    "model_429_burst",
    "model_500s",
    "channel_refuses",
]


@dataclass
class Knobs:
    seconds: float = 600.0
    users: int = 8
    phase_seconds: float = 5.0
    seed: int = 1
    report: Path = RESULTS / "soak.json"

    @classmethod
    def from_environment(cls) -> Knobs:
        env = os.environ.get
        return cls(
            seconds=float(env("SOAK_SECONDS", "600")),
            users=int(env("SOAK_USERS", "8")),
            phase_seconds=float(env("SOAK_PHASE_SECONDS", "5")),
            seed=int(env("SOAK_SEED", "1")),
            report=Path(env("SOAK_REPORT", str(RESULTS / "soak.json"))),
        )


@dataclass
class Sent:
    activity: dict[str, Any]
    phase: str


@dataclass
class Report:
    seconds: float
    users: int
    attempted: int = 0
    answered: int = 0
    notices: int = 0
    lost: int = 0
    duplicates: int = 0
    notices_by_kind: Counter[str] = field(default_factory=Counter)
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    lost_examples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "users": self.users,
            "attempted": self.attempted,
            "answered": self.answered,
            "notices": self.notices,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "notices_by_kind": dict(self.notices_by_kind),
            "errors_by_kind": dict(sorted(self.errors_by_kind.items())),
            "phases": dict(self.phases),
            "lost_examples": self.lost_examples[:10],
        }


class Soak:
    def __init__(self, knobs: Knobs, data_dir: Path) -> None:
        self.knobs = knobs
        self.random = random.Random(knobs.seed)
        self.data_dir = data_dir
        self.sent: list[Sent] = []
        self.phase = "calm"
        self.store: FaultyStore | None = None
        self.connector = FlakyConnector()

    async def run(self) -> Report:
        connector_runner = web.AppRunner(self.connector.app(), access_log=None)
        await connector_runner.setup()
        site = web.TCPSite(connector_runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.connector.url = f"http://127.0.0.1:{port}"

        wrap, get_store = faulty(seed=self.knobs.seed)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            DATA_DIR=self.data_dir,
            SIMULATOR_TTFT_MS=20,
            SIMULATOR_TOKENS_PER_SECOND=2000,
            # Quotas off (0 = unlimited): ten minutes of load is far beyond a person's daily tokens.
            QUOTA_USER_REQUESTS_PER_MINUTE=0,
            QUOTA_USER_TOKENS_PER_DAY=0,
            MODEL_DEADLINE_SECONDS=20,
            ROUTER_BREAKER_FAILURES=5,
            ROUTER_BREAKER_OPEN_SECONDS=1,
        )
        app = create_app(settings, store_wrapper=wrap)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        app_site = web.TCPSite(runner, "127.0.0.1", 0)
        await app_site.start()
        app_port = app_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.store = get_store()
        simulator = app[MODEL_ENDPOINT]
        deadline = time.monotonic() + self.knobs.seconds
        try:
            async with aiohttp.ClientSession() as session:
                users = [
                    self._user(session, f"http://127.0.0.1:{app_port}", n, deadline)
                    for n in range(self.knobs.users)
                ]
                await asyncio.gather(self._phases(session, simulator, deadline), *users)
                self._set_phase("calm")
                await session.delete(f"{simulator}/_sim/faults")
                await asyncio.wait_for(app[TURNS].wait_idle(), timeout=120)
                return await self._report(app)
        finally:
            await runner.cleanup()
            await connector_runner.cleanup()

    # --- load

    async def _user(
        self, session: aiohttp.ClientSession, base: str, n: int, deadline: float
    ) -> None:
        conversation = f"soak-{n}"
        sequence = 0
        while time.monotonic() < deadline:
            sequence += 1
            marker = self.random.choice(MARKERS)
            locale = "ja-JP" if n % 4 == 3 else "en-US"
            text = f"user {n} question {sequence} {marker}".strip()
            activity = message_activity(
                self.connector.url,
                text,
                activity_id=f"{conversation}-{sequence}-{uuid.uuid4().hex[:6]}",
                conversation_id=conversation,
                user_id=f"soak-user-{n}",
                locale=locale,
            )
            self.sent.append(Sent(activity, self.phase))
            try:
                async with session.post(f"{base}/api/messages", json=activity) as response:
                    if response.status != 202:
                        log.warning("not accepted", extra={"status": response.status})
            except aiohttp.ClientError:
                log.warning("the app did not take a message", exc_info=True)
            # Wait for this turn's final message (bounded), like a person reading the answer.
            await self._wait_for_final(activity["id"], within=30)
            await asyncio.sleep(self.random.uniform(0.05, 0.3))
            if sequence % 7 == 0:
                # A channel redelivery of an activity already answered: must not answer twice.
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.post(f"{base}/api/messages", json=activity):
                        pass

    async def _wait_for_final(self, activity_id: str, within: float) -> None:
        end = time.monotonic() + within
        while time.monotonic() < end:
            if any(m.get("replyToId") == activity_id for m in self.connector.messages()):
                return
            if any(m.get("replyToId") == activity_id for m in self.connector.refused):
                return
            await asyncio.sleep(0.05)

    # --- faults

    async def _phases(
        self, session: aiohttp.ClientSession, simulator: str, deadline: float
    ) -> None:
        while time.monotonic() < deadline:
            phase = self.random.choice(PHASES)
            self._set_phase(phase)
            await session.delete(f"{simulator}/_sim/faults")
            if phase == "model_429_burst":
                fault = {"mode": "429", "count": 4, "retry_after_ms": 400}
                await session.post(f"{simulator}/_sim/faults", json=fault)
            elif phase == "model_500s":
                await session.post(f"{simulator}/_sim/faults", json={"mode": "500", "count": 6})
            await asyncio.sleep(
                min(self.knobs.phase_seconds, max(0.0, deadline - time.monotonic()))
            )

    def _set_phase(self, phase: str) -> None:
        assert self.store is not None
        self.phase = phase
        self.store.clear()
        self.connector.fail_next = 0
        if phase == "store_write_throttled":
            self.store.fail("throttled", "write", probability=0.3)
        elif phase == "store_read_timeouts":
            self.store.fail("timeout", "read", probability=0.3, delay=0.2)
        elif phase == "store_user_write_errors":
            self.store.fail("error", "add_message", probability=0.3)
        elif phase == "store_slow":
            self.store.fail("slow", "all", delay=0.15)
        elif phase == "channel_refuses":
            self.connector.status = 503
            self.connector.fail_next = 4

    # --- the verdict

    async def _report(self, app: web.Application) -> Report:
        assert self.store is not None
        report = Report(seconds=self.knobs.seconds, users=self.knobs.users)
        store = app[STORE]
        inner = store.inner if isinstance(store, FaultyStore) else store
        finals: dict[str, list[dict[str, Any]]] = {}
        for message in self.connector.messages():
            finals.setdefault(str(message.get("replyToId")), []).append(message)
        conversations = {s.activity["conversation"]["id"] for s in self.sent}
        stored_by_conversation = {
            c: await inner.conversation_messages(safe_id(f"test:{c}")) for c in conversations
        }
        for stored in stored_by_conversation.values():
            ids = [m.id for m in stored]
            report.duplicates += len(ids) - len(set(ids))
            prompts = [m.reply_to_id for m in stored if m.role is Role.ASSISTANT]
            report.duplicates += len(prompts) - len(set(prompts))

        for item in self.sent:
            report.attempted += 1
            report.phases[item.phase] += 1
            activity = item.activity
            conversation = safe_id(f"test:{activity['conversation']['id']}")
            user_id = message_id(conversation, activity["id"], "user")
            stored = stored_by_conversation[activity["conversation"]["id"]]
            prompt = next((m for m in stored if m.id == user_id), None)
            answers = [m for m in stored if prompt is not None and m.reply_to_id == prompt.id]
            got = finals.get(activity["id"], [])
            report.duplicates += max(0, len(got) - 1)
            if got and is_answer(got[0]):
                report.answered += 1
            elif got:
                kind = notice_key(str(got[0].get("text", ""))) or "unrecognized"
                report.notices += 1
                report.notices_by_kind[kind] += 1
                report.errors_by_kind[f"notice:{kind}"] += 1
            if prompt is None:
                if not got or notice_key(str(got[0].get("text", ""))) != "store_unavailable":
                    report.lost += 1
                    report.lost_examples.append(f"{activity['id']}: not stored, not refused")
                continue
            if not got:
                refused = any(a.status is MessageStatus.ERROR for a in answers)
                if refused:
                    report.errors_by_kind["channel:delivery_failed"] += 1
                else:
                    report.lost += 1
                    report.lost_examples.append(f"{activity['id']}: stored, never answered")
        for (operation, kind), count in self.store.injected.items():
            report.errors_by_kind[f"store:{kind}:{operation}"] += count
        report.errors_by_kind["channel:refused_posts"] += len(self.connector.refused)
        return report


async def soak(knobs: Knobs) -> Report:
    with tempfile.TemporaryDirectory(prefix="soak-") as data_dir:
        return await Soak(knobs, Path(data_dir)).run()


def main() -> int:
    # The faults make the app log errors by design; SOAK_LOG_LEVEL=ERROR shows them.
    logging.basicConfig(level=os.environ.get("SOAK_LOG_LEVEL", "CRITICAL"), stream=sys.stderr)
    knobs = Knobs.from_environment()
    report = asyncio.run(soak(knobs))
    body = json.dumps(report.to_json(), indent=2, ensure_ascii=False)
    knobs.report.parent.mkdir(parents=True, exist_ok=True)
    knobs.report.write_text(body + "\n", encoding="utf-8")
    sys.stdout.write(body + "\n")
    failed = report.lost > 0 or report.duplicates > 0
    verdict = "FAILED" if failed else "ok"
    sys.stdout.write(
        f"soak {verdict}: {report.attempted} attempted, {report.answered} answered, "
        f"{report.notices} notices, {report.lost} lost, {report.duplicates} duplicates\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
