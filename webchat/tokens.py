"""Direct Line tokens of the built-in endpoint: HS256 JWTs signed by this app.

A token is bound to one conversation and one user and expires like Azure's (`expires_in` 1800).
The `user` claim is where Web Chat reads the user id from (it decodes the token), so the page
never chooses it. Every Direct Line call checks the signature, expiry, audience and that the
conversation in the path is the token's.

The WebSocket address (`streamUrl`) carries a stream ticket instead of the token: query strings
are recorded by App Service and Application Gateway HTTP logs, so what rides there must be of no
use to whoever reads them. A ticket opens one stream of one conversation within a minute, and is
taken for nothing else: its own key and audience, no name or user id in it (a keyed hash of the
user), and this process refuses it once used. Azure's Direct Line does the same: its streamUrl
carries a short-lived stream token, not the conversation token.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt

TOKEN_LIFETIME_SECONDS = 1800
# Web Chat opens the stream as soon as it has the address, and asks for a new one (a reconnect)
# every time a socket closes, so a minute is plenty.
STREAM_TICKET_SECONDS = 60
_STREAM_AUDIENCE = "builtin-directline-stream"
_AUDIENCE = "builtin-directline"
_ISSUER = "enterprise-chat-assistant"
_ALGORITHM = "HS256"
# Instances' clocks differ a little: a token issued by one whose clock is ahead is good at once
# on another (its `iat` may be ahead of this clock), and one just expired there still is here.
CLOCK_SKEW_SECONDS = 5


class TokenError(Exception):
    """The token is missing, forged, expired or for another conversation."""


@dataclass(frozen=True)
class Grant:
    """Who may use which conversation; what a token says once verified."""

    conversation_id: str
    user_id: str
    user_name: str = ""
    aad_object_id: str = ""
    tenant_id: str = ""
    expires_at: int = 0


class TokenSigner:
    def __init__(
        self,
        secret: str = "",
        lifetime: int = TOKEN_LIFETIME_SECONDS,
        audience: str = _AUDIENCE,
    ) -> None:
        # No configured secret: a random one per process (tokens die with the process, and
        # several instances behind one load balancer would refuse each other's tokens).
        self._key = secret or secrets.token_urlsafe(48)
        self.lifetime = lifetime
        # One audience per kind of token, so that one kind is never taken for another.
        self._audience = audience

    def subkey(self, purpose: str) -> str:
        """A key of its own for another kind of token, derived from this one (one-way)."""
        return hmac.new(self._key.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    def issue(self, grant: Grant) -> tuple[str, Grant]:
        now = int(time.time())
        expires = now + self.lifetime
        claims = {
            "iss": _ISSUER,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "conv": grant.conversation_id,
            "user": grant.user_id,
            "name": grant.user_name,
            "oid": grant.aad_object_id,
            "tid": grant.tenant_id,
        }
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        return token, Grant(
            grant.conversation_id,
            grant.user_id,
            grant.user_name,
            grant.aad_object_id,
            grant.tenant_id,
            expires,
        )

    def verify(self, token: str, conversation_id: str | None = None) -> Grant:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                issuer=_ISSUER,
                options={"require": ["exp", "iat", "conv", "user"]},
                leeway=CLOCK_SKEW_SECONDS,
            )
        except jwt.PyJWTError as exc:
            raise TokenError(type(exc).__name__) from exc
        grant = Grant(
            conversation_id=str(claims["conv"]),
            user_id=str(claims["user"]),
            user_name=str(claims.get("name") or ""),
            aad_object_id=str(claims.get("oid") or ""),
            tenant_id=str(claims.get("tid") or ""),
            expires_at=int(claims["exp"]),
        )
        if conversation_id is not None and not secrets.compare_digest(
            grant.conversation_id, conversation_id
        ):
            raise TokenError("token is for another conversation")
        return grant


@dataclass(frozen=True)
class StreamTicket:
    """A verified stream ticket, not yet used."""

    conversation_id: str
    user: str  # keyed hash of the user (see StreamTickets.user_hash)
    ticket_id: str
    expires_at: int


class StreamTickets:
    """Tickets for the WebSocket stream: one conversation and user, one connection, one minute."""

    def __init__(self, key: str, lifetime: int = STREAM_TICKET_SECONDS) -> None:
        self._key = key
        self.lifetime = lifetime
        # Used tickets until they expire (then their expiry refuses them anyway): at most a
        # minute of stream openings, a few hundred bytes each. The heap holds them soonest expiring
        # first, so forgetting the expired ones does not look through all the others each time.
        self._used: dict[str, int] = {}
        self._expiries: list[tuple[int, str]] = []

    def user_hash(self, user_id: str, tenant_id: str) -> str:
        message = f"{tenant_id}\n{user_id}".encode()
        return hmac.new(self._key.encode(), message, hashlib.sha256).hexdigest()[:32]

    def issue(self, conversation_id: str, user_id: str, tenant_id: str) -> str:
        now = int(time.time())
        claims = {
            "iss": _ISSUER,
            "aud": _STREAM_AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "jti": secrets.token_urlsafe(12),
            "conv": conversation_id,
            "uh": self.user_hash(user_id, tenant_id),
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def verify(self, ticket: str, conversation_id: str) -> StreamTicket:
        """The ticket's claims if it is good for this conversation now and was not used yet."""
        try:
            claims = jwt.decode(
                ticket,
                self._key,
                algorithms=[_ALGORITHM],
                audience=_STREAM_AUDIENCE,
                issuer=_ISSUER,
                options={"require": ["exp", "iat", "jti", "conv", "uh"]},
                leeway=CLOCK_SKEW_SECONDS,
            )
        except jwt.PyJWTError as exc:
            raise TokenError(type(exc).__name__) from exc
        verified = StreamTicket(
            str(claims["conv"]), str(claims["uh"]), str(claims["jti"]), int(claims["exp"])
        )
        if not secrets.compare_digest(verified.conversation_id, conversation_id):
            raise TokenError("ticket is for another conversation")
        if verified.ticket_id in self._used:
            raise TokenError("ticket already used")
        return verified

    def use(self, ticket: StreamTicket) -> None:
        """Spend a verified ticket: it opens no other stream in this process. It is remembered
        for as long as `verify` would take it (its expiry and the clock allowance)."""
        now = int(time.time())
        while self._expiries and self._expiries[0][0] + CLOCK_SKEW_SECONDS < now:
            _, spent = heapq.heappop(self._expiries)
            self._used.pop(spent, None)
        self._used[ticket.ticket_id] = ticket.expires_at
        heapq.heappush(self._expiries, (ticket.expires_at, ticket.ticket_id))


def bearer(header: str | None) -> str:
    if not header or not header.startswith("Bearer "):
        raise TokenError("no bearer token")
    return header[len("Bearer ") :].strip()
