"""Inbound authentication: the JWT a Bot Framework channel puts on every request to the bot.

botbuilder-python validates these with blocking HTTP calls on the event loop, and answers 500 for
several failures. This validator fetches the OpenID metadata and signing keys asynchronously,
caches them, refreshes them in the background, and turns every failure into `AuthError` (401).
Rules: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from jwt.algorithms import RSAAlgorithm

log = logging.getLogger(__name__)

CLOCK_SKEW_SECONDS = 300
KEYS_REFRESH_SECONDS = 24 * 3600
# An unknown key id may mean keys were rotated; refetch, but not more often than this.
UNKNOWN_KID_REFETCH_SECONDS = 60
# With no keys at all (the key endpoint was down) nothing authenticates: retry sooner, but still
# not once per request, or every unauthenticated request would cost a fetch.
EMPTY_KEYS_REFETCH_SECONDS = 5
# A channel reuses its token for many requests (about an hour): the signature check (the costly
# part) is done once per token; expiry, key, endorsement and service URL are checked every time.
VERIFIED_TOKENS_MAX = 1024


class AuthError(Exception):
    """The request is not authenticated. The message is safe to log, never shown in detail."""


@dataclass(frozen=True)
class ChannelIdentity:
    app_id: str
    service_url: str
    claims: dict[str, Any]


@dataclass
class _SigningKey:
    key: Any
    endorsements: list[str] | None


class SigningKeys:
    """OpenID metadata + JWKS, fetched with aiohttp and cached."""

    def __init__(self, session: aiohttp.ClientSession, metadata_url: str) -> None:
        self._session = session
        self._metadata_url = metadata_url
        self._keys: dict[str, _SigningKey] = {}
        # The last fetch attempt, successful or not: the refetch throttle counts from it.
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fetch once in the background and keep the keys fresh; failures are retried later."""
        self._refresher = asyncio.create_task(self._refresh_forever(), name="jwks-refresh")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
                await asyncio.sleep(KEYS_REFRESH_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("fetching bot signing keys failed; retrying in 30 s", exc_info=True)
                await asyncio.sleep(30)

    async def refresh(self) -> None:
        async with self._lock:
            await self._fetch()

    async def _fetch(self) -> None:
        """Metadata + JWKS; the caller holds the lock."""
        self._attempted_at = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=10)
        async with self._session.get(self._metadata_url, timeout=timeout) as response:
            response.raise_for_status()
            metadata = await response.json(content_type=None)
        jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
        if not isinstance(jwks_uri, str):
            raise ValueError("the OpenID metadata names no jwks_uri")
        async with self._session.get(jwks_uri, timeout=timeout) as response:
            response.raise_for_status()
            jwks = await response.json(content_type=None)
        listed = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(listed, list):
            raise ValueError("the key set holds no list of keys")
        keys: dict[str, _SigningKey] = {}
        for jwk in listed:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or "kid" not in jwk:
                continue
            keys[jwk["kid"]] = _SigningKey(
                key=RSAAlgorithm.from_jwk(json.dumps(jwk)),
                endorsements=jwk.get("endorsements"),
            )
        self._keys = keys
        log.info("bot signing keys loaded", extra={"keys": len(keys)})

    def _refetch_due(self) -> bool:
        interval = UNKNOWN_KID_REFETCH_SECONDS if self._keys else EMPTY_KEYS_REFETCH_SECONDS
        return time.monotonic() - self._attempted_at > interval

    def current(self, kid: str) -> _SigningKey | None:
        """The key with this id in the key set as it is now (None once rotated out)."""
        return self._keys.get(kid)

    async def get(self, kid: str) -> _SigningKey:
        key = self._keys.get(kid)
        if key is not None:
            return key
        # A fetch in flight (the one at start-up, or another request's) is waited for.
        if self._refetch_due() or self._lock.locked():
            async with self._lock:
                # Checked again under the lock: the requests that queued behind a fetch find the
                # key it loaded (or a fresh attempt) instead of each fetching in turn.
                if kid not in self._keys and self._refetch_due():
                    try:
                        await self._fetch()
                    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                        raise AuthError("signing keys unavailable") from exc
        key = self._keys.get(kid)
        if key is None:
            raise AuthError("unknown signing key")
        return key


class ChannelAuthenticator:
    def __init__(self, keys: SigningKeys, app_id: str, issuers: list[str]) -> None:
        self._keys = keys
        self._app_id = app_id
        self._issuers = issuers
        # token -> (key id, key, claims) of a token whose signature, issuer and audience checked
        # out with that key; a refresh of the key set makes new key objects, so it re-verifies.
        self._verified: dict[str, tuple[str, _SigningKey, dict[str, Any]]] = {}

    async def authenticate(
        self, authorization: str | None, channel_id: str, service_url: str
    ) -> ChannelIdentity:
        if not authorization:
            raise AuthError("missing Authorization header")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization is not a bearer token")
        verified = self._verified.get(token)
        if verified is not None:
            verified_kid, verified_with, verified_claims = verified
            fresh = verified_claims["exp"] + CLOCK_SKEW_SECONDS > time.time()
            if fresh and self._keys.current(verified_kid) is verified_with:
                return self._identity(verified_claims, verified_with, channel_id, service_url)
            del self._verified[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("malformed token") from exc
        # Only RS256 is issued by Bot Framework; refusing the rest rules out `none` and
        # HMAC-with-the-public-key confusion before any key is touched.
        if header.get("alg") != "RS256":
            raise AuthError("unexpected signing algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError("token has no key id")
        signing_key = await self._keys.get(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=signing_key.key,
                algorithms=["RS256"],
                audience=self._app_id,
                issuer=self._issuers,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"token rejected: {type(exc).__name__}") from exc
        identity = self._identity(claims, signing_key, channel_id, service_url)
        if len(self._verified) >= VERIFIED_TOKENS_MAX:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (kid, signing_key, claims)
        return identity

    def _identity(
        self, claims: dict[str, Any], signing_key: _SigningKey, channel_id: str, service_url: str
    ) -> ChannelIdentity:
        if signing_key.endorsements is not None and channel_id not in signing_key.endorsements:
            raise AuthError("signing key is not endorsed for this channel")
        claimed_url = claims.get("serviceurl") or claims.get("serviceUrl")
        if not claimed_url or claimed_url.rstrip("/") != service_url.rstrip("/"):
            raise AuthError("serviceurl claim does not match the activity")
        return ChannelIdentity(app_id=self._app_id, service_url=service_url, claims=claims)


def accepted_issuers(bot_token_issuer: str, tenant_id: str) -> list[str]:
    issuers = [bot_token_issuer]
    if tenant_id:
        # Single-tenant bots also receive tokens minted by their own Entra tenant.
        issuers += [
            f"https://sts.windows.net/{tenant_id}/",
            f"https://login.microsoftonline.com/{tenant_id}/v2.0",
        ]
    return issuers
