"""Direct Line tokens of the built-in endpoint: HS256 JWTs signed by this app.

A token is bound to one conversation and one user and expires like Azure's (`expires_in` 1800).
The `user` claim is where Web Chat reads the user id from (it decodes the token), so the page
never chooses it. Every Direct Line call checks the signature, expiry, audience and that the
conversation in the path is the token's.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

TOKEN_LIFETIME_SECONDS = 1800
_AUDIENCE = "builtin-directline"
_ISSUER = "enterprise-chat-assistant"
_ALGORITHM = "HS256"


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

    def issue(self, grant: Grant) -> tuple[str, Grant]:
        now = int(time.time())
        expires = now + self.lifetime
        claims = {
            "iss": _ISSUER,
            "aud": self._audience,
            "iat": now,
            "nbf": now - 5,
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


def bearer(header: str | None) -> str:
    if not header or not header.startswith("Bearer "):
        raise TokenError("no bearer token")
    return header[len("Bearer ") :].strip()
