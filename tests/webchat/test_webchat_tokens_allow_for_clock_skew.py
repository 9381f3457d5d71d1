"""Several instances share WEBCHAT_TOKEN_SECRET, and their clocks differ a little: a token or
stream ticket issued by an instance whose clock is a few seconds ahead is good at once on
another (before, its `iat` in this clock's future refused it, and a fresh page stayed stuck),
and one that expired a moment ago there is still good here. Beyond the allowance they are
refused. Real tokens, signed with the shared secret as the issuing instance signs them."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from webchat.tokens import CLOCK_SKEW_SECONDS, StreamTickets, TokenError, TokenSigner

SECRET = "a-shared-secret-of-enough-length-for-hs256-0123456789"
CONVERSATION = "conv-1"


def _signed(key: str, audience: str, shift: int, **claims: Any) -> str:
    """A token as an instance whose clock is `shift` seconds off this one's issues it."""
    now = int(time.time()) + shift
    body = {
        "iss": "enterprise-chat-assistant",
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "conv": CONVERSATION,
        **claims,
    }
    return jwt.encode(body, key, algorithm="HS256")


@pytest.mark.parametrize("shift", [CLOCK_SKEW_SECONDS - 2, -(60 + CLOCK_SKEW_SECONDS - 2)])
def test_a_token_from_an_instance_with_a_clock_a_little_off_is_good(shift: int) -> None:
    token = _signed(SECRET, "builtin-directline", shift, user="dl_alice")
    assert TokenSigner(secret=SECRET).verify(token, CONVERSATION).user_id == "dl_alice"


@pytest.mark.parametrize("shift", [CLOCK_SKEW_SECONDS + 10, -(60 + CLOCK_SKEW_SECONDS + 10)])
def test_a_token_beyond_the_allowance_is_refused(shift: int) -> None:
    token = _signed(SECRET, "builtin-directline", shift, user="dl_alice")
    with pytest.raises(TokenError):
        TokenSigner(secret=SECRET).verify(token, CONVERSATION)


@pytest.mark.parametrize(
    ("shift", "good"), [(CLOCK_SKEW_SECONDS - 2, True), (CLOCK_SKEW_SECONDS + 10, False)]
)
def test_a_stream_ticket_from_an_instance_whose_clock_is_ahead(shift: int, good: bool) -> None:
    tickets = StreamTickets("a-ticket-key-derived-from-the-shared-secret-0123456789")
    ticket = _signed(
        "a-ticket-key-derived-from-the-shared-secret-0123456789",
        "builtin-directline-stream",
        shift,
        jti="j1",
        uh=tickets.user_hash("dl_alice", ""),
    )
    if good:
        assert tickets.verify(ticket, CONVERSATION).conversation_id == CONVERSATION
    else:
        with pytest.raises(TokenError):
            tickets.verify(ticket, CONVERSATION)


def test_a_spent_stream_ticket_stays_spent_while_the_clock_allowance_would_take_it() -> None:
    """A ticket that expired a moment ago is still good (the allowance), so it is remembered as
    spent until then: otherwise it could open a second stream."""
    key = "a-ticket-key-derived-from-the-shared-secret-0123456789"
    lapsed = StreamTickets(key, lifetime=-2)  # expired 2 s ago, within the allowance
    tickets = StreamTickets(key)
    ticket = lapsed.issue(CONVERSATION, "dl_alice", "")
    tickets.use(tickets.verify(ticket, CONVERSATION))
    # Spending another ticket forgets the spent ones that can no longer be verified.
    tickets.use(tickets.verify(lapsed.issue(CONVERSATION, "dl_alice", ""), CONVERSATION))

    with pytest.raises(TokenError, match="already used"):
        tickets.verify(ticket, CONVERSATION)
