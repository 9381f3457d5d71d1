"""A corpus of hostile or broken inputs against `/api/messages`, the built-in Direct Line
endpoint and the admin API. Each gets a clear 4xx or a polite reply; none a 500 or a stack
trace; afterwards the store holds exactly what the valid inputs produced."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from app import STORE
from chat.written import without_controls
from storage.ids import safe_id
from storage.models import Role
from tests.admin.helpers import appservice_header
from tests.conftest import AppFactory
from tests.reliability.support import is_answer, notice_key
from tests.stores import export_user
from tests.support import RecordingConnector, message_activity, settle
from tests.webchat.support import open_session, stored_messages
from webchat.directline import MAX_POST_BYTES

DEEP = ("[" * 100_000 + "]" * 100_000).encode()
DEEP_OBJECT = ('{"a":' * 20_000 + "1" + "}" * 20_000).encode()
# A continuation token that decodes to JSON nested deeper than the parser's recursion limit.
DEEP_CONTINUATION = base64.urlsafe_b64encode(b"[" * 3000).decode()
INVALID_UTF8 = b'{"type": "message", "text": "\xff\xfe\xc3\x28 broken"}'
HUGE_BODY = b'{"type": "message", "text": "' + b"x" * (300 * 1024) + b'"}'
DIRECT_LINE_HUGE_BODY = b'{"type": "message", "text": "' + b"x" * MAX_POST_BYTES + b'"}'
LEAK_MARKERS = ("Traceback", 'File "', "Exception", "RecursionError", "UnicodeDecodeError")


@dataclass
class Case:
    name: str
    body: bytes | dict[str, Any] | list[Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    path: str = ""
    # What a good outcome looks like: an HTTP status range, and what the user should get.
    statuses: tuple[int, ...] = (400,)
    reply: str | None = None  # "answer", a texts.yaml key, or None (no reply at all)


def assert_clean(status: int, text: str, case: Case) -> None:
    assert status < 500, f"{case.name}: {status} {text[:300]}"
    assert status in case.statuses, f"{case.name}: {status} {text[:300]}"
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{case.name} leaks {marker}: {text[:300]}"


async def send(client: TestClient[Any, Any], case: Case, path: str, **headers: str) -> Any:
    kwargs: dict[str, Any] = {"headers": {**headers, **case.headers}}
    if isinstance(case.body, (dict, list)):
        kwargs["json"] = case.body
    elif case.body is not None:
        kwargs["data"] = case.body
        kwargs["headers"].setdefault("Content-Type", "application/json")
    response = await client.request(case.method, case.path or path, **kwargs)
    return response.status, await response.text(), response


# --- /api/messages


def messages_corpus(url: str) -> list[Case]:
    def act(conversation_key: str, **changes: Any) -> dict[str, Any]:
        activity = message_activity(url, "hello", conversation_id=conversation_key)
        for key, value in changes.items():
            if value is ...:
                activity.pop(key, None)
            else:
                activity[key] = value
        return activity

    cases = [
        Case("malformed json", b'{"type": "message", '),
        Case("not json at all", b"<xml>hello</xml>"),
        Case("empty body", b""),
        Case("json null", b"null"),
        Case("json array", [1, 2, 3]),
        Case("json string", b'"message"'),
        Case("json number", b"42"),
        Case("nan literal", b'{"type": NaN}'),
        Case("wrong content type", b"{}", {"Content-Type": "text/plain"}, statuses=(415,)),
        Case(
            "form content type",
            b"a=b",
            {"Content-Type": "application/x-www-form-urlencoded"},
            statuses=(415,),
        ),
        Case("invalid utf-8", INVALID_UTF8),
        Case("deeply nested array", DEEP),
        Case("deeply nested object", DEEP_OBJECT),
        Case("body over the size limit", HUGE_BODY, statuses=(413,)),
        Case("missing type", act("h-1", type=...)),
        Case("type is a number", act("h-2", type=7)),
        Case("missing channelId", act("h-3", channelId=...)),
        Case("missing serviceUrl", act("h-4", serviceUrl=...)),
        Case("serviceUrl not a url", act("h-5", serviceUrl="javascript:alert(1)")),
        Case("serviceUrl elsewhere", act("h-6", serviceUrl="http://169.254.169.254/")),
        Case("missing conversation", act("h-7", conversation=...)),
        Case("conversation is a string", act("h-8", conversation="conv")),
        Case("conversation id is a list", act("h-9", conversation={"id": ["a"]})),
        Case("text is an object", act("h-10", text={"$ne": 1})),
        Case("from missing on a message", act("h-11", **{"from": ...})),
        Case("from id is a number", act("h-12", **{"from": {"id": 5}})),
        Case("enormous activity id", act("h-13", id="i" * 5000)),
        Case("enormous conversation id", act("h-14", conversation={"id": "c" * 5000})),
        Case("enormous channel id", act("h-15", channelId="t" * 5000)),
        Case("attachments not a list", act("h-16", attachments={"url": "x"})),
        Case("entities not objects", act("h-17", entities=["x", 1])),
        Case("locale is a number", act("h-18", locale=12)),
        Case("replyToId is an object", act("h-19", replyToId={"id": 1})),
        Case("card action without a value", act("h-23", type="invoke", name="adaptiveCard/action")),
        Case(
            "card action with an empty value",
            act("h-24", type="invoke", name="adaptiveCard/action", value={}),
        ),
        Case(
            "card action whose action is a string",
            act("h-25", type="invoke", name="adaptiveCard/action", value={"action": "x"}),
        ),
        # Well-formed but odd: accepted, and the user gets a polite reply (or nothing to reply).
        Case("unknown activity type", act("h-20", type="holographicProjection"), statuses=(200,)),
        Case("typing activity", act("h-21", type="typing"), statuses=(200,)),
        Case("end of conversation", act("h-22", type="endOfConversation"), statuses=(200,)),
        Case(
            "text beyond the size limit",
            act("ok-1", text="y" * 9000),
            statuses=(202,),
            reply="message_too_long",
        ),
        Case("whitespace only", act("ok-2", text=" \n\t "), statuses=(202,), reply="empty_message"),
        Case("no text at all", act("ok-3", text=...), statuses=(202,), reply="empty_message"),
        Case(
            "attachment with a bad url",
            act(
                "ok-4",
                text="",
                attachments=[{"contentType": "image/png", "contentUrl": "file:///etc/passwd"}],
            ),
            statuses=(202,),
            reply="unsupported_attachment",
        ),
        Case(
            "attachment of garbage",
            act(
                "ok-5",
                text="what is this?",
                attachments=[{"contentType": 5, "contentUrl": {"x": 1}}, "junk"],
            ),
            statuses=(202, 400),
            reply="answer",
        ),
        Case(
            "control characters",
            act("ok-6", text="hi\x00\x07\x1b[31m\u202e\ufeff there"),
            statuses=(202,),
            reply="answer",
        ),
        Case("lone surrogate escape", b"", statuses=(202, 400), reply="answer"),
        Case(
            "long but allowed conversation id",
            act("ok-7", conversation={"id": "c" * 1000}),
            statuses=(202,),
            reply="answer",
        ),
        Case(
            "script in text",
            act("ok-8", text="<script>alert(1)</script>"),
            statuses=(202,),
            reply="answer",
        ),
    ]
    surrogate = act("ok-9")
    encoded = json.dumps(surrogate).replace('"hello"', '"bad \\ud800 pair"').encode()
    cases[-3] = Case("lone surrogate escape", encoded, statuses=(202, 400), reply="answer")
    return cases


async def test_hostile_bodies_on_the_messaging_endpoint_get_clean_4xx_or_a_polite_reply(
    make_app: AppFactory, connector: RecordingConnector
) -> None:
    client = await make_app()
    corpus = messages_corpus(connector.url)
    accepted: list[tuple[Case, dict[str, Any]]] = []
    for case in corpus:
        status, text, response = await send(client, case, "/api/messages")
        assert_clean(status, text, case)
        if status >= 400 and response.content_type == "application/json":
            payload = json.loads(text)
            # An invoke is answered in its own protocol: a card action's error response.
            card_error = payload.get("type") == "application/vnd.microsoft.error"
            error = payload["value"] if card_error else payload["error"]
            assert error["code"] and error["message"], case.name
        if status == 202:
            body = case.body if isinstance(case.body, dict) else json.loads(case.body or b"{}")
            accepted.append((case, body))
    await settle(client, within=60)

    store = client.server.app[STORE]
    for case, activity in accepted:
        finals = [m for m in connector.messages() if m.get("replyToId") == activity["id"]]
        assert len(finals) == 1, (case.name, finals)
        if case.reply == "answer":
            assert is_answer(finals[0]), case.name
        else:
            assert notice_key(finals[0]["text"]) == case.reply, (case.name, finals[0]["text"])
    # The store holds only what valid inputs produced: a prompt and its answer for each one
    # answered, nothing for refusals and rejected input.
    for case in corpus:
        body = case.body if isinstance(case.body, dict) else None
        if body is None or not isinstance(body.get("conversation"), dict):
            continue
        conversation = body["conversation"].get("id")
        if not isinstance(conversation, str) or not isinstance(body.get("channelId"), str):
            continue
        stored = await store.conversation_messages(safe_id(f"{body['channelId']}:{conversation}"))
        if case.reply == "answer" and any(c is case for c, _ in accepted):
            assert [m.role for m in stored] == [Role.USER, Role.ASSISTANT], case.name
            # As it was sent, but for control characters, which carry nothing (chat.written).
            assert stored[0].text == without_controls(body["text"]).strip(), case.name
        else:
            assert stored == [], case.name
    assert len(corpus) >= 40


async def test_duplicate_and_out_of_order_deliveries_give_one_answer_each_in_arrival_order(
    make_app: AppFactory, connector: RecordingConnector
) -> None:
    client = await make_app()
    first = message_activity(connector.url, "first", activity_id="a-1")
    second = message_activity(
        connector.url, "second", activity_id="a-2", timestamp="2026-11-21T09:00:00Z"
    )  # older timestamp, arrives later
    for activity in (first, first, second, first, second):
        response = await client.post("/api/messages", json=activity)
        assert response.status == 202
    await settle(client)
    assert [m["replyToId"] for m in connector.messages()] == ["a-1", "a-2"]
    stored = await client.server.app[STORE].conversation_messages(safe_id("test:conv-1"))
    assert [(m.role, m.text) for m in stored if m.role is Role.USER] == [
        (Role.USER, "first"),
        (Role.USER, "second"),
    ]
    assert len(stored) == 4


# --- the built-in Direct Line


def directline_corpus() -> list[Case]:
    return [
        Case("dl malformed json", b'{"type": '),
        Case("dl invalid utf-8", INVALID_UTF8),
        Case("dl deeply nested", DEEP),
        Case("dl json array", [{"type": "message"}]),
        Case("dl json null", b"null"),
        Case("dl missing type", {"text": "hi"}),
        Case("dl unknown type", {"type": "invoke", "name": "adaptiveCard/action"}),
        Case("dl type is a list", {"type": ["message"]}),
        Case(
            "dl feedback whose entities are a number",
            {"type": "event", "name": "webchat:activity-status/feedback", "entities": 5},
            statuses=(200, 400),
        ),
        Case(
            "dl feedback whose entities are true",
            {"type": "event", "name": "webchat:activity-status/feedback", "entities": True},
            statuses=(200, 400),
        ),
        Case("dl body over the size limit", DIRECT_LINE_HUGE_BODY, statuses=(413,)),
        # Past the app's limit but within the Direct Line's: a paste gets the notice in the chat.
        Case("dl paste over the app's limit", HUGE_BODY, statuses=(200,), reply="message_too_long"),
        Case(
            "dl text is a number",
            {"type": "message", "text": 12},
            statuses=(200,),
            reply="empty_message",
        ),
        Case(
            "dl text beyond the limit",
            {"type": "message", "text": "z" * 9000},
            statuses=(200,),
            reply="message_too_long",
        ),
        Case(
            "dl attachments with bad urls",
            {
                "type": "message",
                "text": "",
                "attachments": [
                    {"contentType": "image/png", "contentUrl": "http://10.0.0.1/x"},
                    7,
                    None,
                ],
            },
            statuses=(200,),
            reply="unsupported_attachment",
        ),
        Case(
            "dl enormous locale and client id",
            {
                "type": "message",
                "text": "hola",
                "locale": "x" * 10_000,
                "channelData": {"clientActivityID": "c" * 10_000},
            },
            statuses=(200,),
            reply="answer",
        ),
        Case(
            "dl spoofed from and conversation",
            {
                "type": "message",
                "text": "who am i",
                "from": {"id": "admin", "role": "bot"},
                "conversation": {"id": "other"},
            },
            statuses=(200,),
            reply="answer",
        ),
        Case(
            "dl control characters",
            {"type": "message", "text": "\x00\x1b]0;pwn\x07 hi"},
            statuses=(200,),
            reply="answer",
        ),
        Case("dl bad watermark", None, method="GET", statuses=(400,)),
        Case("dl huge watermark", None, method="GET", statuses=(400,)),
    ]


async def test_hostile_bodies_on_direct_line_get_clean_4xx_or_a_polite_reply(
    make_app: AppFactory,
) -> None:
    client = await make_app(WEBCHAT_TOKEN_SECRET="a-test-token-secret-that-is-long-enough-0123")
    session = await open_session(client)
    path = f"/v3/directline/conversations/{session.conversation_id}/activities"
    expected_replies: list[str] = []
    for case in directline_corpus():
        if case.name == "dl bad watermark":
            case.path = f"{path}?watermark=abc"
        elif case.name == "dl huge watermark":
            case.path = f"{path}?watermark={'9' * 5000}"
        status, text, _ = await send(client, case, path, **session.headers)
        assert_clean(status, text, case)
        if case.reply is not None:
            expected_replies.append(case.reply)
    bot_messages = await session.wait_for_bot_messages(len(expected_replies))
    await settle(client)
    got = ["answer" if is_answer(m) else notice_key(m["text"]) for m in bot_messages]
    assert got == expected_replies
    stored = await stored_messages(client, session.conversation_id)
    user_texts = [m.text for m in stored if m.role is Role.USER]
    assert user_texts == ["hola", "who am i", "]0;pwn hi"]
    assert {m.user_id for m in stored} == {session.user_id}, "the token decides the user"


# --- the admin API


def admin_corpus() -> list[Case]:
    api = "/admin/api"
    return [
        Case("admin page size not a number", method="GET", path=f"{api}/conversations?page_size=x"),
        Case("admin page size negative", method="GET", path=f"{api}/conversations?page_size=-5"),
        Case(
            "admin page size enormous",
            method="GET",
            path=f"{api}/conversations?page_size={'9' * 5000}",
        ),
        Case("admin bad date", method="GET", path=f"{api}/conversations?since=yesterday-ish"),
        Case("admin category not a name", method="GET", path=f"{api}/conversations?category=x-y"),
        Case("admin search too long", method="GET", path=f"{api}/conversations?q={'q' * 5000}"),
        Case(
            "admin forged continuation",
            method="GET",
            path=f"{api}/conversations?continuation=eyJub3QiOiJ2YWxpZCJ9",
        ),
        Case(
            "admin garbage continuation",
            method="GET",
            path=f"{api}/conversations?continuation=%00%ff%fe",
        ),
        Case(
            "admin unknown conversation",
            method="GET",
            path=f"{api}/conversations/nope",
            statuses=(404,),
        ),
        Case(
            "admin enormous conversation id",
            method="GET",
            path=f"{api}/conversations/{'x' * 4000}",
            statuses=(400, 404, 414),
        ),
        Case(
            "admin traversal conversation id",
            method="GET",
            path=f"{api}/conversations/..%2F..%2Fetc%2Fpasswd",
            statuses=(400, 404),
        ),
        Case("admin export format", method="GET", path=f"{api}/export/conversations?format=xml"),
        Case("admin audit limit", method="GET", path=f"{api}/audit?limit=0"),
        Case("admin audit continuation", method="GET", path=f"{api}/audit?continuation=AAAA"),
        Case(
            "admin deeply nested continuation",
            method="GET",
            path=f"{api}/conversations?continuation={DEEP_CONTINUATION}",
        ),
        Case(
            "admin audit deeply nested continuation",
            method="GET",
            path=f"{api}/audit?continuation={DEEP_CONTINUATION}",
        ),
        Case("admin reveal malformed json", b'{"user": ', path=f"{api}/reveal"),
        Case("admin reveal invalid utf-8", INVALID_UTF8, path=f"{api}/reveal"),
        Case("admin reveal deeply nested", DEEP, path=f"{api}/reveal"),
        Case("admin reveal array", [1], path=f"{api}/reveal"),
        Case("admin reveal no reason", {"user": "u-1"}, path=f"{api}/reveal"),
        Case(
            "admin reveal wrong types",
            {"user": ["u"], "reason": {"a": 1}},
            path=f"{api}/reveal",
            statuses=(400, 404),
        ),
        Case(
            "admin delete without confirmation",
            {"user": "carol@contoso.com"},
            path=f"{api}/users/delete",
        ),
        Case(
            "admin delete confirmation mismatch",
            {"user": "carol@contoso.com", "confirm": "carol", "reason": "erasure request 7"},
            path=f"{api}/users/delete",
        ),
        Case("admin delete deeply nested", DEEP_OBJECT, path=f"{api}/users/delete"),
        Case(
            "admin delete over the size limit",
            HUGE_BODY,
            path=f"{api}/users/delete",
            statuses=(413,),
        ),
    ]


async def test_hostile_requests_to_the_admin_api_get_clean_4xx_and_change_nothing(
    make_app: AppFactory,
) -> None:
    from tests.admin.conftest import seeded

    client = await seeded(await make_app(ADMIN_AUTH_MODE="appservice"))
    admin = {"X-MS-CLIENT-PRINCIPAL": appservice_header(["Admin"])}
    csrf = (await (await client.get("/admin/api/me", headers=admin)).json())["csrfToken"]
    store = client.server.app[STORE]
    before = await export_user(store, "carol@contoso.com")
    for case in admin_corpus():
        status, text, response = await send(client, case, "", **admin, **{"X-CSRF-Token": csrf})
        assert_clean(status, text, case)
        if response.content_type == "application/json":
            assert "error" in json.loads(text), case.name
    assert await export_user(store, "carol@contoso.com") == before


def test_the_corpus_has_at_least_fifty_inputs() -> None:
    total = len(messages_corpus("http://127.0.0.1:1")) + len(directline_corpus())
    total += len(admin_corpus()) + 2  # duplicates and out-of-order deliveries
    assert total >= 50
