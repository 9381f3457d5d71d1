"""The built-in Direct Line 3.0 endpoint (`/v3/directline/...`) that stock Web Chat reaches
through its `domain` option, so the widget works with no Azure Bot Service at all.

The client side speaks Direct Line 3.0 (start, reconnect, post, get with watermark, token
refresh, WebSocket stream of ActivitySets and keep-alives). Each user activity becomes a Bot
Framework activity built here: channel `directline`, `from` taken from the token (never from the
browser), an id assigned here, and `serviceUrl` = this process's own loopback connector
(`webchat/connector.py`) with a per-process key in its path. It runs through
`MessagesEndpoint.accept`, the same pipeline as every channel.

With `WEBCHAT_AUTH_MODE=appservice` every call must also come from the person the token was
issued to (App Service's sign-in header, as for the token endpoint): a token copied out of a
browser or a log is of no use to anyone else. The stream address carries a one-use stream ticket,
never the token (webchat/tokens.py says why). Facts:
shared/reference/bot-framework-teams-directline.md; https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-direct-line-3-0-api-reference
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import struct
import time
from collections.abc import Callable
from socket import SO_LINGER, SOL_SOCKET
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from bot.routes import (
    SHUTTING_DOWN_RETRY_AFTER_SECONDS,
    BadActivity,
    MessagesEndpoint,
    json_error,
    validate_activity,
)
from bot.turns import QUEUE_FULL_RETRY_AFTER_SECONDS
from bot.webchat_shapes import FEEDBACK_EVENT, STOP_EVENT, feedback_from_event, stopped_stream_id
from config import Settings, WebChatAuthMode
from webchat.activities import now_iso, public_copy
from webchat.conversations import (
    MAX_PER_LOCAL_USER,
    MAX_PER_USER,
    Conversation,
    ConversationRegistry,
    Participant,
    RegistryFull,
    Subscriber,
)
from webchat.identity import NotSignedIn, current_user
from webchat.limits import OncePerMinute, PostBodies, TooMuchBeingRead
from webchat.tokens import Grant, StreamTickets, TokenError, TokenSigner, bearer

log = logging.getLogger(__name__)

PREFIX = "/v3/directline"
CONNECTOR_PREFIX = "/webchat/connector"
CHANNEL_ID = "directline"
BOT_ACCOUNT = {"id": "assistant", "name": "Assistant", "role": "bot"}
KEEPALIVE_SECONDS = 20.0
# A stream's socket being closed waits at most this long for its client to take the close (a
# reader that does not read never does): then its connection is dropped, and with it all that
# waits to be written to it.
CLOSE_SECONDS = 5.0
SWEEP_SECONDS = 300.0
STREAM_TICKET_KEY_PURPOSE = "built-in Direct Line stream tickets"
# Web Chat's Direct Line client also sends X-Requested-With on every call to another origin.
_CORS_HEADERS = "Authorization, Content-Type, x-ms-bot-agent, X-Requested-With"
_MAX_LOCALE = 20
_MAX_TIME_ZONE = 64
_MAX_CLIENT_ID = 128
# Web Chat posts whatever was pasted, and a refused POST shows only "Send failed. Retry.", which
# every retry repeats. Up to this size the bot takes the activity and answers with its "too long"
# notice instead. 4 MiB holds a pasted book (a million Japanese characters is about 3 MB of
# UTF-8); aiohttp stops reading at it, so one post holds a few times this at most. Beyond it:
# a JSON 413. The app-wide limit (app.py) stays for every other route.
MAX_POST_BYTES = 4 * 1024 * 1024
# Bytes of large posts read at once (webchat.limits.PostBodies): two of the largest per person (a
# paste and its retry), 16 of them in all. Posts up to SMALL_POST_BYTES (an ordinary message is a
# few KB; MAX_MESSAGE_CHARS of Japanese about 24 KB) are not counted, so large ones being read,
# however slowly, never hold them back. Nor does any post take longer than POST_READ_SECONDS to
# arrive: then it is a 408, and what it held is free again.
POST_BYTES_PER_USER = 2 * MAX_POST_BYTES
POST_BYTES_IN_ALL = 16 * MAX_POST_BYTES
SMALL_POST_BYTES = 64 * 1024
POST_READ_SECONDS = 30.0


class DirectLineError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BuiltinDirectLine:
    def __init__(
        self,
        settings: Settings,
        messages: Callable[[], MessagesEndpoint],
        signer: TokenSigner | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._settings = settings
        self._messages = messages
        self.signer = signer or TokenSigner(settings.webchat_token_secret.get_secret_value())
        self.stream_tickets = StreamTickets(self.signer.subkey(STREAM_TICKET_KEY_PURPOSE))
        self.post_bodies = PostBodies(POST_BYTES_PER_USER, POST_BYTES_IN_ALL, SMALL_POST_BYTES)
        self._post_refusals = OncePerMinute()
        local = settings.webchat_auth_mode is WebChatAuthMode.LOCAL
        self.conversations = ConversationRegistry(
            per_user=MAX_PER_LOCAL_USER if local else MAX_PER_USER, busy=self.turn_in_progress
        )
        # The connector routes accept only calls whose path carries this key: only this process
        # knows it (it reaches the bot inside serviceUrl and is stripped from all that the
        # browser sees), so no one else can post into a conversation, even with its id.
        self.connector_key = secrets.token_urlsafe(32)
        self.keepalive_seconds = keepalive_seconds
        self._sweeper: asyncio.Task[None] | None = None

    # --- lifecycle

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="directline-sweep")

    async def stop(self) -> None:
        self.conversations.close_all()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.conversations.sweep()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("OPTIONS", PREFIX + "/{tail:.*}", self._preflight)
        router.add_post(PREFIX + "/conversations", self._start)
        router.add_get(PREFIX + "/conversations/{conversation}", self._reconnect)
        router.add_post(PREFIX + "/conversations/{conversation}/activities", self._post)
        router.add_get(PREFIX + "/conversations/{conversation}/activities", self._get)
        router.add_post(PREFIX + "/conversations/{conversation}/upload", self._upload)
        router.add_get(PREFIX + "/conversations/{conversation}/stream", self._stream)
        router.add_post(PREFIX + "/tokens/refresh", self._refresh)

    # --- tokens and conversations

    def open_conversation(self, participant: Participant) -> tuple[str, Grant]:
        conversation = self.conversations.create(participant)
        return self.signer.issue(
            Grant(
                conversation.id,
                participant.user_id,
                participant.user_name,
                participant.aad_object_id,
                participant.tenant_id,
            )
        )

    def resume_conversation(
        self, participant: Participant, conversation_id: str, token: str
    ) -> tuple[str, Grant] | None:
        """A fresh token for a conversation the page opened earlier in the same browser tab (a
        reload, or a link followed and Back), or None when it cannot go on: the page then starts
        a new one. `token` is the newest token the page had for it: it must still be valid (the
        same rule as a token refresh), name this conversation and the person signed in now, and
        this process must still hold the conversation with what it showed (after a restart or
        an eviction it holds nothing of that, even once the open page's reconnect reopened it).
        The conversation's owner is checked too, as every Direct Line call does."""
        try:
            grant = self.signer.verify(token, conversation_id)
        except TokenError as exc:
            not_resumed(str(exc))
            return None
        same_person = secrets.compare_digest(
            grant.user_id, participant.user_id
        ) and secrets.compare_digest(grant.tenant_id, participant.tenant_id)
        if not same_person:
            not_resumed("another user")
            return None
        conversation = self.conversations.get(conversation_id)
        if conversation is None or conversation.reopened:
            not_resumed("not held")
            return None
        if not secrets.compare_digest(conversation.owner.user_id, participant.user_id):
            not_resumed("another owner")
            return None
        conversation.touch()
        return self.signer.issue(
            Grant(
                conversation.id,
                participant.user_id,
                participant.user_name,
                participant.aad_object_id,
                participant.tenant_id,
            )
        )

    def turn_in_progress(self, conversation: Conversation) -> bool:
        """A turn of this conversation is queued or running: its answer is still to come."""
        return self._messages().turn_in_progress(CHANNEL_ID, conversation.id)

    def _authorize(self, request: web.Request, conversation_id: str | None) -> Grant:
        try:
            grant = self.signer.verify(
                bearer(request.headers.get("Authorization")), conversation_id
            )
        except TokenError as exc:
            raise DirectLineError(403, "TokenInvalid", "The token is not valid.") from exc
        self._signed_in_as(
            request,
            lambda user, tenant: _same_person(user, tenant, grant.user_id, grant.tenant_id),
        )
        return grant

    def _signed_in_as(self, request: web.Request, is_holder: Callable[[str, str], bool]) -> None:
        """With App Service sign-in, only the person a token or ticket was issued to may use it.
        `is_holder(channel user id, tenant id)` of the person signed in says whether it is them.
        Locally everyone is the one development user: nothing to check."""
        mode = self._settings.webchat_auth_mode
        if mode is not WebChatAuthMode.APPSERVICE:
            return
        try:
            user = current_user(request, mode)
        except NotSignedIn:
            raise DirectLineError(403, "Forbidden", "Sign in to use the assistant.") from None
        if not is_holder(user.channel_user_id, user.tenant_id):
            raise DirectLineError(
                403, "Forbidden", "The token was issued to someone other than who is signed in."
            )

    def _conversation(self, grant: Grant) -> Conversation:
        conversation = self.conversations.get(grant.conversation_id)
        if conversation is None:
            # A valid token for a conversation this process does not hold (a restart, an
            # eviction, another instance): open it again under the same id; the history is in
            # the store.
            try:
                conversation = self.conversations.reopen(
                    grant.conversation_id,
                    Participant(
                        grant.user_id, grant.user_name, grant.aad_object_id, grant.tenant_id
                    ),
                )
            except RegistryFull:
                raise DirectLineError(
                    503, "ServiceUnavailable", "Too many conversations are open; retry shortly."
                ) from None
        return conversation

    def _owner_matches(self, conversation: Conversation, grant: Grant) -> None:
        if not secrets.compare_digest(conversation.owner.user_id, grant.user_id):
            raise DirectLineError(403, "TokenInvalid", "The token is not valid.")

    # --- URLs

    def base_url(self, request: web.Request) -> str:
        if self._settings.public_base_url:
            return self._settings.public_base_url.rstrip("/")
        scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
        return f"{scheme if scheme in ('http', 'https') else 'http'}://{request.host}"

    def _stream_url(self, request: web.Request, grant: Grant, mark: int) -> str:
        """The WebSocket address with a stream ticket (`t`, as Azure's streamUrl has it), not the
        token: HTTP logs in front of the app record query strings."""
        base = self.base_url(request)
        ws = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
        conversation = grant.conversation_id
        ticket = self.stream_tickets.issue(conversation, grant.user_id, grant.tenant_id)
        return f"{ws}{PREFIX}/conversations/{conversation}/stream?t={ticket}&watermark={mark}"

    def service_url(self, request: web.Request) -> str:
        """This process's own connector, over loopback: the bound port of this very connection
        (the socket's local address), on 127.0.0.1 unless HOST names one specific interface."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
        port = port or self._settings.port
        host = connector_host(self._settings.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}{CONNECTOR_PREFIX}/{self.connector_key}"

    # --- handlers

    async def _run(self, request: web.Request, handler: Callable[[], Any]) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler()
        except DirectLineError as exc:
            response = _refusal(exc)
        self._cors(request, response)
        return response

    def _cors(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin and origin in self._settings.webchat_trusted_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"

    async def _preflight(self, request: web.Request) -> web.Response:
        response = web.Response(status=204)
        self._cors(request, response)
        if "Access-Control-Allow-Origin" in response.headers:
            response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Max-Age"] = "600"
        return response

    async def _start(self, request: web.Request) -> web.StreamResponse:
        async def handle() -> web.Response:
            grant = self._authorize(request, None)
            token = bearer(request.headers.get("Authorization"))
            conversation = self._conversation(grant)
            self._owner_matches(conversation, grant)
            if not conversation.started:
                conversation.started = True
                await self._conversation_update(request, conversation, grant)
            return web.json_response(
                {
                    "conversationId": conversation.id,
                    "token": token,
                    "expires_in": max(0, grant.expires_at - _now()),
                    "streamUrl": self._stream_url(request, grant, 0),
                    "referenceGrammarId": "",
                },
                status=201,
            )

        return await self._run(request, handle)

    async def _reconnect(self, request: web.Request) -> web.StreamResponse:
        async def handle() -> web.Response:
            conversation_id = request.match_info["conversation"]
            grant = self._authorize(request, conversation_id)
            token = bearer(request.headers.get("Authorization"))
            conversation = self._conversation(grant)
            mark = _watermark(request.query.get("watermark"))
            if mark is None:
                # Direct Line 3.0: without a watermark, only what comes after the reconnection.
                mark = conversation.watermark
            return web.json_response(
                {
                    "conversationId": conversation.id,
                    "token": token,
                    "expires_in": max(0, grant.expires_at - _now()),
                    "streamUrl": self._stream_url(request, grant, mark),
                }
            )

        return await self._run(request, handle)

    async def _refresh(self, request: web.Request) -> web.StreamResponse:
        async def handle() -> web.Response:
            grant = self._authorize(request, None)
            token, fresh = self.signer.issue(grant)
            return web.json_response(
                {
                    "conversationId": fresh.conversation_id,
                    "token": token,
                    "expires_in": self.signer.lifetime,
                }
            )

        return await self._run(request, handle)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        async def handle() -> web.Response:
            grant = self._authorize(request, request.match_info["conversation"])
            conversation = self._conversation(grant)
            mark = _watermark(request.query.get("watermark")) or 0
            activities = conversation.after(mark)
            conversation.touch()
            return web.json_response(
                {"activities": activities, "watermark": str(conversation.watermark)}
            )

        return await self._run(request, handle)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        async def handle() -> web.Response:
            self._authorize(request, request.match_info["conversation"])
            raise DirectLineError(
                415, "NotSupported", "This assistant does not accept file uploads."
            )

        return await self._run(request, handle)

    async def _post(self, request: web.Request) -> web.StreamResponse:
        async def handle() -> web.Response:
            grant = self._authorize(request, request.match_info["conversation"])
            conversation = self._conversation(grant)
            size = request.content_length
            if size is not None and size > MAX_POST_BYTES:
                raise _too_big()
            try:
                # A body without a length (chunked) may be as large as any.
                with self.post_bodies.reading(
                    grant.user_id, MAX_POST_BYTES if size is None else size
                ):
                    return await self._take_post(request, conversation, grant)
            except TooMuchBeingRead as exc:
                raise self._post_refused(exc) from None

        return await self._run(request, handle)

    def _post_refused(self, exc: TooMuchBeingRead) -> DirectLineError:
        """Web Chat shows "Send failed. Retry." either way: the post was not taken. Logged at
        most once a minute: each refusal costs its sender only the headers."""
        untold = self._post_refusals.due()
        if untold is not None:
            log.info(
                "a direct line post was refused: too much being read at once",
                extra={
                    "event": "directline_post_refused",
                    "everyone": exc.everyone,
                    "untold": untold,
                },
            )
        if exc.everyone:
            return DirectLineError(
                503, "ServiceUnavailable", "The assistant is busy; send it again."
            )
        return DirectLineError(
            429,
            "TooManyRequests",
            "Too many messages are being sent at once; send it again shortly.",
        )

    async def _take_post(
        self, request: web.Request, conversation: Conversation, grant: Grant
    ) -> web.Response:
        try:
            body = json.loads(await _read_body(request))
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
            raise DirectLineError(400, "BadArgument", "The body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise DirectLineError(400, "BadArgument", "The body must be an activity.")
        kind = body.get("type")
        if kind == "typing":
            return web.json_response({"id": conversation.next_activity_id()})
        if kind not in ("message", "event"):
            raise DirectLineError(400, "BadArgument", "Unsupported activity type.")
        raw = self._user_activity(request, conversation, grant, body)
        if kind == "event" and raw["name"] == FEEDBACK_EVENT:
            await self._feedback(request, conversation, grant, raw)
        else:
            await self._accept(raw)
        # Echo it like Direct Line does; Web Chat matches it by channelData.clientActivityID.
        conversation.deliver(self._echo(raw))
        return web.json_response({"id": raw["id"]})

    async def _accept(self, raw: dict[str, Any]) -> web.Response:
        try:
            validate_activity(raw)
        except BadActivity as exc:
            raise DirectLineError(400, "BadArgument", str(exc)) from None
        response = await self._messages().accept(raw, identity_from_server=True)
        if response.status == 429:
            # Too much of this chat (or user) waits for its turn (bot.turns.WaitingLimits): not
            # taken, so Web Chat shows "Send failed" with its Retry, which posts it again.
            raise DirectLineError(
                429,
                "TooManyRequests",
                "Too many messages are waiting for an answer; send this one again shortly.",
            )
        if response.status >= 400:
            status = 503 if response.status >= 500 else 400
            raise DirectLineError(status, "BotError", "The assistant could not take the message.")
        return response

    def _echo(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The user's activity as the browser gets it back. A message the bot refuses as too long
        is cut to the limit: the conversation's log keeps up to MAX_LOG_ENTRIES echoes in memory,
        and none of them should hold more than the bot would take."""
        echo = public_copy(raw)
        text = echo.get("text")
        limit = self._settings.max_message_chars
        if isinstance(text, str) and len(text) > 2 * limit:
            # The bot's rule counts the stripped text, so only whitespace at the ends can make a
            # message it takes this long, and one post can carry megabytes of it.
            text = echo["text"] = text.strip()
        # The chat service's "too long" rule, so an accepted message is always echoed whole.
        if isinstance(text, str) and len(text.strip()) > limit:
            echo["text"] = text[:limit] + "…"
        return echo

    async def _feedback(
        self,
        request: web.Request,
        conversation: Conversation,
        grant: Grant,
        event: dict[str, Any],
    ) -> None:
        """Web Chat's thumbs: the same `message/submitAction` invoke that Teams sends. `event` is
        the activity as built by `_user_activity`, holding only the rating it read."""
        parsed = feedback_from_event(event)
        if parsed is None or parsed[0] not in conversation.rateable:
            raise DirectLineError(400, "BadArgument", "That message cannot be rated.")
        rated, reaction, text = parsed
        invoke = self._base_activity(request, conversation, grant)
        invoke.update(
            {
                "type": "invoke",
                "name": "message/submitAction",
                "replyToId": rated,
                "value": {
                    "actionName": "feedback",
                    "actionValue": {
                        "reaction": reaction,
                        "feedback": json.dumps({"feedbackText": text}),
                    },
                },
            }
        )
        response = await self._accept(invoke)
        if response.status != 200:
            raise DirectLineError(502, "BotError", "The rating could not be stored.")

    async def _conversation_update(
        self, request: web.Request, conversation: Conversation, grant: Grant
    ) -> None:
        update = self._base_activity(request, conversation, grant)
        update.update(
            {
                "type": "conversationUpdate",
                "membersAdded": [dict(BOT_ACCOUNT), self._from(grant)],
            }
        )
        try:
            await self._accept(update)
        except DirectLineError:
            log.warning("the bot did not take the conversation start")

    def _from(self, grant: Grant) -> dict[str, Any]:
        account: dict[str, Any] = {"id": grant.user_id, "name": grant.user_name, "role": "user"}
        if grant.aad_object_id:
            account["aadObjectId"] = grant.aad_object_id
        return account

    def _base_activity(
        self, request: web.Request, conversation: Conversation, grant: Grant
    ) -> dict[str, Any]:
        conversation_ref: dict[str, Any] = {"id": conversation.id}
        channel_data: dict[str, Any] = {}
        if grant.tenant_id:
            conversation_ref["tenantId"] = grant.tenant_id
            channel_data["tenant"] = {"id": grant.tenant_id}
        return {
            "id": conversation.next_activity_id(),
            "channelId": CHANNEL_ID,
            "serviceUrl": self.service_url(request),
            "timestamp": now_iso(),
            "conversation": conversation_ref,
            # The user is who the token says, whatever the browser put in `from`.
            "from": self._from(grant),
            "recipient": dict(BOT_ACCOUNT),
            "channelData": channel_data,
        }

    def _user_activity(
        self,
        request: web.Request,
        conversation: Conversation,
        grant: Grant,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        raw = self._base_activity(request, conversation, grant)
        raw["type"] = body["type"]
        text = body.get("text")
        if raw["type"] == "message":
            raw["text"] = text if isinstance(text, str) else ""
            raw["textFormat"] = "plain"
            attachments = body.get("attachments")
            if isinstance(attachments, list) and attachments:
                # Not read (uploads are refused); kept only so the bot can say so.
                raw["attachments"] = [
                    {"contentType": str(a.get("contentType", ""))[:100]}
                    for a in attachments[:10]
                    if isinstance(a, dict)
                ]
        else:
            name = body.get("name")
            raw["name"] = name[:200] if isinstance(name, str) else ""
        locale = body.get("locale")
        if isinstance(locale, str) and 0 < len(locale) <= _MAX_LOCALE:
            raw["locale"] = locale
        # The browser's IANA time zone (Web Chat sends it with every activity): the bot says
        # when a quota resets in it. Checked by the bot (bot.teams.activity_time_zone).
        zone = body.get("localTimezone")
        if isinstance(zone, str) and 0 < len(zone) <= _MAX_TIME_ZONE:
            raw["localTimezone"] = zone
        channel_data = body.get("channelData")
        client_id = channel_data.get("clientActivityID") if isinstance(channel_data, dict) else None
        if isinstance(client_id, str) and len(client_id) <= _MAX_CLIENT_ID:
            raw["channelData"]["clientActivityID"] = client_id
        if raw["type"] == "event" and raw["name"] == FEEDBACK_EVENT:
            # The echo stays in the conversation's log, and a post's entities can be megabytes:
            # keep only the rating, the one part the bot reads. Its rated id is refused unless
            # it names a message here, so that stays short too.
            rating = feedback_from_event(body)
            if rating is not None:
                raw["entities"] = [_rating_entity(*rating)]
        if raw["type"] == "event" and raw["name"] == STOP_EVENT:
            # The Stop button names the stream it stops; nothing else of the post is kept.
            stream_id = stopped_stream_id(body.get("value"))
            if stream_id is not None:
                raw["value"] = {"streamId": stream_id}
        return raw

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        conversation_id = request.match_info["conversation"]
        tickets = self.stream_tickets
        try:
            ticket = tickets.verify(request.query.get("t", ""), conversation_id)
        except TokenError:
            return json_error(403, "TokenInvalid", "The stream ticket is not valid.")
        try:
            # Before the upgrade: once the socket is open, a 400 can no longer be sent.
            self._signed_in_as(
                request,
                lambda user, tenant: secrets.compare_digest(
                    tickets.user_hash(user, tenant), ticket.user
                ),
            )
            watermark = _watermark(request.query.get("watermark"))
            conversation = self.conversations.get(conversation_id)
            if conversation is None or not secrets.compare_digest(
                tickets.user_hash(conversation.owner.user_id, conversation.owner.tenant_id),
                ticket.user,
            ):
                # Issued a moment ago by a start or reconnect that held the conversation; gone
                # since (an eviction, or another instance): Web Chat reconnects, which reopens it.
                raise DirectLineError(404, "NotFound", "The conversation is not open; reconnect.")
        except DirectLineError as exc:
            return _refusal(exc)
        tickets.use(ticket)
        socket = web.WebSocketResponse(heartbeat=None, max_msg_size=64 * 1024)
        # Subscribed before the upgrade, which awaits: a conversation forgotten meanwhile (an
        # eviction, an admin's deletion) closes this subscription with its other sockets, so
        # the socket closes at once and Web Chat reconnects, instead of staying open on a
        # conversation no reply reaches. What is delivered meanwhile waits in its outbox.
        subscriber, backlog, backlog_watermark = conversation.subscribe(watermark)
        try:
            await socket.prepare(request)
        except BaseException:
            conversation.unsubscribe(subscriber)
            raise
        reader = asyncio.create_task(_drain_incoming(socket))
        sender = asyncio.create_task(
            self._send_frames(socket, subscriber, backlog, backlog_watermark)
        )
        closed = asyncio.create_task(subscriber.wait_closed())
        try:
            # Not only the sender: while a reader that stopped reading keeps it waiting for room
            # to write, its socket may be closed for being behind, and that must end it too.
            await asyncio.wait({reader, sender, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            behind = subscriber.behind
            conversation.unsubscribe(subscriber)  # its sender, if waiting for a frame, stops
            for task in (closed, reader):
                task.cancel()
            await asyncio.gather(closed, reader, return_exceptions=True)
            # The sender is not cancelled: one waiting for room to write shares that wait with
            # the close (aiohttp), which a cancelled sender would cut short. It ends with it.
            await _close_socket(request, socket, behind)
            sender.cancel()
            [sent] = await asyncio.gather(sender, return_exceptions=True)
        if isinstance(sent, Exception):
            raise sent  # not the browser going away (`_send_frames`): a fault, logged as such
        return socket

    async def _send_frames(
        self,
        socket: web.WebSocketResponse,
        subscriber: Subscriber,
        backlog: list[dict[str, Any]],
        backlog_watermark: int,
    ) -> None:
        try:
            if backlog:
                await socket.send_json({"activities": backlog, "watermark": str(backlog_watermark)})
            while not socket.closed:
                try:
                    async with asyncio.timeout(self.keepalive_seconds):
                        frame = await subscriber.take()
                except TimeoutError:
                    await socket.send_str("")  # Direct Line's keep-alive: an empty frame
                    continue
                if frame is None:
                    return
                await socket.send_json(frame)
        except (ConnectionResetError, RuntimeError):
            pass  # the browser went away


def not_resumed(reason: str) -> None:
    """Logged when a page's resume is not granted: the reason only (an exception's type name, a
    status or a short phrase), never a token or an id."""
    log.info("the web chat starts a new conversation instead of resuming", extra={"reason": reason})


def _same_person(user_id: str, tenant_id: str, grant_user: str, grant_tenant: str) -> bool:
    return secrets.compare_digest(user_id, grant_user) and secrets.compare_digest(
        tenant_id, grant_tenant
    )


def _refusal(exc: DirectLineError) -> web.Response:
    response = json_error(exc.status, exc.code, str(exc))
    if exc.status == 503:
        response.headers["Retry-After"] = str(SHUTTING_DOWN_RETRY_AFTER_SECONDS)
    elif exc.status == 429:
        response.headers["Retry-After"] = str(QUEUE_FULL_RETRY_AFTER_SECONDS)
    return response


def _rating_entity(rated: str, reaction: str, text: str) -> dict[str, Any]:
    """The part of Web Chat's feedback action that `feedback_from_event` reads."""
    entity: dict[str, Any] = {
        "@type": "LikeAction" if reaction == "like" else "DislikeAction",
        "object": {"@type": "Message", "identifier": rated},
    }
    if text:
        entity["description"] = text
    return entity


async def _close_socket(request: web.Request, socket: web.WebSocketResponse, behind: bool) -> None:
    """Close a stream's socket; one closed for being behind says "try again later" (1013). Web
    Chat's Direct Line client reconnects after any close, from the watermark it last got. A
    client that takes no close within CLOSE_SECONDS (it is not reading) has its connection
    dropped: otherwise it would hold what waits to be written to it for as long as it stays."""
    code = WSCloseCode.TRY_AGAIN_LATER if behind else WSCloseCode.OK
    try:
        await asyncio.wait_for(socket.close(code=code), CLOSE_SECONDS)
    except TimeoutError:
        _drop(request)


def _drop(request: web.Request) -> None:
    """End a connection at once (a TCP reset), dropping what waits to be written to it. Closing
    it would wait for its client to read that first, in this process and then in the kernel."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_SOCKET, SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _drain_incoming(socket: web.WebSocketResponse) -> None:
    """Clients send nothing useful over the stream; read to notice when it closes."""
    async for message in socket:
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


async def _read_body(request: web.Request) -> bytes:
    try:
        # A copy of the request with its own limit is aiohttp's way to read one body past the
        # app's client_max_size; it still stops reading as soon as the limit is passed.
        async with asyncio.timeout(POST_READ_SECONDS):
            return await request.clone(client_max_size=MAX_POST_BYTES).read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_big() from None
    except TimeoutError:
        raise DirectLineError(
            408, "RequestTimeout", "The activity took too long to arrive."
        ) from None


def _too_big() -> DirectLineError:
    return DirectLineError(413, "MessageSizeTooBig", "The activity is larger than the size limit.")


def connector_host(listen_host: str) -> str:
    """The host the bot's replies reach the built-in connector at: loopback when the app listens
    there or on every interface, else the one interface HOST names. Every IPv6 interface (`::`)
    is IPv6 only (asyncio binds it so), so its loopback is `::1`, not 127.0.0.1."""
    if listen_host in ("", "0.0.0.0", "localhost", "127.0.0.1"):  # noqa: S104 (a comparison)
        return "127.0.0.1"
    if listen_host == "::":
        return "::1"
    return listen_host


def _watermark(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        mark = int(value)
    except ValueError:
        raise DirectLineError(400, "BadArgument", "The watermark is not valid.") from None
    if mark < 0:
        raise DirectLineError(400, "BadArgument", "The watermark is not valid.")
    return mark


def _now() -> int:
    return int(time.time())
