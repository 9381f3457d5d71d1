"""What every fault test checks, in one place: the user's message is not lost, the user gets one
answer or one localized notice (never silence, never two), the stored conversation is
consistent, and the process is still healthy afterwards."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from app import STORE
from chat.texts import LANGUAGES, all_texts
from storage.ids import message_id, safe_id
from storage.models import Message, MessageStatus, Role
from tests.support import RecordingConnector, settle

# Notices a fault may legitimately end in; anything else final that is not an answer is a bug.
FAULT_NOTICES = (
    "model_unavailable",
    "model_busy",
    "model_down",
    "store_unavailable",
    "internal_error",
)


@cache
def _patterns() -> dict[str, list[re.Pattern[str]]]:
    patterns: dict[str, list[re.Pattern[str]]] = {}
    for key, texts in all_texts().items():
        compiled = []
        for language in LANGUAGES:
            pieces = re.split(r"(\{[a-z_]+\})", texts[language])
            body = "".join(
                ".+?" if re.fullmatch(r"\{[a-z_]+\}", p) else re.escape(p) for p in pieces
            )
            compiled.append(re.compile(rf"^{body}$", re.DOTALL))
        patterns[key] = compiled
    return patterns


def notice_key(text: str) -> str | None:
    """Which localized text (texts.yaml key) this is, in either language; None if none."""
    for key, compiled in _patterns().items():
        if any(p.match(text) for p in compiled):
            return key
    return None


def is_answer(activity: dict[str, Any]) -> bool:
    """Model output carries the AI-generated label; notices do not."""
    return any(
        "AIGeneratedContent" in str(entity.get("additionalType", ""))
        for entity in activity.get("entities") or []
    )


@dataclass
class Sent:
    activity: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.activity["id"])

    @property
    def text(self) -> str:
        return str(self.activity.get("text", ""))


@dataclass
class Verdict:
    """What one user activity ended in, seen from the channel and from the store."""

    sent: Sent
    finals: list[dict[str, Any]]
    stored_user: Message | None
    stored_answers: list[Message] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return len(self.finals) == 1 and is_answer(self.finals[0])

    @property
    def notice(self) -> str | None:
        if len(self.finals) == 1 and not is_answer(self.finals[0]):
            return notice_key(str(self.finals[0].get("text", "")))
        return None


def conversation_of(activity: dict[str, Any]) -> str:
    return safe_id(f"{activity['channelId']}:{activity['conversation']['id']}")


async def post_activity(client: TestClient[Any, Any], activity: dict[str, Any]) -> None:
    response = await client.post("/api/messages", json=activity)
    assert response.status == 202, await response.text()


async def check_turns(
    client: TestClient[Any, Any],
    connector: RecordingConnector,
    sent: list[Sent],
    *,
    allow_silence_when_channel_refuses: bool = False,
) -> list[Verdict]:
    """Assert the invariants for every sent activity (all of one conversation) and return what
    each ended in."""
    await settle(client, within=60)
    store = client.server.app[STORE]
    conversation = conversation_of(sent[0].activity)
    inner = getattr(store, "inner", store)  # read past the fault wrapper
    stored = await inner.conversation_messages(conversation)

    # No duplicates, order kept (seq strictly increasing).
    ids = [m.id for m in stored]
    assert len(ids) == len(set(ids)), f"duplicate stored messages: {ids}"
    seqs = [m.seq for m in stored]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "seq must increase"
    users = [m for m in stored if m.role is Role.USER]
    assistants = [m for m in stored if m.role is Role.ASSISTANT]
    sent_ids = [s.id for s in sent]
    assert [u.activity_id for u in users if u.activity_id in sent_ids] == [
        i for i in sent_ids if any(u.activity_id == i for u in users)
    ], "user messages are stored in the order they were sent"
    by_user = {u.id: u for u in users}
    for answer in assistants:
        assert answer.reply_to_id in by_user, "every answer belongs to a stored prompt"
    replies_per_prompt = [a.reply_to_id for a in assistants]
    assert len(replies_per_prompt) == len(set(replies_per_prompt)), "one answer per prompt"

    verdicts = []
    for item in sent:
        finals = [
            m
            for m in connector.messages(item.activity["conversation"]["id"])
            if m.get("replyToId") == item.id
        ]
        user_id = message_id(conversation, item.id, "user")
        stored_user = next((u for u in users if u.id == user_id), None)
        answers = [a for a in assistants if stored_user and a.reply_to_id == stored_user.id]
        verdict = Verdict(item, finals, stored_user, answers)
        verdicts.append(verdict)

        # Never two answers; never silence (unless the channel itself refused everything).
        assert len(finals) <= 1, f"two final messages for one activity: {finals}"
        if not finals:
            assert allow_silence_when_channel_refuses, f"silence for {item.text!r}"
            assert stored_user is not None
            [answer] = answers
            assert answer.status is MessageStatus.ERROR and answer.error == "delivery_failed"
            continue
        final = finals[0]
        if not is_answer(final):
            key = notice_key(str(final.get("text", "")))
            assert key is not None, f"a final message that is neither answer nor notice: {final}"
            assert "Traceback" not in final["text"] and "Error" not in final["text"]
        # Not lost: stored, or the user was told plainly to send it again.
        if stored_user is None:
            assert verdict.notice == "store_unavailable", f"{item.text!r} lost silently"
            continue
        assert stored_user.text == item.text.strip()
        # The stored status agrees with what the user saw.
        if is_answer(final):
            assert stored_user.status is MessageStatus.COMPLETE
            for answer in answers:
                assert answer.status in (MessageStatus.COMPLETE, MessageStatus.PARTIAL)
                if answer.finish_reason in ("model_deadline", "stream_time_limit"):
                    # Cut short: the note that says so follows the answer on screen only.
                    rest = final["text"].removeprefix(answer.text)
                    assert rest != final["text"] and any(
                        all_texts()["answer_cut_time_limit"][language] in rest
                        for language in LANGUAGES
                    )
                else:
                    assert answer.text == final["text"]
        elif verdict.notice in ("model_unavailable", "model_busy", "model_down"):
            for answer in answers:
                assert answer.status is MessageStatus.ERROR
                assert answer.error in ("model_unavailable", "model_busy", "model_down")
        elif verdict.notice == "store_unavailable":
            assert all(a.status is MessageStatus.ERROR for a in answers)
    return verdicts


async def assert_healthy(
    client: TestClient[Any, Any], connector: RecordingConnector, activity: dict[str, Any]
) -> None:
    """The process still serves: health answers and a plain turn gets its answer."""
    health = await client.get("/healthz")
    assert health.status == 200
    await post_activity(client, activity)
    await settle(client, within=60)
    finals = [m for m in connector.messages() if m.get("replyToId") == activity["id"]]
    assert len(finals) == 1 and is_answer(finals[0]), finals


async def sim_control(base_url: str, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{base_url}{path}", json=body) as response,
    ):
        assert response.status < 400, await response.text()
        return await response.json() if response.content_type == "application/json" else None


class FlakyConnector(RecordingConnector):
    """A channel whose connector refuses the next `fail_next` message POSTs (typing updates
    still pass), with `status` and a `retry_after` header (none when it is None). Every message
    POST's arrival time is kept in `message_posted_at` (monotonic seconds)."""

    fail_next: int = 0
    status: int = 503
    retry_after: str | None = "0"

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("type") == "message":
            self.message_posted_at.append(time.monotonic())
        if body.get("type") == "message" and self.fail_next > 0:
            self.fail_next -= 1
            self.refused.append(body)
            return web.json_response(
                {"error": {"code": "ServiceError"}},
                status=self.status,
                headers={} if self.retry_after is None else {"Retry-After": self.retry_after},
            )
        return await super()._post(request)

    @property
    def message_posted_at(self) -> list[float]:
        if not hasattr(self, "_message_posted_at"):
            self._message_posted_at: list[float] = []
        return self._message_posted_at

    @property
    def refused(self) -> list[dict[str, Any]]:
        if not hasattr(self, "_refused"):
            self._refused: list[dict[str, Any]] = []
        return self._refused


class ModelGateway:
    """Stands between the app and the simulator (the network edge) and forwards every request.
    `seen` is shown each request body; `relay` each line of the answer's body, which it passes
    on (possibly changed) or stops with None, ending the body cleanly there."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    def seen(self, body: bytes) -> None:
        return None

    def relay(self, line: bytes) -> bytes | None:
        return line

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen(body)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, f"{self.upstream}{request.rel_url}", data=body, headers=headers
            ) as upstream,
        ):
            response = web.StreamResponse(status=upstream.status)
            for name in ("Content-Type", "retry-after", "retry-after-ms"):
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            async for line in upstream.content:
                relayed = self.relay(line)
                if relayed is None:
                    break
                await response.write(relayed)
            await response.write_eof()
            return response
