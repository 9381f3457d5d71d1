"""`POST /api/messages`: the Bot Framework messaging endpoint.

A message is acknowledged before the model is called (Teams redelivers after 15 s without an
answer); the turn runs on the turn queue (with APP_WORKERS > 1, the queue of the worker that owns
the conversation: bot/peers.py). Invokes need their response in the HTTP reply, so they run
inline. Every authentication failure is a 401, every malformed request a 4xx with a short
JSON error; nothing leaks exception text. Rejections are logged once per reason a minute, then
counted (bot.rejections). A reply must never come back here as a new activity (the bot would
answer its own answers for ever): a serviceUrl that is not a channel's shape, or in anonymous
mode this app's own port, is refused, and a message from the bot's own account is not answered.
An activity past the turn queue's waiting limits (bot.turns.WaitingLimits) gets 429 with
Retry-After before it is acknowledged: the channel sends it again, nothing taken is dropped.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web
from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes, AdaptiveCardInvokeResponse

from bot.adapter import ChannelAdapter
from bot.auth import AuthError, ChannelAuthenticator
from bot.connector import ConnectorClient, points_at
from bot.handler import (
    IDENTITY_FROM_SERVER,
    RAW_ACTIVITY_KEY,
    RECEIVED_AT,
    STARTED_AT,
    AssistantBot,
    conversation_key,
)
from bot.peers import NOT_ANSWERED_IN_TIME, PeerLinks
from bot.rejections import RejectionLog
from bot.turns import QUEUE_FULL_RETRY_AFTER_SECONDS, QueueFull, ShuttingDown, TurnQueue
from bot.wire import activity_from_wire, model_to_wire

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 1024
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_QUEUED_TYPES = {
    ActivityTypes.message,
    ActivityTypes.conversation_update,
    ActivityTypes.message_reaction,
    ActivityTypes.event,
    ActivityTypes.installation_update,
    # Teams: a user deleted or edited a message; in the conversation's order, after its turn.
    ActivityTypes.message_update,
    ActivityTypes.message_delete,
}


_REVISIONS = {ActivityTypes.message_update, ActivityTypes.message_delete}
# Activities a user's action sends: who acted must be named.
_FROM_A_USER = {ActivityTypes.message, *_REVISIONS}
# Conversations whose bot account is remembered (`BotAccounts`), and accounts per conversation.
BOT_ACCOUNTS_REMEMBERED = 10_000
_ACCOUNTS_PER_CONVERSATION = 4


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _unreadable() -> web.Response:
    return json_error(400, "bad_request", "The activity could not be read.")


# How soon a channel should send a refused activity again: by then a draining instance has
# usually gone and the load balancer sends it to one that answers.
SHUTTING_DOWN_RETRY_AFTER_SECONDS = 5


def _shutting_down() -> web.Response:
    response = json_error(503, "shutting_down", "The bot is restarting; retry shortly.")
    response.headers["Retry-After"] = str(SHUTTING_DOWN_RETRY_AFTER_SECONDS)
    return response


def _queue_full() -> web.Response:
    """Too much is waiting for its turn (bot.turns.WaitingLimits): refused, not accepted, so
    the channel sends it again after Retry-After (Teams and Azure's Direct Line do)."""
    response = json_error(
        429, "too_many_waiting", "Too many activities are waiting for an answer; retry shortly."
    )
    response.headers["Retry-After"] = str(QUEUE_FULL_RETRY_AFTER_SECONDS)
    return response


def _answer_of_sibling(status: int) -> web.Response:
    """What the channel gets for an activity the conversation's worker took (or refused)."""
    if status < 300:
        return web.Response(status=status)
    if status == 400:
        return _unreadable()
    if status == 503:
        return _shutting_down()
    if status == NOT_ANSWERED_IN_TIME:
        response = json_error(503, "busy", "The bot is busy; retry shortly.")
        response.headers["Retry-After"] = str(SHUTTING_DOWN_RETRY_AFTER_SECONDS)
        return response
    if status == 429:
        return _queue_full()
    return json_error(500, "internal_error", "The activity could not be taken; retry shortly.")


class BadActivity(ValueError):
    pass


def _require_str(raw: dict[str, Any], *path: str, required: bool = True) -> str | None:
    value: Any = raw
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        if required:
            raise BadActivity(f"'{'.'.join(path)}' is required")
        return None
    if not isinstance(value, str):
        raise BadActivity(f"'{'.'.join(path)}' must be a string")
    if len(value) > MAX_ID_LENGTH and path[-1] in {"id", "serviceUrl", "channelId", "replyToId"}:
        raise BadActivity(f"'{'.'.join(path)}' is too long")
    return value


def _without_lone_surrogates(value: Any, depth: int = 0) -> Any:
    """JSON may escape half a surrogate pair (`"\\ud800"`); Python accepts it, but it cannot be
    encoded as UTF-8 and a stored copy could not be read back. Each becomes U+FFFD."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if depth > 32:
        return value
    if isinstance(value, dict):
        return {
            _without_lone_surrogates(k, depth + 1): _without_lone_surrogates(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_without_lone_surrogates(v, depth + 1) for v in value]
    return value


def validate_activity(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadActivity("the body must be a JSON object (a Bot Framework activity)")
    raw.update(_without_lone_surrogates(raw))
    _require_str(raw, "type")
    _require_str(raw, "id", required=False)
    _require_str(raw, "channelId")
    _require_str(raw, "serviceUrl")
    _require_str(raw, "conversation", "id")
    _require_str(raw, "replyToId", required=False)
    _require_str(raw, "locale", required=False)
    if raw.get("type") in _FROM_A_USER:
        _require_str(raw, "text", required=False)
        _require_str(raw, "from", "id")
    # The handler reads each attachment's and entity's fields: a null or a scalar item would
    # fail the turn after the 202 instead of getting its 400 here.
    for key in ("attachments", "entities"):
        items = raw.get(key)
        if items is not None and not (
            isinstance(items, list) and all(isinstance(item, dict) for item in items)
        ):
            raise BadActivity(f"'{key}' must be a list of objects")
    return raw


def _account_id(raw: dict[str, Any], role: str) -> str:
    account = raw.get(role)
    value = account.get("id") if isinstance(account, dict) else None
    return value if isinstance(value, str) else ""


class BotAccounts:
    """The bot's account in each recent conversation: the recipient of the messages it answers
    there. A message from that account, or from its own recipient, is a reply of the bot's come
    back as a new activity (a serviceUrl that leads replies to an endpoint that posts them here):
    answering it would answer every answer, for ever. No channel sends such a message."""

    def __init__(self, size: int = BOT_ACCOUNTS_REMEMBERED) -> None:
        self._size = size
        self._accounts: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    def sent_by_the_bot(self, key: str, raw: dict[str, Any]) -> bool:
        sender = _account_id(raw, "from")
        if not sender:
            return False
        return sender == _account_id(raw, "recipient") or sender in self._accounts.get(key, ())

    def remember(self, key: str, raw: dict[str, Any]) -> None:
        recipient = _account_id(raw, "recipient")
        if not recipient:
            return
        known = self._accounts.pop(key, ())
        if recipient not in known:
            known = (recipient, *known)[:_ACCOUNTS_PER_CONVERSATION]
        self._accounts[key] = known
        if len(self._accounts) > self._size:
            self._accounts.popitem(last=False)


class MessagesEndpoint:
    def __init__(
        self,
        adapter: ChannelAdapter,
        bot: AssistantBot,
        queue: TurnQueue,
        connector: ConnectorClient,
        authenticator: ChannelAuthenticator | None,
        peers: PeerLinks | None = None,
    ) -> None:
        self._adapter = adapter
        self._bot = bot
        self._queue = queue
        self._connector = connector
        self._authenticator = authenticator
        self._peers = peers
        self._bot_accounts = BotAccounts()
        self._rejections = RejectionLog(log)

    def close(self) -> None:
        """Shutdown: the rejections counted but not yet logged are logged."""
        self._rejections.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            return json_error(
                415, "unsupported_media_type", "Send the activity as application/json."
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, "too_large", "The activity is larger than the size limit.")
        try:
            raw = validate_activity(json.loads(body))
        except (ValueError, RecursionError) as exc:
            message = str(exc) if isinstance(exc, BadActivity) else "The body is not valid JSON."
            return json_error(400, "bad_request", message)

        if self._authenticator is not None:
            try:
                await self._authenticator.authenticate(
                    request.headers.get("Authorization"), raw["channelId"], raw["serviceUrl"]
                )
            except AuthError as exc:
                # A fixed sentence per failure (bot.auth); an unauthenticated flood adds two
                # log lines a minute per reason, not one per request.
                self._rejections.rejected(str(exc))
                return json_error(401, "unauthorized", "Authentication failed.")
        if not self._reply_target_allowed(request, raw["serviceUrl"]):
            self._rejections.rejected("serviceUrl is not an allowed reply target")
            return json_error(400, "bad_request", "serviceUrl is not an allowed reply target.")
        if self._peers is not None and raw["type"] in _QUEUED_TYPES:
            key = conversation_key(raw["channelId"], raw["conversation"]["id"])
            owner = self._peers.owner(key)
            if owner is not None:
                status = await self._peers.forward(owner, raw)
                if status is not None:
                    return _answer_of_sibling(status)
        return await self.accept(raw, size=len(body))

    def _reply_target_allowed(self, request: web.Request, service_url: str) -> bool:
        """A channel's serviceUrl shape in every mode; in anonymous mode also an allowed host
        (ANONYMOUS_SERVICE_URL_HOSTS), and not this app's own listening port: no channel
        lives there (the built-in Direct Line hands its activities over in process), and
        replies sent there would come back as new activities, each answered again."""
        if not self._connector.service_url_allowed(service_url):
            return False
        if self._authenticator is not None:
            return True  # the channel's token vouched for it (its serviceurl claim)
        local = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(local, tuple) and len(local) >= 2 and isinstance(local[1], int):
            return not points_at(service_url, (str(local[0]), local[1]))
        return True

    def turn_in_progress(self, channel_id: str, conversation_id: str) -> bool:
        """Whether a turn of this conversation is queued or running in this process: its
        replies are still to come (the built-in Direct Line keeps such a conversation open)."""
        return self._queue.busy(conversation_key(channel_id, conversation_id))

    async def accept_forwarded(self, raw: dict[str, Any]) -> int:
        """An activity a sibling worker received for a conversation this worker owns
        (bot/peers.py): authenticated and validated there. The HTTP status for the channel."""
        return (await self.accept(raw)).status

    async def accept(
        self, raw: dict[str, Any], *, identity_from_server: bool = False, size: int | None = None
    ) -> web.Response:
        """Run an activity that is already authenticated and validated (`validate_activity`):
        from `handle`, or from an in-process channel such as the built-in Direct Line, which
        builds `from` and the tenant itself (`identity_from_server`). `size`: its body's bytes,
        if known (what it counts against the queue's waiting limits)."""
        # When it arrived: a turn stores nothing of it after its user's erasure (storage.
        # erasures), even one that waited in the queue while the erasure ran.
        raw = {
            **raw,
            IDENTITY_FROM_SERVER: identity_from_server,
            RECEIVED_AT: time.monotonic(),
        }
        try:
            activity = activity_from_wire(raw)
        except Exception:  # msrest raises several types for malformed shapes
            return _unreadable()

        if activity.type == ActivityTypes.invoke:
            return await self._invoke(activity, raw)
        if activity.type not in _QUEUED_TYPES:
            return web.Response(status=200)
        if activity.type == ActivityTypes.event and self._bot.stop_stream(activity, raw):
            return web.Response(status=200)  # not queued: the turn it stops runs there

        key = conversation_key(activity.channel_id, activity.conversation.id)
        if activity.type == ActivityTypes.message and not identity_from_server:
            if self._bot_accounts.sent_by_the_bot(key, raw):
                self._rejections.rejected("a message from the bot itself is not answered")
                return web.Response(status=200)
            self._bot_accounts.remember(key, raw)
        dedupe = f"{key}|{activity.id}" if activity.id else None
        if dedupe and activity.type in _REVISIONS:
            # An edit or a delete carries the id of the message it changes, as every edit of it
            # does: the time tells them apart, and a redelivery has the same time.
            dedupe = f"{dedupe}|{activity.type}|{raw.get('timestamp')}"
        # A message the shutdown keeps from ever running is still owed an answer (a notice).
        abandon = (
            (lambda: self._abandon(activity, raw))
            if activity.type == ActivityTypes.message
            else None
        )
        sender = _account_id(raw, "from")
        try:
            accepted = self._queue.submit(
                key,
                dedupe,
                lambda: self._run(activity, raw),
                abandon,
                size=size if size is not None else _size(raw),
                sender=f"{activity.channel_id}|{sender}" if sender else "",
            )
        except ShuttingDown:
            return _shutting_down()
        except QueueFull as exc:
            self._rejections.rejected(exc.reason)
            return _queue_full()
        if not accepted:
            log.info("duplicate delivery acknowledged without a second turn")
        return web.Response(status=202)

    async def _run(self, activity: Activity, raw: dict[str, Any]) -> None:
        # The queue's backstop (the turn's deadline + a grace) counts from here; the chat
        # service's deadline does too, so a slow gate cannot let the backstop end a turn
        # before it has told its user.
        started = {**raw, STARTED_AT: time.monotonic()}

        async def logic(context: TurnContext) -> None:
            context.turn_state[RAW_ACTIVITY_KEY] = started
            await self._bot.on_turn(context)

        await self._adapter.process_activity(activity, logic)

    async def _abandon(self, activity: Activity, raw: dict[str, Any]) -> None:
        async def logic(context: TurnContext) -> None:
            context.turn_state[RAW_ACTIVITY_KEY] = raw
            await self._bot.on_turn_abandoned(context)

        await self._adapter.process_activity(activity, logic)

    async def _invoke(self, activity: Activity, raw: dict[str, Any]) -> web.Response:
        async def logic(context: TurnContext) -> None:
            context.turn_state[RAW_ACTIVITY_KEY] = raw
            await self._bot.on_turn(context)

        response = await self._adapter.process_activity(activity, logic)
        if response is None:
            return web.Response(status=501)
        body = response.body
        if body is None:
            return web.Response(status=response.status)
        return web.json_response(_invoke_body(body), status=response.status)


def _size(raw: dict[str, Any]) -> int:
    """What an activity waiting in the queue holds, about: its size as UTF-8 JSON."""
    return len(json.dumps(raw, ensure_ascii=False, default=str).encode("utf-8", "replace"))


def _invoke_body(body: Any) -> Any:
    if isinstance(body, AdaptiveCardInvokeResponse) and isinstance(body.value, Exception):
        # botbuilder answers a card action it cannot read (no value, no action) with an
        # Exception(code, message) where the wire wants {"code", "message"}; msrest cannot
        # serialize it.
        code, message = [*map(str, body.value.args), "", ""][:2]
        return {
            "statusCode": int(body.status_code),
            "type": body.type,
            "value": {"code": code, "message": message},
        }
    return model_to_wire(body) if hasattr(body, "serialize") else body
