"""The admin sub-app's own small settings group, built by app.py from the one `Settings`
(the admin package may import only `storage`, so it never sees `config`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import StrEnum


class AuthMode(StrEnum):
    # One-time sign-in links written to the log (the first at start-up, for make run); closed
    # otherwise.
    LOCAL = "local"
    # App Service Authentication (Easy Auth) in front: trust X-MS-CLIENT-PRINCIPAL.
    APPSERVICE = "appservice"
    # The app validates Entra ID tokens itself and keeps a signed session cookie.
    OIDC = "oidc"


@dataclass(frozen=True)
class AdminSettings:
    mode: AuthMode = AuthMode.LOCAL
    # Where people reach the app (sign-in link, OIDC redirect URI); empty = the request's own URL.
    public_base_url: str = ""
    # Where the local one-time sign-in links written to the log point.
    link_base_url: str = "http://127.0.0.1:3978"
    oidc_metadata_url: str = ""
    oidc_client_id: str = ""
    # The admin app registration's tenant: a token of any other tenant is refused.
    oidc_tenant_id: str = ""
    oidc_client_secret: str = field(default="", repr=False)
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    session_hours: float = 8.0
    pseudonymize: bool = True
    pseudonym_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    # True when the key was generated for this process: pseudonyms change on restart.
    pseudonym_key_ephemeral: bool = True
    # The keys pseudonym_key replaced (rotations): their pseudonyms are read, never made.
    previous_pseudonym_keys: tuple[bytes, ...] = field(default=(), repr=False)
    # Proxies in front (appservice mode) that each append the address they saw to
    # X-Forwarded-For: App Service's front end (1), and Application Gateway before it (2).
    trusted_proxy_hops: int = 1
