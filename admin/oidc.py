"""Entra ID (OpenID Connect) for the admin: token validation and the authorization code flow.

Tokens are validated here, not by a library that fetches keys with blocking calls: issuer from
the metadata, audience = our client id (or `api://<client id>`), RS256 signature from the JWKS,
expiry, and the tenant (`tid`) = the admin app registration's. The audience alone does not pin
the tenant: a multi-tenant app registration is valid in every tenant that consents to it. The
authorization code flow uses PKCE (S256) and, when configured, a client secret (Entra ID redeems
codes of a "Web" redirect URI only with a secret).
https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
from jwt.algorithms import RSAAlgorithm

from admin.auth import AuthError

# The error codes identity providers send: the authorization response's (RFC 6749 4.1.2.1,
# OpenID Connect Core 3.1.2.6) and the token endpoint's (RFC 6749 5.2). Only these are logged:
# anyone can put text in a callback's `error`, and a provider's own text is not ours to log.
OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
        "invalid_request_uri",
        "invalid_request_object",
        "request_not_supported",
        "request_uri_not_supported",
        "registration_not_supported",
        "invalid_client",
        "invalid_grant",
        "unsupported_grant_type",
    }
)


def oauth_error_code(error: object) -> str:
    """`error` as a log may name it: a known code, else "other"."""
    return error if isinstance(error, str) and error in OAUTH_ERRORS else "other"


log = logging.getLogger(__name__)

CLOCK_SKEW_SECONDS = 120
METADATA_REFRESH_SECONDS = 24 * 3600
UNKNOWN_KID_REFETCH_SECONDS = 60


@dataclass(frozen=True)
class FlowStart:
    """What the browser is sent to, and what we keep (in a signed cookie) to finish the flow."""

    redirect_to: str
    state: str
    nonce: str
    verifier: str


def _guid(value: object) -> uuid.UUID | None:
    """A tenant id as a GUID (which compares regardless of case); None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


class OidcClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        metadata_url: str,
        client_id: str,
        client_secret: str = "",
        tenant_id: str = "",
    ) -> None:
        self._session = session
        self._metadata_url = metadata_url
        self.client_id = client_id
        self._client_secret = client_secret
        # `tid` is always the tenant's GUID; a tenant configured by its domain name cannot be
        # compared with it, and is then held only by a tenant-specific issuer.
        self._tenant = _guid(tenant_id)
        self._metadata: dict[str, Any] = {}
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        async with self._lock:
            timeout = aiohttp.ClientTimeout(total=10)
            async with self._session.get(self._metadata_url, timeout=timeout) as response:
                response.raise_for_status()
                metadata = await response.json(content_type=None)
            async with self._session.get(metadata["jwks_uri"], timeout=timeout) as response:
                response.raise_for_status()
                jwks = await response.json(content_type=None)
            self._keys = {
                jwk["kid"]: RSAAlgorithm.from_jwk(json.dumps(jwk))
                for jwk in jwks.get("keys", [])
                if jwk.get("kty") == "RSA" and "kid" in jwk
            }
            self._metadata = metadata
            self._fetched_at = time.monotonic()
            log.info("admin OpenID metadata loaded", extra={"keys": len(self._keys)})

    async def metadata(self) -> dict[str, Any]:
        if not self._metadata or time.monotonic() - self._fetched_at > METADATA_REFRESH_SECONDS:
            try:
                await self._refresh()
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                raise AuthError("OpenID metadata unavailable") from exc
        return self._metadata

    async def _key(self, kid: str) -> Any:
        await self.metadata()
        if kid not in self._keys and (
            time.monotonic() - self._fetched_at > UNKNOWN_KID_REFETCH_SECONDS
        ):
            # Keys rotate; refetch for an unknown key id, but not on every bad token.
            try:
                await self._refresh()
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                raise AuthError("signing keys unavailable") from exc
        if kid not in self._keys:
            raise AuthError("unknown signing key")
        return self._keys[kid]

    async def validate(self, token: str, nonce: str | None = None) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("malformed token") from exc
        # Entra signs with RS256 only; refusing the rest rules out `none` and key confusion.
        if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
            raise AuthError("unexpected token header")
        key = await self._key(header["kid"])
        metadata = await self.metadata()
        issuer = str(metadata.get("issuer", ""))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=["RS256"],
                audience=[self.client_id, f"api://{self.client_id}"],
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "aud"], "verify_iss": False},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"token rejected: {type(exc).__name__}") from exc
        if self._tenant is not None and _guid(claims.get("tid")) != self._tenant:
            raise AuthError("token rejected: wrong tenant")
        if "{tenantid}" in issuer:
            # Multi-tenant metadata (common, organizations) names its issuer with a placeholder
            # that each token fills with its own tenant: it vouches for no tenant in particular.
            if self._tenant is None:
                raise AuthError("token rejected: multi-tenant issuer and no tenant GUID to hold")
            issuer = issuer.replace("{tenantid}", str(claims.get("tid")))
        if not issuer or claims.get("iss") != issuer:
            raise AuthError("token rejected: wrong issuer")
        if nonce is not None and claims.get("nonce") != nonce:
            raise AuthError("token rejected: wrong nonce")
        return claims

    async def start(self, redirect_uri: str) -> FlowStart:
        metadata = await self.metadata()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .decode()
            .rstrip("=")
        )
        query = urlencode(
            {
                "client_id": self.client_id,
                "response_type": "code",
                "redirect_uri": redirect_uri,
                "response_mode": "query",
                "scope": "openid profile",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = str(metadata.get("authorization_endpoint", ""))
        if not endpoint:
            raise AuthError("no authorization endpoint in the OpenID metadata")
        return FlowStart(f"{endpoint}?{query}", state, nonce, verifier)

    async def redeem(
        self, code: str, redirect_uri: str, verifier: str, nonce: str
    ) -> dict[str, Any]:
        """Exchange the code for tokens; the claims of the validated ID token."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "client_id": self.client_id,
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "scope": "openid profile",
        }
        if self._client_secret:
            form["client_secret"] = self._client_secret
        try:
            async with self._session.post(
                str(metadata["token_endpoint"]),
                data=form,
                timeout=aiohttp.ClientTimeout(total=15),
            ) as response:
                body = await response.json(content_type=None)
                if response.status != 200:
                    error = body.get("error") if isinstance(body, dict) else None
                    raise AuthError(f"token endpoint refused the code: {oauth_error_code(error)}")
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            raise AuthError("token endpoint unavailable") from exc
        id_token = body.get("id_token") if isinstance(body, dict) else None
        if not isinstance(id_token, str):
            raise AuthError("no ID token in the token response")
        return await self.validate(id_token, nonce=nonce)
