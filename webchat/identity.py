"""Who is chatting: App Service Authentication (Entra ID) in production, a development user
otherwise.

With `WEBCHAT_AUTH_MODE=appservice`, App Service's authentication module signs the user in before
any request reaches the app and injects `X-MS-CLIENT-PRINCIPAL-ID` (the Entra object id) and
`X-MS-CLIENT-PRINCIPAL` (base64 JSON of the claims); it strips those headers from what the client
sent, so they can be trusted only there. Docs:
https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from config import WebChatAuthMode

TENANT_CLAIM = "http://schemas.microsoft.com/identity/claims/tenantid"
OBJECT_ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
LOCAL_USER_ID = "local-developer"
LOCAL_USER_NAME = "Local developer"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")


@dataclass(frozen=True)
class WebChatUser:
    # An opaque, stable id: the Entra object id, or the local development user's id.
    id: str
    name: str
    tenant_id: str = ""
    aad_object_id: str = ""

    @property
    def channel_user_id(self) -> str:
        # Direct Line reserves the `dl_` prefix for ids bound into a token by the server.
        return f"dl_{self.id}"


class NotSignedIn(Exception):
    pass


def current_user(request: web.Request, mode: WebChatAuthMode) -> WebChatUser:
    if mode is WebChatAuthMode.LOCAL:
        return WebChatUser(id=LOCAL_USER_ID, name=LOCAL_USER_NAME)
    object_id = request.headers.get("X-MS-CLIENT-PRINCIPAL-ID", "").strip()
    if not object_id or not _SAFE_ID.match(object_id):
        raise NotSignedIn("no App Service principal")
    claims = _principal_claims(request.headers.get("X-MS-CLIENT-PRINCIPAL", ""))
    claimed_oid = claims.get(OBJECT_ID_CLAIM) or claims.get("oid")
    if claimed_oid and claimed_oid != object_id:
        raise NotSignedIn("principal headers disagree")
    tenant = claims.get(TENANT_CLAIM) or claims.get("tid") or ""
    name = (
        claims.get("name")
        or request.headers.get("X-MS-CLIENT-PRINCIPAL-NAME", "").strip()
        or object_id
    )
    return WebChatUser(
        id=object_id,
        name=name[:256],
        tenant_id=tenant if _SAFE_ID.match(tenant or "-") else "",
        aad_object_id=object_id,
    )


def _principal_claims(header: str) -> dict[str, str]:
    """First value of each claim type in App Service's `X-MS-CLIENT-PRINCIPAL` (base64 JSON
    `{"auth_typ", "claims": [{"typ", "val"}], "name_typ", "role_typ"}`)."""
    if not header:
        return {}
    try:
        document: Any = json.loads(base64.b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        raise NotSignedIn("unreadable principal") from None
    claims: dict[str, str] = {}
    entries = document.get("claims") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            typ, val = entry.get("typ"), entry.get("val")
            if isinstance(typ, str) and isinstance(val, str):
                claims.setdefault(typ, val)
    return claims
