"""What runs before a chat turn: tenant/channel policy, commands, consent, the request rate.

`ConversationGate.before_turn` either handles the message itself (a refusal, a command, the
consent question) and returns None, or returns the `TurnInput` the chat service should answer:
the message itself, or, right after consent, the message that was waiting for it
(`dialogs.guard.AfterConsent`). The token quota runs later, inside the chat turn
(`dialogs.guard.QuotaGuard`), where the prompt size is known.

The thanks for an acceptance that a message waited for is sent once the request count has
decided on that message: it promises the answer only where no limit can refuse it any more;
refused, the user is told which message was not answered, why, and to send it again.

An acceptance repeated right after the same person accepted the same version (a double tap on
the button, an "I accept" sent twice) is dropped: it is no question for the assistant.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botbuilder.core import MessageFactory, TurnContext
from botbuilder.dialogs import DialogContext, DialogSet, DialogTurnStatus
from botbuilder.schema import Activity, ResourceResponse

from chat.kept import KeptWrites
from chat.service import TurnInput
from chat.texts import localize
from chat.written import as_written
from controls.audit import RefusalLog
from controls.clock import Clock, utc_now
from controls.policy import AccessPolicy, UsagePolicy
from controls.quotas import REDELIVERED, Quotas, tenant_scope
from dialogs.commands import Command, Commands, parse_command
from dialogs.consent import (
    CONSENT_DIALOG,
    ConsentDialog,
    accepted_version,
    consent_answer,
    says_it_accepts,
    stands_over,
)
from dialogs.guard import AfterConsent, excerpt, not_answered_text, refusal_text
from dialogs.state import DialogStates, StateRace
from storage.base import Store, StoreError
from storage.botstate import EXPIRES_FROM_PROPERTY
from storage.erasures import RecentErasures
from storage.ids import message_id, safe_id
from storage.ratings import Ratings

log = logging.getLogger(__name__)

# The state properties of the consent step (user state, dialog state).
_ACCEPTANCE = "usage_policy"
_DIALOG_STATE = "dialog_state"
_ASKED_BY = "consent_asked_by"
# What a turn changes together when it asks the question (or keeps it open): when two turns
# changed the dialog at once, these follow the turn whose dialog stands (`_merge_dialogs`).
_QUESTION = (_DIALOG_STATE, _ASKED_BY, EXPIRES_FROM_PROPERTY)
# An acceptance this soon after the same person's acceptance of the same version is taken for
# a repeat of it (`_repeated_acceptance`): a double tap, or a second "I accept" sent before the
# thanks arrived.
_REPEAT_WITHIN = timedelta(minutes=1)


@dataclass(frozen=True)
class GateConfig:
    access: AccessPolicy
    usage_policy: UsagePolicy | None
    organization_name: str
    # The chat service's limit: a longer message is refused there, before the model.
    max_message_chars: int


class ConversationGate:
    def __init__(
        self,
        store: Store,
        quotas: Quotas,
        refusals: RefusalLog,
        config: GateConfig,
        clock: Clock = utc_now,
        erasures: RecentErasures | None = None,
        kept: KeptWrites | None = None,
    ) -> None:
        """`kept`: the chat service's kept writes (chat.kept), where `/feedback` on an answer
        whose record is still kept waits for it."""
        self._store = store
        self._quotas = quotas
        self._erasures = erasures
        self._refusals = refusals
        self._clock = clock
        self._access = config.access
        self._policy = config.usage_policy
        self._max_chars = config.max_message_chars
        # The feedback buttons (bot.feedback) change ratings through the same `Ratings` as
        # `/feedback`, so that a conversation's rating changes are counted one at a time.
        self.ratings = Ratings(store, store)
        self._commands = Commands(store, quotas, self.ratings, kept)
        self._states = DialogStates(store, merge_user=_merge_user, merge_dialogs=_merge_dialogs)
        self._acceptance = self._states.user.create_property(_ACCEPTANCE)
        # The activity that last answered the consent question in this conversation (see
        # `_consent`). Kept in the dialog state, written anyway when the question ends.
        self._answered_by = self._states.dialogs.create_property("consent_answered_by")
        # The activity that last started the consent question here: sent again, it would be
        # taken as an answer that is not one (a "Please reply" prompt) or as a new message.
        self._asked_by = self._states.dialogs.create_property(_ASKED_BY)
        # When the question was asked: the message waiting for it expires counted from then
        # (storage.botstate.EXPIRES_FROM_PROPERTY), however many messages find it still open.
        self._asked_at = self._states.dialogs.create_property(EXPIRES_FROM_PROPERTY)
        self._dialogs = DialogSet(self._states.dialogs.create_property(_DIALOG_STATE))
        self._question: ConsentDialog | None = None
        if config.usage_policy is not None:
            self._question = ConsentDialog(
                config.usage_policy, self._acceptance, config.organization_name, clock
            )
            self._dialogs.add(self._question)

    @property
    def usage_policy(self) -> UsagePolicy | None:
        """The policy users must accept before their first question (None: no consent step)."""
        return self._policy

    def refusal(self, tenant_id: str, channel_id: str) -> str | None:
        """The access policy's refusal event for a tenant and channel, None when allowed."""
        return self._access.refusal(tenant_id, channel_id)

    async def before_turn(self, context: TurnContext, turn: TurnInput) -> TurnInput | None:
        refusal = self._access.refusal(turn.tenant_id, turn.channel_id)
        if refusal is not None:
            await self._refuse(context, turn, refusal)
            return None
        parsed = parse_command(turn.text)
        try:
            if parsed is not None:
                reply = await self._commands.run(parsed, turn)
                if reply is not None:
                    await _say(context, reply)
                if parsed.command is not Command.NEW or not parsed.args:
                    return None
                # `/new What is our travel policy?`: the question is the new context's first,
                # asked like any message (consent, limits); a redelivery of it is found stored.
                turn = dataclasses.replace(turn, text=parsed.args)
            if self._policy is not None:
                consented = await self._consent(context, turn)
                if consented is None:
                    return None
                turn = consented
        except StoreError:
            ref = uuid.uuid4().hex[:12]
            log.exception("the store failed before the chat turn", extra={"ref": ref})
            # A command is not a message for the assistant: telling the user it "could not be
            # saved, so it was not sent" would be wrong (a /usage saves nothing).
            notice = "store_unavailable" if parsed is None else "command_unavailable"
            await _say(context, localize(notice, turn.locale, ref=ref))
            return None
        if self._refused_by_chat(turn):
            if isinstance(turn, AfterConsent):
                # The message that waited is too long (a blank one never waits): the user's
                # last message was "I accept", so the notice names the one it is about.
                text = as_written(turn.text)
                notice = localize(
                    "message_too_long", turn.locale, length=len(text), limit=self._max_chars
                )
                await self._thank(context, turn, answered=False)
                await _say(context, not_answered_text(turn, notice), text_format="plain")
                return None
            # The chat service answers it with a notice and never calls the model: it uses
            # none of the user's requests or tokens.
            return turn
        try:
            # The same write reserves the turn's tokens upfront (claimed by dialogs.guard). A
            # redelivery is told apart only where it would be refused (a store read); otherwise
            # the chat service finds it stored and `redelivered` gives back what it took.
            exceeded = await self._quotas.count_request(
                turn.user_id,
                turn.tenant_id,
                turn,
                handled_already=lambda: self.handled_already(
                    turn.conversation_key, turn.activity_id
                ),
            )
        except StoreError:
            log.exception("the request rate could not be checked; the turn goes ahead uncounted")
            exceeded = None
        if exceeded == REDELIVERED:
            log.info(
                "a redelivered message was dropped",
                extra={"event": "message_redelivered", "reason": "already_stored"},
            )
            await self._thank(context, turn, answered=False)
            return None
        if exceeded is not None:
            # Every refused message is told (its audit record is once a minute: the quota's).
            notice = refusal_text(exceeded, turn.locale, turn.time_zone)
            if isinstance(turn, AfterConsent):
                # It waited for the acceptance, which is this turn's message: the notice names
                # it, and says it is gone (it was never stored, and the question that held it
                # is closed).
                await self._thank(context, turn, answered=False)
                await _say(context, not_answered_text(turn, notice), text_format="plain")
            else:
                await _say(context, notice)
            return None
        answered = self._quotas.admits_any_estimate(turn, turn.tenant_id)
        await self._thank(context, turn, answered=answered)
        return turn

    async def _thank(self, context: TurnContext, turn: TurnInput, *, answered: bool) -> None:
        """Thanks for the acceptance that `turn`, the message that waited for it, is answered
        in (nothing for any other turn: the consent dialog thanked, or there was nothing to
        thank for). It promises the answer only when `answered`: the request is counted and
        the model call's token reservation cannot be refused. Otherwise the answer, or a
        notice naming the message, follows thanks that promise nothing."""
        if not isinstance(turn, AfterConsent):
            return
        key = "consent_accepted_pending" if answered else "consent_accepted_before_answer"
        # The acceptance's locale, as the consent dialog's other replies (`_consent`).
        await _say(context, localize(key, context.activity.locale or turn.locale))

    async def revise_waiting(self, context: TurnContext, revision: TurnInput) -> bool:
        """The user deleted (no `revision.text`) or edited the message that waits for their
        answer to the consent question: once they accept, the new text is answered, or, for a
        deletion, nothing. An edit that leaves nothing to read, or more than the message limit,
        counts as a deletion, as with a stored message (chat.service `revise`). Whether the
        question held that message; if not, it is no concern of the gate's (the chat service
        revises the message where it is stored)."""
        if self._question is None or not revision.activity_id:
            return False
        since = _arrived(revision)
        dialog_context = await self._dialogs.create_context(context)
        question = dialog_context.active_dialog
        if question is None or question.id != CONSENT_DIALOG:
            return False
        waiting = self._question.waiting(question)
        if waiting is None or waiting.get("activity_id") != revision.activity_id:
            return False
        # Edited too long, it still waits, as a first message too long does (`_may_wait`).
        kept = bool(as_written(revision.text))
        self._question.hold(question, {**waiting, "text": revision.text} if kept else None)
        log.info(
            "a user deleted or edited the message that waits for their consent",
            extra={
                "event": "consent_message_revised",
                "outcome": "edited" if kept else "withdrawn",
            },
        )
        await self._save_states(context, revision, since)
        return True

    async def redelivered(self, turn: TurnInput) -> None:
        """The chat service dropped `turn` as a duplicate (its message is stored already): what
        `before_turn` counted for it goes back."""
        await self._quotas.give_back(turn)

    async def handled_already(self, conversation_key: str, activity_id: str) -> bool:
        """Whether the store holds the message already (a redelivery of one that was handled):
        the id the chat service stores it under (`ChatService._handle`), one point read."""
        if not activity_id:
            return False
        conversation_id = safe_id(conversation_key)
        try:
            found = await self._store.get_message(
                conversation_id, message_id(conversation_id, activity_id, "user")
            )
        except StoreError:
            log.exception("the store could not tell whether a message is a redelivery")
            return False
        return found is not None

    def _may_wait(self, turn: TurnInput) -> bool:
        """Whether `turn`'s message may wait for the answer to the usage policy: a question for
        the assistant, not an answer to the policy nor a blank one (attachments only, a bare
        @mention). One too long waits too: once the user accepts, the chat tells them it is too
        long, rather than the question taking it in silence."""
        return consent_answer(turn.text) is None and bool(as_written(turn.text))

    def _refused_by_chat(self, turn: TurnInput) -> bool:
        """Blank (attachments only, too) or too long: the chat service's own rules
        (`ChatService._handle`), kept in step with it."""
        text = as_written(turn.text)
        return not text or len(text) > self._max_chars

    async def _refuse(self, context: TurnContext, turn: TurnInput, event: str) -> None:
        """Every refused message is told; its audit record and log line are written once per
        tenant (or channel), channel and UTC minute, and the others counted in one
        `<event>_untold` line once the minute is over, as quota refusals are: a removed
        organization's users would otherwise bury reviewers' actions in the audit log."""
        if event == "channel_refused":
            scope = safe_id(f"channel:{turn.channel_id}")
        else:
            scope = tenant_scope(turn.tenant_id) or "tenant:none"
        key = (event, scope, turn.channel_id)
        if self._refusals.first_this_minute(key, event, scope, channel=turn.channel_id):
            await self._refusals.record(event, scope, channel=turn.channel_id)
        await _say(context, localize(event, turn.locale))

    async def _consent(self, context: TurnContext, turn: TurnInput) -> TurnInput | None:
        """The turn to answer now, or None while the usage policy is not accepted."""
        assert self._policy is not None
        # The prompt reads the activity; give it the text without Teams' <at> mention, and the
        # turn's locale (Teams may give it only in clientInfo) so its texts match the others'.
        context.activity.text = turn.text
        context.activity.locale = turn.locale
        since = _arrived(turn)
        # The question, the thanks and the reply to a decline go out once the state they speak
        # of is saved: the answer to a question whose state was lost would be taken for a first
        # message (the policy shown again), and thanks for a lost acceptance would be followed
        # by the question. When the save fails, the user gets the "could not be saved" notice
        # alone (`before_turn`), and sending again works as if this message had never come.
        replies = _HeldReplies(context)
        try:
            answer, waits = await self._consent_step(replies, turn)
        finally:
            saved = await self._save_states(context, turn, since)
        await replies.release()
        if saved and waits and await self._asked_by.get(context) != turn.activity_id:
            await self._not_kept(context, turn)
        return answer

    async def _consent_step(
        self, context: _HeldReplies, turn: TurnInput
    ) -> tuple[TurnInput | None, bool]:
        """`_consent`'s decision, in the bot state its caller then saves: the turn to answer now
        (None while the policy is not accepted), and whether this turn asked the question with
        its message waiting for the answer."""
        assert self._policy is not None and self._question is not None
        if turn.activity_id and await self._answered_by.get(context) == turn.activity_id:
            # The channel sent the answer again (no 2xx in time, e.g. across a restart, when
            # the turn queue's dedupe is empty): it was handled already, and taken as a new
            # message it would ask the question again or reach the model.
            log.info(
                "a redelivered consent answer was dropped",
                extra={"event": "consent_answer_redelivered"},
            )
            return None, False
        if turn.activity_id and await self._asked_by.get(context) == turn.activity_id:
            # The same for the message that asked the question: the question was shown, and any
            # message it held waits in the dialog already.
            log.info(
                "a redelivered message that asked for consent was dropped",
                extra={"event": "consent_question_redelivered"},
            )
            return None, False
        dialog_context = await self._dialogs.create_context(context)
        record = await self._acceptance.get(context)
        accepted = accepted_version(record) == self._policy.version
        if (
            accepted
            and dialog_context.active_dialog is None
            and self._repeated_acceptance(turn, record)
        ):
            # No reply: the thanks for the acceptance it repeats has gone out or is on its
            # way, and a reply per tap of a double-tapped button would bury it. Not a question
            # for the assistant either, so not stored, sent to the model or counted.
            log.info(
                "a repeated acceptance of the usage policy was dropped",
                extra={"event": "consent_answer_repeated"},
            )
            return None, False
        if not accepted and await self.handled_already(turn.conversation_key, turn.activity_id):
            # A message answered under the version accepted before, sent again by the channel
            # after a restart (or to another instance) that brought a new version: it was
            # handled, and it must not ask the question nor wait for its answer (the chat would
            # drop it then, after "here is the answer to your message").
            log.info(
                "a redelivered message was dropped",
                extra={"event": "message_redelivered", "reason": "already_stored"},
            )
            return None, False
        if (
            dialog_context.active_dialog is not None
            and accepted
            and consent_answer(turn.text) is not True
        ):
            # The question here went stale: the user accepted this version in another
            # conversation. Holding the message for an answer, or taking "no" as a decline of a
            # policy still on record, would be wrong; the turn is an ordinary one. The message
            # that waited here is dropped: the user has written a newer one since, and
            # answering an old question in its place would surprise more. An "I accept" (the
            # question's own buttons) still completes the dialog and answers it.
            await dialog_context.cancel_all_dialogs()
            return turn, False
        if dialog_context.active_dialog is not None:
            if await self._asked_at.get(context) is None:
                # Asked by an earlier release, which kept no time: counted from now, the first
                # time known (each later message would move it on otherwise).
                await self._asked_at.set(context, utc_now().isoformat())
            if not accepted and not self._question.shows_current(dialog_context.active_dialog):
                # The question shows an earlier version of the policy (the version changed
                # while it was open): an answer to it accepts or declines nothing the user has
                # been shown now. The current version is shown and asked instead.
                await self._ask_again(context, dialog_context, turn)
                return None, False
            result = await dialog_context.continue_dialog()
            if result.status is not DialogTurnStatus.Complete:
                # Not an answer: the prompt reminds the user of the question an earlier turn
                # asked and saved. That says nothing this turn saves, so it goes out now, as
                # what this turn read: a turn on another instance may close the question
                # before this one writes.
                await context.release()
                question = dialog_context.active_dialog
                if self._may_wait(turn) and self._question.waiting(question) is None:
                    # Nothing waits (the first message was itself an answer, or blank): this
                    # one does, as a first message would have. (With one waiting already, a
                    # message that is no answer is taken for a reply to the question: one
                    # question holds one message.) The message that asked stays marked as such:
                    # sent again, that first "yes" must not be taken for consent.
                    self._question.hold(question, _pending(turn))
                return None, False
            await self._answered_by.set(context, turn.activity_id)
            outcome: dict[str, Any] = result.result or {}
            pending = outcome.get("pending")
            if not outcome.get("accepted"):
                return None, False
            return (_pending_turn(turn, pending) if isinstance(pending, dict) else None), False
        if accepted:
            return turn, False
        log.info(
            "usage policy consent asked",
            extra={"event": "consent_asked", "version": self._policy.version},
        )
        # A first message that is itself an answer ("I accept" to someone else's question in a
        # group chat, a "yes" or "no") is no consent to a policy this user has not seen, and no
        # question for the assistant: the policy is shown and nothing waits. Nor does a message
        # the chat would refuse (a bare @mention, blank, too long).
        pending = _pending(turn) if self._may_wait(turn) else None
        # `shared`: the question must say to @mention the bot (see dialogs.consent).
        await dialog_context.begin_dialog(
            CONSENT_DIALOG, {"pending": pending, "shared": turn.shared}
        )
        await self._asked_by.set(context, turn.activity_id)
        # The store's clock, not the injected one: the expiry is counted on it.
        await self._asked_at.set(context, utc_now().isoformat())
        return None, pending is not None

    def _repeated_acceptance(self, turn: TurnInput, record: Any) -> bool:
        """Whether `turn` accepts the policy in words that say so (`I accept`, 同意します: a "yes"
        or an "ok" may answer the assistant's own question) within `_REPEAT_WITHIN` of the
        acceptance `record` (of the current version, the caller checked): a repeat of it."""
        if not says_it_accepts(turn.text) or not isinstance(record, dict):
            return False
        try:
            accepted_at = datetime.fromisoformat(str(record.get("accepted_at")))
        except ValueError:
            return False
        if accepted_at.tzinfo is None:
            accepted_at = accepted_at.replace(tzinfo=self._clock().tzinfo)
        return self._clock() - accepted_at < _REPEAT_WITHIN

    async def _ask_again(
        self, context: TurnContext, dialog_context: DialogContext, turn: TurnInput
    ) -> None:
        """Replaces the open question about an earlier version with one about the current
        version, saying that the policy changed. The message that waited still waits (it is
        answered once the user accepts this version), counted from when it was first asked;
        this turn's message, an answer or not, is not kept, as with any reply to the question."""
        assert self._policy is not None and self._question is not None
        waiting = self._question.waiting(dialog_context.active_dialog)
        log.info(
            "usage policy consent asked again: the version changed since the question",
            extra={"event": "consent_asked", "version": self._policy.version, "changed": True},
        )
        await dialog_context.cancel_all_dialogs()
        await dialog_context.begin_dialog(
            CONSENT_DIALOG, {"pending": waiting, "shared": turn.shared, "changed": True}
        )
        # Sent again, this message would be taken as an answer to the question it asked.
        await self._asked_by.set(context, turn.activity_id)

    async def _not_kept(self, context: TurnContext, turn: TurnInput) -> None:
        """Another message of the user's asked the question at the same moment (on another
        instance or worker) and its write came first: that message waits for the answer, and
        one question holds one message (`_merge_dialogs`). This one is not kept; the user is
        told so, with its start, so that they know which one to send again."""
        log.info(
            "a message that asked for consent at the same moment as another was not kept",
            extra={"event": "consent_message_not_kept"},
        )
        quoted = excerpt(turn.text)
        if quoted:
            text = localize("consent_message_not_kept", turn.locale, excerpt=quoted)
        else:
            text = localize("consent_attachment_not_kept", turn.locale)
        # Plain: it quotes the user's own words, as they wrote them.
        await _say(context, text, text_format="plain")

    async def _save_states(self, context: TurnContext, turn: TurnInput, since: float) -> bool:
        """Writes the bot state `turn` changed, unless its user or conversation was erased
        after its message arrived (`since`): then nothing, and False."""
        if self._erased_since(turn, since):
            return False
        await self._states.save_changes(
            context,
            owner=turn.user_id,
            conversation=safe_id(turn.conversation_key),
            # A late write of a message from before an erasure goes in its second pass.
            arrived=turn.arrived_at(),
            still_wanted=lambda: not self._erased_since(turn, since),
        )
        return True

    def _erased_since(self, turn: TurnInput, since: float) -> bool:
        """The user or the conversation was erased after the message arrived (storage.
        erasures): the dialog state read before is not written back, or it would bring a
        consent record and a message waiting for it back."""
        erasures = self._erasures
        return erasures is not None and erasures.erased_since(
            since, turn.user_id, safe_id(turn.conversation_key)
        )


class _HeldReplies(TurnContext):  # type: ignore[misc]
    """The turn's context, except that what is sent through it is held until `release` (then
    sent through the turn's context, in order) or dropped with it: for replies that must wait
    for the bot state to be saved. It shares the turn's `turn_state`, where botbuilder keeps the
    state it loaded, so that the state read and changed through it is the state saved."""

    def __init__(self, context: TurnContext) -> None:
        super().__init__(context)
        self._turn_state = context.turn_state
        self._context = context
        self._held: list[Activity] = []

    async def send_activities(self, activities: list[Activity]) -> list[ResourceResponse]:
        self._held.extend(activities)
        return [ResourceResponse(id="") for _ in activities]

    async def release(self) -> None:
        held, self._held = self._held, []
        for activity in held:
            await self._context.send_activity(activity)


def _merge_user(race: StateRace) -> dict[str, Any]:
    """User state written by two turns at once (the same user's on two instances): consent
    given stays given; two acceptances at once keep the later."""
    return race.merged(
        lambda name: name != _ACCEPTANCE or stands_over(race.ours.get(name), race.theirs.get(name))
    )


def _merge_dialogs(race: StateRace) -> dict[str, Any]:
    """A conversation's dialog state written by two turns at once (its user's messages on two
    instances). Where both changed the dialog, the turn that closed the question (answered it,
    or found consent given elsewhere) stands: the other only asked it again, or kept it open,
    from the state it had read. Otherwise the other turn's dialog stands (it may hold a message
    waiting for the answer; when this turn's message waited too, as with a user's first two
    messages at once, it is not kept and the user is told: `_not_kept`); this turn's markers
    and stamps are applied as they are."""
    ours_closed = not getattr(race.ours.get(_DIALOG_STATE), "dialog_stack", None)
    return race.merged(lambda name: name not in _QUESTION or ours_closed)


def _arrived(turn: TurnInput) -> float:
    """When the turn's message arrived (`time.monotonic()`), or now when not known."""
    return turn.received_at if turn.received_at is not None else time.monotonic()


def _pending(turn: TurnInput) -> dict[str, Any]:
    return {
        "text": turn.text,
        "activity_id": turn.activity_id,
        "locale": turn.locale,
        "has_attachments": turn.has_attachments,
    }


def _pending_turn(turn: TurnInput, pending: dict[str, Any]) -> AfterConsent:
    """The message that waited for consent, answered in the current turn."""
    fields = {field.name: getattr(turn, field.name) for field in dataclasses.fields(turn)}
    return dataclasses.replace(
        AfterConsent(**fields),
        text=str(pending.get("text") or ""),
        activity_id=str(pending.get("activity_id") or turn.activity_id),
        locale=str(pending.get("locale") or turn.locale),
        has_attachments=bool(pending.get("has_attachments")),
    )


async def _say(context: TurnContext, text: str, text_format: str = "markdown") -> None:
    activity = MessageFactory.text(text)
    activity.text_format = text_format
    await context.send_activity(activity)
