"""Who is asking: principals, roles, the signed session cookie, App Service's principal header
and the local one-time sign-in links. OpenID Connect token validation lives in `oidc.py`.

Roles come from the Entra ID app roles in the token's `roles` claim: `Reviewer` reads, `Admin`
also exports, deletes, reveals users and reads the audit log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class AuthError(Exception):
    """Not authenticated. The message is safe to log, never shown in detail."""


class Role(StrEnum):
    REVIEWER = "Reviewer"
    ADMIN = "Admin"


@dataclass(frozen=True)
class Principal:
    id: str
    name: str
    roles: frozenset[Role]
    # session | appservice | bearer
    via: str
    # The CSRF token this principal must send with state-changing requests (None for bearer
    # tokens: a browser never attaches an Authorization header by itself).
    csrf: str | None = None
    session_id: str | None = None
    # When the session cookie expires (epoch seconds): its sign-out is kept that long.
    session_expires: int | None = None

    def has(self, role: Role) -> bool:
        if role is Role.REVIEWER:
            return bool(self.roles & {Role.REVIEWER, Role.ADMIN})
        return role in self.roles

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles


def roles_from(values: Any) -> frozenset[Role]:
    """App roles from a `roles` claim; unknown roles are ignored."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return frozenset()
    known = {role.value: role for role in Role}
    return frozenset(known[v] for v in values if isinstance(v, str) and v in known)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    """Encrypted, expiring text values for addresses (Fernet: AES with an HMAC, and its time):
    what a page's address must carry across a reload or a link but must not show where
    addresses are logged (App Service HTTP logs, Application Gateway access logs), such as the
    words an admin searched for."""

    def __init__(self, secret: bytes, purpose: str, ttl_seconds: int) -> None:
        key = hmac.new(secret, purpose.encode(), hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._ttl = ttl_seconds

    def seal(self, values: dict[str, str]) -> str:
        sealed = self._fernet.encrypt(json.dumps(values, separators=(",", ":")).encode())
        return sealed.decode("ascii")

    def unseal(self, token: str) -> dict[str, str]:
        try:
            value = json.loads(self._fernet.decrypt(token.encode(), ttl=self._ttl))
        except (InvalidToken, ValueError) as exc:  # forged, mangled or expired
            raise AuthError("bad sealed value") from exc
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise AuthError("malformed sealed value")
        return value


class Signer:
    """HMAC-SHA256 signed, expiring JSON values for cookies (the session, the OIDC flow)."""

    def __init__(self, secret: bytes, purpose: str) -> None:
        self._key = hmac.new(secret, purpose.encode(), hashlib.sha256).digest()

    def _mac(self, body: str) -> str:
        return _b64encode(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def sign(self, payload: dict[str, Any], ttl_seconds: float) -> str:
        value = {**payload, "exp": int(time.time() + ttl_seconds)}
        body = _b64encode(json.dumps(value, separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}"

    def unsign(self, token: str) -> dict[str, Any]:
        # Signed values are base64url: anything else is forged or mangled, and would make the
        # ASCII encoding and compare_digest raise (a 500) instead of refusing.
        if not token.isascii():
            raise AuthError("malformed signed value")
        body, _, mac = token.partition(".")
        if not body or not hmac.compare_digest(mac, self._mac(body)):
            raise AuthError("bad signature")
        try:
            value = json.loads(_b64decode(body))
        except (ValueError, binascii.Error) as exc:
            raise AuthError("malformed signed value") from exc
        if not isinstance(value, dict) or not isinstance(value.get("exp"), int):
            raise AuthError("malformed signed value")
        if value["exp"] < time.time():
            raise AuthError("expired")
        return value


@dataclass
class Sessions:
    """The admin session cookie: a signed principal with its CSRF token. Stateless, so a
    sign-out is kept in the store until the cookie expires (admin/signouts.py)."""

    secret: bytes
    hours: float
    _signer: Signer = field(init=False)

    def __post_init__(self) -> None:
        self._signer = Signer(self.secret, "admin-session")

    def issue(self, subject: str, name: str, roles: frozenset[Role]) -> str:
        payload = {
            "sid": secrets.token_urlsafe(16),
            "sub": subject,
            "name": name,
            "roles": sorted(r.value for r in roles),
            "csrf": secrets.token_urlsafe(24),
        }
        return self._signer.sign(payload, self.hours * 3600)

    def read(self, cookie: str) -> Principal:
        """The session's principal; whether it was signed out is for the caller to ask."""
        value = self._signer.unsign(cookie)
        return Principal(
            id=str(value.get("sub", "")),
            name=str(value.get("name", "")),
            roles=roles_from(value.get("roles")),
            via="session",
            csrf=str(value.get("csrf", "")),
            session_id=str(value.get("sid", "")),
            session_expires=value["exp"],
        )


# App Service Authentication puts the signed-in user in these headers after validating the
# token itself, and strips any copy a client sent. They are trusted only in `appservice` mode.
# https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
PRINCIPAL_ID_HEADER = "X-MS-CLIENT-PRINCIPAL-ID"
PRINCIPAL_NAME_HEADER = "X-MS-CLIENT-PRINCIPAL-NAME"
_OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
_ROLE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
_NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"


def appservice_principal(headers: Any, csrf_secret: bytes) -> Principal:
    raw = headers.get(PRINCIPAL_HEADER)
    if not raw:
        raise AuthError("no App Service principal")
    try:
        document = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise AuthError("malformed App Service principal") from exc
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise AuthError("malformed App Service principal")
    role_type = document.get("role_typ") or _ROLE
    name_type = document.get("name_typ") or _NAME
    claims: dict[str, list[str]] = {}
    for claim in document["claims"]:
        if isinstance(claim, dict) and isinstance(claim.get("val"), str):
            claims.setdefault(str(claim.get("typ")), []).append(claim["val"])
    roles = roles_from(claims.get("roles", []) + claims.get(role_type, []))
    subject = (
        (claims.get(_OID) or claims.get("oid") or [""])[0]
        or headers.get(PRINCIPAL_ID_HEADER, "")
        or (claims.get("sub") or [""])[0]
    )
    if not subject:
        raise AuthError("App Service principal has no id")
    name = (
        (claims.get(name_type) or claims.get("name") or claims.get("preferred_username") or [""])[0]
        or headers.get(PRINCIPAL_NAME_HEADER, "")
        or subject
    )
    # No session of ours: the CSRF token is bound to the identity instead.
    csrf = _b64encode(hmac.new(csrf_secret, f"csrf|{subject}".encode(), hashlib.sha256).digest())
    return Principal(id=subject, name=name, roles=roles, via="appservice", csrf=csrf)


# A link that lies in a log (exported to Application Insights when that is configured) must not
# stay a way in for the life of the process.
LOCAL_LINK_TTL_SECONDS = 15 * 60
# A visitor without a session asks for a fresh link; anyone who reaches /admin/ can ask, so at
# most one a minute is written, and each replaces the one before.
LOCAL_LINK_EVERY_SECONDS = 60


class LinkState(StrEnum):
    """What `LocalSignIn.renew` did, for the sign-in page to say."""

    # A fresh link was written: the one before no longer works.
    WRITTEN = "written"
    # Less than a minute after the last: that one is still the link to use.
    PENDING = "pending"
    # Less than a minute after the last, which is already used: wait for the next.
    WAIT = "wait"


class LocalSignIn:
    """The one-time sign-in links of local mode (`make run`): a random token, usable once and
    for LOCAL_LINK_TTL_SECONDS. The first is made here, for the start-up log."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._token: str | None = secrets.token_urlsafe(32)
        self._made_at = clock()

    @property
    def pending_token(self) -> str | None:
        """The link's token while it can still be used."""
        if self._token is None or self.clock() - self._made_at > LOCAL_LINK_TTL_SECONDS:
            return None
        return self._token

    def renew(self) -> LinkState:
        """A fresh token replacing the one before, unless that one is less than a minute old."""
        now = self.clock()
        if now - self._made_at < LOCAL_LINK_EVERY_SECONDS:
            return LinkState.PENDING if self.pending_token else LinkState.WAIT
        self._token = secrets.token_urlsafe(32)
        self._made_at = now
        return LinkState.WRITTEN

    def redeem(self, token: str) -> bool:
        expected = self.pending_token
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            return False
        self._token = None
        return True
