"""The bot's side of the built-in Direct Line: the Bot Framework connector API the bot replies to
(`{serviceUrl}/v3/conversations/{id}/activities[/{replyToId}]`, `PUT .../activities/{id}`).

Only this process can call it: the path carries a per-process random key (see
`BuiltinDirectLine.connector_key`), compared in constant time, and the conversation must be open.
With `MicrosoftAppId` set the bot also attaches its Entra ID token to these calls; it is not
checked here (validating it would need Entra's keys, and the key in the path already proves the
caller is this process), and it never leaves the process.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from aiohttp import web

from bot.routes import json_error
from bot.webchat_shapes import add_feedback_actions, stream_info
from webchat.activities import now_iso, public_copy, wants_feedback
from webchat.conversations import Conversation
from webchat.directline import BOT_ACCOUNT, CHANNEL_ID, CONNECTOR_PREFIX, BuiltinDirectLine

log = logging.getLogger(__name__)


class LoopbackConnector:
    def __init__(self, directline: BuiltinDirectLine) -> None:
        self._directline = directline

    def add_routes(self, router: web.UrlDispatcher) -> None:
        base = CONNECTOR_PREFIX + "/{key}/v3/conversations/{conversation}/activities"
        router.add_post(base, self._post)
        router.add_post(base + "/{activity}", self._post)
        router.add_put(base + "/{activity}", self._put)
        router.add_delete(base + "/{activity}", self._delete)

    def _conversation(self, request: web.Request) -> Conversation | None:
        if not secrets.compare_digest(request.match_info["key"], self._directline.connector_key):
            return None
        return self._directline.conversations.get(request.match_info["conversation"])

    async def _body(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
            return None
        return body if isinstance(body, dict) else None

    def _outgoing(self, conversation: Conversation, body: dict[str, Any]) -> dict[str, Any]:
        activity = public_copy(body)
        sender = body.get("from")
        if not isinstance(sender, dict):
            sender = {}
        activity["from"] = {
            "id": str(sender.get("id") or BOT_ACCOUNT["id"]),
            "name": str(sender.get("name") or BOT_ACCOUNT["name"]),
            "role": "bot",
        }
        activity["recipient"] = {"id": conversation.owner.user_id, "role": "user"}
        activity["conversation"] = {"id": conversation.id}
        activity["channelId"] = CHANNEL_ID
        activity["timestamp"] = now_iso()
        return activity

    async def _addressed_activity(
        self, request: web.Request
    ) -> tuple[Conversation, dict[str, Any], dict[str, Any]] | web.Response:
        """The open conversation named in the path, the bot's activity, and the copy the browser
        will see; or the error response."""
        conversation = self._conversation(request)
        if conversation is None:
            return json_error(404, "NotFound", "No such conversation.")
        try:
            body = await self._body(request)
        except web.HTTPRequestEntityTooLarge:
            return json_error(
                413, "MessageSizeTooBig", "The activity is larger than the size limit."
            )
        if body is None or not isinstance(body.get("type"), str):
            return json_error(400, "BadArgument", "The body must be an activity.")
        return conversation, body, self._outgoing(conversation, body)

    async def _post(self, request: web.Request) -> web.Response:
        found = await self._addressed_activity(request)
        if isinstance(found, web.Response):
            return found
        conversation, body, activity = found
        reply_to = request.match_info.get("activity")
        if reply_to and not activity.get("replyToId"):
            activity["replyToId"] = reply_to  # POST .../activities/{replyToId}
        info = stream_info(body)
        stream_id = str(info.get("streamId") or "") if info else ""
        if stream_id and stream_id in conversation.finished_streams:
            # Like Teams: a finished stream takes no more updates.
            return json_error(403, "ContentStreamNotAllowed", "The stream has ended.")
        status = 200
        if activity["type"] == "message" and info and info.get("streamType") == "final":
            # The final message takes the stream's id: Web Chat replaces what was streamed
            # (same key), and the stored answer's activity id is what a rating names.
            activity_id = stream_id or conversation.next_activity_id()
            if stream_id:
                conversation.finish_stream(stream_id)
        else:
            activity_id = conversation.next_activity_id()
            if activity["type"] == "typing" and info:
                status = 202 if stream_id else 201
        activity["id"] = activity_id
        # The bot already mirrors the stream into channelData for Web Chat (bot/streaming.py).
        if (
            activity["type"] == "message"
            and wants_feedback(body)
            and add_feedback_actions(activity, activity_id)
        ):
            conversation.mark_rateable(activity_id)
        conversation.deliver(activity, keep=activity["type"] != "typing")
        return web.json_response({"id": activity_id}, status=status)

    async def _put(self, request: web.Request) -> web.Response:
        found = await self._addressed_activity(request)
        if isinstance(found, web.Response):
            return found
        conversation, _, activity = found
        activity["id"] = request.match_info["activity"]
        # Web Chat replaces an activity it already shows when one with the same id arrives.
        conversation.deliver(activity, keep=activity["type"] != "typing")
        return web.json_response({"id": activity["id"]})

    async def _delete(self, request: web.Request) -> web.Response:
        if self._conversation(request) is None:
            return json_error(404, "NotFound", "No such conversation.")
        return json_error(405, "NotSupported", "Direct Line does not delete activities.")
