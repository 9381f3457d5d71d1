"""The activity handler: maps Bot Framework activities to the chat service."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from botbuilder.core import ActivityHandler, InvokeResponse, TurnContext
from botbuilder.schema import Activity, ActivityTypes, AdaptiveCardInvokeResponse

from bot.connector import ConnectorError
from bot.feedback import (
    SUBMIT_ACTION_INVOKE,
    FeedbackRecorder,
    FeedbackSubmission,
    parse_feedback,
)
from bot.replies import reply_activity
from bot.streaming import OpenStreams, Stoppable, reply_channel_for
from bot.teams import (
    BotProfile,
    activity_locale,
    activity_time_zone,
    bot_was_added,
    bot_was_removed,
    install_key,
    is_teams,
    is_teams_shared,
    remove_bot_mentions,
)
from bot.webchat_shapes import (
    FEEDBACK_EVENT,
    STOP_EVENT,
    WEB_CHAT_CHANNELS,
    feedback_from_event,
    stopped_stream_id,
)
from chat.service import SHUTDOWN_INTERRUPTED, ChatService, Reply, TurnInput, arrival_time
from chat.telemetry import new_reference
from chat.texts import localize
from chat.written import without_controls
from dialogs.gate import ConversationGate
from storage.base import Store, StoreError
from storage.ids import safe_id
from storage.ratings import Ratings

log = logging.getLogger(__name__)

ADAPTIVE_CARD_ACTION = "adaptiveCard/action"
# Set by `MessagesEndpoint.accept` on activities whose identity the app built itself.
IDENTITY_FROM_SERVER = "_identityFromServer"
# Set by `MessagesEndpoint.accept`: when the activity arrived (`time.monotonic()`).
RECEIVED_AT = "_receivedAt"
# Set by `MessagesEndpoint._run`: when the turn queue started its turn (`time.monotonic()`).
STARTED_AT = "_startedAt"
RAW_ACTIVITY_KEY = "assistant.raw_activity"
# How long a rating of a message not stored yet waits for the conversation's turn (Teams waits
# 15 s for the invoke's answer).
FEEDBACK_WAIT_SECONDS = 5.0
# At shutdown, how long the restarting notice waits for the store to say whether its message was
# answered already (a redelivery): a store that does not answer must not use up the notices' own
# time (bot.turns.SHUTDOWN_NOTICE_SECONDS). Not knowing counts as not answered, as a store error.
REDELIVERY_CHECK_SECONDS = 2.0


def conversation_key(channel_id: str, conversation_id: str) -> str:
    """What the turn queue orders and deduplicates by, and what picks a conversation's worker:
    from an Activity or from the wire form, whichever the caller has."""
    return f"{channel_id}:{conversation_id}"


# Channels whose clients (browsers) write `from` and channelData themselves.
_CLIENT_WRITTEN_CHANNELS = frozenset({"directline", "webchat"})


def identity_is_vouched(activity: Activity, raw: dict[str, Any]) -> bool:
    """Whether `from.aadObjectId` and the tenant in channelData can be believed. Channel
    services such as Teams set them (and Bot Service authenticates the channel); the built-in
    Direct Line sets them from the sign-in. Through Azure's Direct Line they come from the
    browser, so they identify nobody."""
    if raw.get(IDENTITY_FROM_SERVER) is True:
        return True
    return activity.channel_id not in _CLIENT_WRITTEN_CHANNELS


def user_key(activity: Activity, raw: dict[str, Any] | None = None) -> str:
    account = activity.from_property
    if account is None:
        return ""
    if not identity_is_vouched(activity, raw or {}):
        return str(account.id or "")
    # Teams: the Entra object id is the stable identity; `from.id` is per bot registration.
    return str(account.aad_object_id or account.id or "")


def tenant_key(activity: Activity, raw: dict[str, Any]) -> str:
    if not identity_is_vouched(activity, raw):
        return ""
    # botbuilder's schema drops `conversation.tenantId`; Teams puts the tenant in channelData.
    channel_data = raw.get("channelData")
    if isinstance(channel_data, dict):
        tenant = channel_data.get("tenant")
        if isinstance(tenant, dict) and isinstance(tenant.get("id"), str):
            return str(tenant["id"])
    conversation = raw.get("conversation")
    if isinstance(conversation, dict) and isinstance(conversation.get("tenantId"), str):
        return str(conversation["tenantId"])
    return ""


def _author_name(activity: Activity) -> str:
    """The sender's display name as the channel gave it (`from.name`); the chat service makes
    it safe to show the model, and uses it only where several people write."""
    account = activity.from_property
    name = getattr(account, "name", None) if account is not None else None
    return name if isinstance(name, str) else ""


def welcome_state_key(activity: Activity, raw: dict[str, Any]) -> str:
    return safe_id(f"welcome|{install_key(activity, raw)}")


class AssistantBot(ActivityHandler):  # type: ignore[misc]
    def __init__(
        self,
        chat: ChatService,
        store: Store,
        profile: BotProfile,
        gate: ConversationGate | None = None,
        turns_settled: Callable[[str, float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self._chat = chat
        self._store = store
        self._profile = profile
        # The gate's `/feedback` changes ratings too: both count through one `Ratings`.
        # A rating of an answer the chat service still keeps waits for it there (chat.kept).
        self._feedback = FeedbackRecorder(
            store, gate.ratings if gate is not None else Ratings(store, store), kept=chat.kept
        )
        # Waits (up to a time) until a conversation's queued turns are done: invokes are answered
        # at once, outside the turn queue, and may overtake the turn that stores what they rate.
        self._turns_settled = turns_settled
        # Enterprise controls and commands (tenant/channel policy, /commands, consent, rate).
        self._gate = gate
        # Web Chat streams open in this process, for the chat page's Stop (`stop_stream`).
        self._streams = OpenStreams()
        # Messages in the gate, before their chat turn, which the shutdown may end
        # (`interrupt_turns`); and whether it has (then each that reaches the gate ends there).
        self._in_gate: set[_BeforeChat] = set()
        self._stopping = False

    def interrupt_turns(self) -> int:
        """Shutdown, past its grace period: every message still in the gate (its tenant and
        channel policy, a command, the consent step, the request count: any of them may wait
        on the store) ends now with the restarting notice, unless the gate has begun to answer
        it; the chat service ends its own turns the same way (`ChatService.interrupt_turns`).
        Messages that reach the gate or the chat service from now on end at once. How many
        were interrupted."""
        self._stopping = True
        gated = sum(stage.interrupt() for stage in list(self._in_gate))
        return gated + self._chat.interrupt_turns()

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity: Activity = turn_context.activity
        raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
        text = without_controls(activity.text or "")
        if is_teams(activity):
            text, mentioned = remove_bot_mentions(text, raw)
            if is_teams_shared(activity) and not mentioned:
                return  # group chats and channels: only messages that @mention the bot
        turn = TurnInput(
            conversation_key=conversation_key(activity.channel_id, activity.conversation.id),
            activity_id=activity.id or "",
            text=text,
            user_id=user_key(activity, raw),
            tenant_id=tenant_key(activity, raw),
            channel_id=activity.channel_id or "",
            # The welcome's rule too: Teams may give the locale only in clientInfo.
            locale=activity_locale(activity, raw),
            time_zone=activity_time_zone(raw),
            has_attachments=_has_user_attachments(activity),
            shared=is_teams_shared(activity),
            author_name=_author_name(activity),
            received_at=_received_at(raw),
            started_at=_started_at(raw),
        )
        if self._gate is not None:
            try:
                gated = await self._through_gate(turn_context, turn)
            except ConnectorError as exc:
                # A command answer, refusal or consent question the channel would not take:
                # nothing more can reach the user in this turn.
                log.warning("the channel refused the gate's reply", extra={"status": exc.status})
                return
            if gated is None:
                return  # answered by the gate: a refusal, a command or the consent question
            turn = gated
        channel = reply_channel_for(
            turn_context,
            Stoppable(self._streams, turn.conversation_key, turn.user_id, turn.locale),
        )
        try:
            outcome = await self._chat.handle(turn, channel)
        finally:
            await channel.close()
        if outcome.duplicate and self._gate is not None:
            await self._gate.redelivered(turn)

    async def _through_gate(self, turn_context: TurnContext, turn: TurnInput) -> TurnInput | None:
        """`ConversationGate.before_turn`, which the shutdown may end (`interrupt_turns`): the
        user then gets the restarting notice, and None says there is nothing more to do."""
        assert self._gate is not None
        timer = asyncio.timeout(None)
        stage = _BeforeChat(timer)
        # Once the gate begins to send its answer (a refusal, a command's answer, the consent
        # question), that is the message's one reply: no notice replaces it.
        turn_context.on_send_activities(stage.closed_by_a_reply)
        try:
            async with timer:
                self._in_gate.add(stage)
                if self._stopping:
                    stage.interrupt()  # ends at the first await
                return await self._gate.before_turn(turn_context, turn)
        except TimeoutError:
            if not (stage.interrupted and timer.expired()):
                raise
        finally:
            stage.open = False
            self._in_gate.discard(stage)
        log.warning("the shutdown interrupted a message before its chat turn")
        await self._tell_restarting(turn_context)
        return None

    async def on_message_delete_activity(self, turn_context: TurnContext) -> None:
        """Teams: the user deleted a message (`softDeleteMessage`); the activity's id is the
        deleted message's. Their stored message is withdrawn (chat.service `revise`)."""
        if _teams_event(turn_context) == "softDeleteMessage":
            await self._revise(turn_context, "")

    async def on_message_update_activity(self, turn_context: TurnContext) -> None:
        """Teams: the user edited a message (`editMessage`; the activity's id is the message's,
        its text the new text), or restored one they deleted (`undeleteMessage`), whose text was
        erased at the deletion: it stays withdrawn."""
        event = _teams_event(turn_context)
        if event == "editMessage":
            raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
            text, _ = remove_bot_mentions(turn_context.activity.text or "", raw)
            await self._revise(turn_context, text)
        elif event == "undeleteMessage":
            log.info("a restored message stays withdrawn", extra={"event": "message_undeleted"})

    async def _revise(self, turn_context: TurnContext, text: str) -> None:
        activity: Activity = turn_context.activity
        raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
        # An edit from a tenant or channel the access policy refuses would store its new words,
        # as a message from there would not be. It still withdraws the old ones, as a deletion
        # does: an edit is often someone taking back what they pasted (a password).
        if text and self._refused(activity, raw, "revision_refused", "an edit"):
            text = ""
        key = conversation_key(activity.channel_id, activity.conversation.id)
        revision = TurnInput(
            conversation_key=key,
            activity_id=activity.id or "",
            text=without_controls(text),
            user_id=user_key(activity, raw),
            channel_id=activity.channel_id or "",
            shared=is_teams_shared(activity),
            received_at=_received_at(raw),
        )
        at = activity.timestamp if isinstance(activity.timestamp, datetime) else None
        try:
            # A message waiting for the usage-policy answer is not stored yet: its question
            # holds it (dialogs.gate).
            if self._gate is not None and await self._gate.revise_waiting(turn_context, revision):
                return
            await self._chat.revise(revision, at or datetime.now(UTC))
        except StoreError:
            log.exception("a user's deletion or edit of their message could not be stored")

    async def on_event_activity(self, turn_context: TurnContext) -> None:
        """Web Chat's thumbs arrive as an event (through Azure's Direct Line; the built-in one
        turns them into the `message/submitAction` invoke first)."""
        activity: Activity = turn_context.activity
        if activity.name != FEEDBACK_EVENT or activity.channel_id not in WEB_CHAT_CHANNELS:
            return
        raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
        parsed = feedback_from_event(raw)
        if parsed is None:
            log.info("a feedback event without a rating was ignored")
            return
        rated, reaction, text = parsed
        if self._rating_refused(activity, raw):
            return
        try:
            await self._feedback.record(
                conversation_key(activity.channel_id, activity.conversation.id),
                FeedbackSubmission(
                    rated,
                    "like" if reaction == "like" else "dislike",
                    text,
                    user_key(activity, raw),
                    arrived_at=arrival_time(_received_at(raw)),
                ),
            )
        except StoreError:
            log.exception("storing feedback failed")
            # Direct Line took the event, so the page thanked for it: say it was not kept.
            notice = localize("feedback_not_saved", activity_locale(activity, raw))
            try:
                await turn_context.send_activity(reply_activity(Reply(notice, is_notice=True)))
            except ConnectorError as exc:
                log.warning("the channel refused a notice", extra={"status": exc.status})

    def stop_stream(self, activity: Activity, raw: dict[str, Any]) -> bool:
        """The chat page's Stop (an event on the user's own Direct Line conversation): ends the
        named stream as Teams' Stop does, when it is still open and this user's. Answered at
        once, outside the turn queue (the turn it stops is running there); never stored or
        counted against a quota. Whether the activity was a Stop."""
        if activity.name != STOP_EVENT or activity.channel_id not in WEB_CHAT_CHANNELS:
            return False
        stream_id = stopped_stream_id(raw.get("value"))
        key = conversation_key(activity.channel_id, activity.conversation.id)
        stopped = stream_id is not None and self._streams.stop(
            key, user_key(activity, raw), stream_id
        )
        # Stop events count against no limit: only one that ended an answer (at most one per
        # answer, and answers are rate limited) is worth a line at INFO; the rest (a Stop just
        # after the answer ended, or a flood of them) would set the pace of log ingestion.
        log.log(
            logging.INFO if stopped else logging.DEBUG,
            "stop event",
            extra={"event": "stop_requested", "stopped": stopped},
        )
        return True

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse | None:
        # botbuilder's ActivityHandler answers every invoke it does not know with 501.
        activity: Activity = turn_context.activity
        if activity.name == ADAPTIVE_CARD_ACTION and not _card_action_readable(activity.value):
            # botbuilder would call .get() on it: a traceback and a 501 instead of a 400.
            return _card_action_error("The action property is not an object.")
        if activity.name != SUBMIT_ACTION_INVOKE:
            return await super().on_invoke_activity(turn_context)
        raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
        # In a group chat or channel the rater may be someone other than the answer's user.
        submission = parse_feedback(raw, user_key(activity, raw), is_teams_shared(activity))
        if submission is None:
            return InvokeResponse(status=400, body={"error": "unsupported submitAction"})
        if self._rating_refused(activity, raw):
            # Teams shows the user that the rating failed.
            return InvokeResponse(status=403, body={"error": "not allowed"})
        # Dated by its arrival: it may wait for the answer it rates (storage.late).
        submission = dataclasses.replace(submission, arrived_at=arrival_time(_received_at(raw)))
        key = conversation_key(activity.channel_id, activity.conversation.id)
        settled = self._turns_settled
        try:
            rated = await self._feedback.record(
                key,
                submission,
                (lambda: settled(key, FEEDBACK_WAIT_SECONDS)) if settled is not None else None,
            )
        except StoreError:
            # Teams shows an error for anything but 200; the rating is lost either way.
            log.exception("storing feedback failed")
            return InvokeResponse(status=500, body={})
        if rated is None and activity.channel_id in WEB_CHAT_CHANNELS:
            # The answer is gone (its conversation or user deleted meanwhile): the chat page
            # thanks only for a stored vote, so it must hear that this one was not.
            return InvokeResponse(status=404, body={"error": "unknown message"})
        return InvokeResponse(status=200, body={})

    def _rating_refused(self, activity: Activity, raw: dict[str, Any]) -> bool:
        """A rating from a tenant or channel the access policy refuses (taken off the allow-list
        since the answer was given) is not stored, as a message from there is not answered."""
        return self._refused(activity, raw, "rating_refused", "a rating")

    def _refused(self, activity: Activity, raw: dict[str, Any], event: str, what: str) -> bool:
        if self._gate is None:
            return False
        refusal = self._gate.refusal(tenant_key(activity, raw), activity.channel_id or "")
        if refusal is None:
            return False
        log.info(
            f"{what} the access policy refuses was not stored",
            extra={"event": event, "reason": refusal},
        )
        return True

    async def on_conversation_update_activity(self, turn_context: TurnContext) -> None:
        activity: Activity = turn_context.activity
        if not is_teams(activity):
            return
        raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
        if bot_was_added(activity):
            refusal = (
                self._gate.refusal(tenant_key(activity, raw), activity.channel_id or "")
                if self._gate is not None
                else None
            )
            if refusal is not None:
                # Every message from there would be refused: a welcome inviting questions
                # would mislead. No marker either, so an install allowed later is welcomed.
                log.info(
                    "no welcome for a refused install",
                    extra={"event": "welcome_withheld", "reason": refusal},
                )
                return
            await self._welcome(turn_context, raw)
        elif bot_was_removed(activity):
            await self._forget_install(activity, raw)

    async def on_installation_update_remove(self, turn_context: TurnContext) -> None:
        raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
        if is_teams(turn_context.activity):
            await self._forget_install(turn_context.activity, raw)

    async def _welcome(self, turn_context: TurnContext, raw: dict[str, Any]) -> None:
        """A short welcome when the bot is installed (1:1 chat, group chat or team); once per
        install: Teams may send the update again and a reinstall first says goodbye."""
        activity: Activity = turn_context.activity
        key = welcome_state_key(activity, raw)
        try:
            if await self._store.read_state([key]):
                return
            # The marker goes first: a failure below means no welcome rather than two.
            marker = {"welcomed_at": datetime.now(UTC).isoformat()}
            # A one-to-one chat's is its user's (exported and erased with them); a group chat's
            # or team's is no one's. Each expires with the retention period: by then Teams no
            # longer sends that install's update again.
            owner = None if is_teams_shared(activity) else user_key(activity, raw) or None
            await self._store.write_state(key, marker, None, owner=owner, expires=True)
        except StoreError:
            log.exception("the welcome marker could not be read or written")
            return
        text = self._welcome_text(activity_locale(activity, raw))
        welcome = Activity(type=ActivityTypes.message, text=text, text_format="markdown")
        try:
            await turn_context.send_activity(welcome)
        except ConnectorError:
            log.warning("the welcome message was refused by the channel")
            # Teams does not send this update again (it was answered 202), but the install's
            # next one (a member added, a reinstall) then welcomes instead of finding a marker.
            await self._forget_install(activity, raw)

    def _welcome_text(self, locale: str) -> str:
        organization = self._profile.organization_name
        intro = localize(
            "welcome", locale, assistant=self._profile.assistant_name, organization=organization
        )
        policy = self._gate.usage_policy if self._gate is not None else None
        if policy is None:
            return "\n\n".join([intro, localize("welcome_usage_note", locale)])
        # The policy users will be asked to accept, not a general note that could contradict it.
        note = localize(
            "welcome_usage_policy", locale, organization=organization, version=policy.version
        )
        return "\n\n".join([intro, note])

    async def _forget_install(self, activity: Activity, raw: dict[str, Any]) -> None:
        """The bot was removed: a later install is a new one and gets its welcome."""
        try:
            await self._store.delete_state([welcome_state_key(activity, raw)])
        except StoreError:
            log.exception("the welcome marker could not be deleted")

    async def on_turn_abandoned(self, turn_context: TurnContext) -> None:
        """The app is stopping and this activity's turn will not run (bot/turns.py). Its channel
        will not send it again (it was acknowledged), so a message the bot would have answered
        gets the restarting notice (`_tell_restarting`)."""
        activity: Activity = turn_context.activity
        if activity.type != ActivityTypes.message:
            return
        raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
        if is_teams_shared(activity) and not remove_bot_mentions(activity.text or "", raw)[1]:
            return  # a group chat or channel message not for the bot: it gets no answer
        await self._tell_restarting(turn_context)

    async def _tell_restarting(self, turn_context: TurnContext) -> None:
        """The restarting notice for a message the shutdown ended before its chat turn (never
        started, or still in the gate). It is not stored: the gate has not judged it (tenant
        and channel policy, consent, commands), and a refused tenant's text must not be kept."""
        activity: Activity = turn_context.activity
        raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
        if self._gate is not None:
            # Its turn would refuse it, or it was handled already (the channel sent it again
            # to an instance that did not remember it): "send it again" would be wrong.
            if self._gate.refusal(tenant_key(activity, raw), activity.channel_id or ""):
                return
            key = conversation_key(activity.channel_id, activity.conversation.id)
            try:
                async with asyncio.timeout(REDELIVERY_CHECK_SECONDS):
                    handled = await self._gate.handled_already(key, activity.id or "")
            except TimeoutError:
                log.warning("the store did not say in time whether a message was answered")
                handled = False
            if handled:
                return
        ref = new_reference()
        notice = localize(SHUTDOWN_INTERRUPTED, activity_locale(activity, raw), ref=ref)
        try:
            await turn_context.send_activity(reply_activity(Reply(notice, is_notice=True)))
        except ConnectorError as exc:
            log.warning("the channel refused a notice", extra={"ref": ref, "status": exc.status})
            return
        log.info("a message the shutdown left unanswered was told so", extra={"ref": ref})


class _BeforeChat:
    """A message in the gate, before its chat turn, which the shutdown may end
    (`AssistantBot.interrupt_turns`) until the gate begins to answer it: its timer is moved to
    now, so whatever the gate waits for is cancelled, and `interrupted` says why it ended."""

    def __init__(self, timer: asyncio.Timeout) -> None:
        self._timer = timer
        self.open = True
        self.interrupted = False

    def interrupt(self) -> bool:
        if not self.open:
            return False
        self.open = False
        self.interrupted = True
        self._timer.reschedule(asyncio.get_running_loop().time())
        return True

    async def closed_by_a_reply(
        self,
        context: TurnContext,
        activities: list[Activity],
        send: Callable[[], Awaitable[None]],
    ) -> None:
        """A TurnContext send handler: a message going out closes the stage."""
        if any(activity.type == ActivityTypes.message for activity in activities):
            self.open = False
        await send()


def _teams_event(turn_context: TurnContext) -> str | None:
    """`channelData.eventType` of a Teams activity (what botbuilder's TeamsActivityHandler
    dispatches message updates and deletes on); None elsewhere: other channels' clients may
    send these types, and their `from` is not vouched for."""
    raw: dict[str, Any] = turn_context.turn_state.get(RAW_ACTIVITY_KEY) or {}
    data = raw.get("channelData")
    if not is_teams(turn_context.activity) or not isinstance(data, dict):
        return None
    event = data.get("eventType")
    return event if isinstance(event, str) else None


def _card_action_readable(value: Any) -> bool:
    """An `adaptiveCard/action` value whose `action`, if any, is an object (botbuilder answers
    a missing value or action itself, with a 400)."""
    action = value.get("action") if isinstance(value, dict) else None
    return action is None or isinstance(action, dict)


def _card_action_error(message: str) -> InvokeResponse:
    # The card action protocol's error shape, as botbuilder answers its own 400s.
    return InvokeResponse(
        status=400,
        body=AdaptiveCardInvokeResponse(
            status_code=400,
            type="application/vnd.microsoft.error",
            value=Exception("BadRequest", message),
        ),
    )


def _received_at(raw: dict[str, Any]) -> float | None:
    value = raw.get(RECEIVED_AT)
    return value if isinstance(value, float) else None


def _started_at(raw: dict[str, Any]) -> float | None:
    value = raw.get(STARTED_AT)
    return value if isinstance(value, float) else None


def _has_user_attachments(activity: Activity) -> bool:
    """Whether the user sent something besides text (which the assistant does not read). Teams
    attaches an HTML copy of every formatted message: it counts only when it holds an image
    (in channels and group chats a pasted image arrives only there) or a file reference.
    Emoji come as <img> (and image/*) from Teams' emoji CDN: they are part of the text."""
    for attachment in activity.attachments or []:
        kind = attachment.content_type if isinstance(attachment.content_type, str) else ""
        if kind.lower() == "text/html":
            content = attachment.content if isinstance(attachment.content, str) else ""
            if any(not _TEAMS_EMOJI.search(tag) for tag in _HTML_ATTACHMENT.findall(content)):
                return True
        elif not _TEAMS_EMOJI.search(str(attachment.content_url or "")):
            return True
    return False


_HTML_ATTACHMENT = re.compile(r"<img\b[^>]*>?|<attachment\b", re.IGNORECASE)
_TEAMS_EMOJI = re.compile(r"schema\.skype\.com/Emoji|//statics\.teams\.cdn\.office\.net/", re.I)
