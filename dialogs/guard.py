"""The token quota around the chat service's model call (`chat.service.TurnGuard`), and the
localized sentences for every quota refusal.

A message that waited for the answer to the usage policy is answered in the turn of the
acceptance (`AfterConsent`, made by the gate). Refused by a limit there, its notice names it
(`not_answered_text`): the user's last message was "I accept", so "your message" alone would
point at the wrong one, and the waiting message is not kept for later.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chat.service import Admission, TurnInput
from chat.texts import localize, moment_text, wait_text
from chat.written import cut
from controls.quotas import LimitKind, QuotaExceeded, Quotas, TokenReservation
from storage.base import StoreError

log = logging.getLogger(__name__)

# How much of a message a notice quotes (`excerpt`): enough for the user to know which one.
_EXCERPT_CHARS = 60


@dataclass(frozen=True)
class AfterConsent(TurnInput):
    """The message that waited for the answer to the usage policy, answered in the turn of the
    acceptance (dialogs.gate). A type of its own, not a field, so that it reaches this guard
    through the chat service unchanged."""


def excerpt(text: str) -> str:
    """How a notice quotes a message: its words on one line, cut to `_EXCERPT_CHARS` where a
    character ends (an emoji with its skin tone stays whole or goes whole)."""
    return cut(" ".join(text.split()), _EXCERPT_CHARS)


def not_answered_text(turn: AfterConsent, notice: str) -> str:
    """A limit's `notice` for the message that waited for consent: which message it was, and
    that it is not kept, so that the user sends it again. Plain text: it quotes their words."""
    return localize(
        "consent_waiting_not_answered", turn.locale, excerpt=excerpt(turn.text), notice=notice
    )


def refusal_text(
    exceeded: QuotaExceeded, locale: str, time_zone: str = "", *, with_earlier: bool = True
) -> str:
    """`time_zone`: the user's (TurnInput.time_zone), in which the reset is said; "": UTC.
    `with_earlier`: the message that did not fit went with earlier messages of the conversation
    (its window); without them there is no conversation to mention and /new would not help."""
    wait = wait_text(exceeded.seconds_left, locale)
    if exceeded.kind is LimitKind.USER_REQUESTS_PER_MINUTE:
        return localize("quota_requests_per_minute", locale, limit=exceeded.limit, wait=wait)
    reset = moment_text(exceeded.resets_at, locale, time_zone)
    never_fits = exceeded.requested > exceeded.limit
    if exceeded.kind is LimitKind.TENANT_TOKENS_PER_DAY:
        if never_fits:
            # More than the whole daily limit: waiting for the reset would not help.
            return localize(
                "quota_tenant_tokens_never_fit"
                if with_earlier
                else "quota_tenant_tokens_never_fit_alone",
                locale,
                needed=exceeded.requested,
            )
        if exceeded.requested and exceeded.used < exceeded.limit:
            # Some of the organization's limit is left, not enough for this message with its
            # context: "reached" would contradict /usage. The tenant's numbers are not shown.
            return localize(
                "quota_tenant_tokens_not_enough"
                if with_earlier
                else "quota_tenant_tokens_not_enough_alone",
                locale,
                needed=exceeded.requested,
                reset=reset,
                wait=wait,
            )
        if exceeded.used < exceeded.limit:
            # Less is left than the smallest message needs (controls.quotas: the gate).
            return localize("quota_tenant_tokens_too_little_left", locale, reset=reset, wait=wait)
        return localize("quota_tenant_tokens_per_day", locale, reset=reset, wait=wait)
    if never_fits:
        # More than the whole daily limit: waiting for the reset would not help.
        return localize(
            "quota_user_tokens_never_fit" if with_earlier else "quota_user_tokens_never_fit_alone",
            locale,
            needed=exceeded.requested,
            limit=exceeded.limit,
        )
    if exceeded.used < exceeded.limit:
        if exceeded.requested:
            # Some of the limit is left, just not enough for this message with its context.
            return localize(
                "quota_user_tokens_not_enough"
                if with_earlier
                else "quota_user_tokens_not_enough_alone",
                locale,
                needed=exceeded.requested,
                limit=exceeded.limit,
                reset=reset,
                wait=wait,
            )
        # Less is left than the smallest message needs (controls.quotas.count_request): saying
        # the limit was used up would contradict /usage.
        return localize(
            "quota_user_tokens_too_little_left",
            locale,
            used=exceeded.used,
            limit=exceeded.limit,
            reset=reset,
            wait=wait,
        )
    return localize(
        "quota_user_tokens_per_day", locale, limit=exceeded.limit, reset=reset, wait=wait
    )


class QuotaGuard:
    def __init__(self, quotas: Quotas) -> None:
        self._quotas = quotas

    async def admit(
        self, turn: TurnInput, estimated_tokens: int, *, with_earlier: bool
    ) -> Admission:
        try:
            # Usually inside what the gate reserved upfront for this turn: no store write.
            result = await self._quotas.reserve_tokens(
                turn.user_id, turn.tenant_id, estimated_tokens, turn
            )
        except StoreError:
            # Counting failed, the prompt is already stored: answer rather than fail the user
            # over bookkeeping (the quota is a cost control, not a security boundary).
            log.exception("token quota could not be checked; the turn goes ahead uncounted")
            return Admission()
        if isinstance(result, QuotaExceeded):
            refusal = refusal_text(result, turn.locale, turn.time_zone, with_earlier=with_earlier)
            if isinstance(turn, AfterConsent):
                # It quotes the user's words: plain text, as the gate sends it.
                return Admission(refusal=not_answered_text(turn, refusal), plain=True)
            return Admission(refusal=refusal)
        return Admission(settle=self._settler(result))

    def _settler(self, reservation: TokenReservation) -> Callable[[int | None], Awaitable[None]]:
        async def settle(used_tokens: int | None) -> None:
            # No reported usage (a stopped stream): the estimate stands.
            used = reservation.amount if used_tokens is None else used_tokens
            try:
                await self._quotas.settle(reservation, used)
            except StoreError:
                log.exception("settling the token reservation failed; the estimate stays")

        return settle
