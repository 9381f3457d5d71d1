"""Stable, opaque user pseudonyms that only this server can turn back into user ids.

A pseudonym is the user id encrypted deterministically with AES-SIV under a key derived from
ADMIN_PSEUDONYM_KEY: the same user always gets the same pseudonym (so reviewers can follow one
person across conversations and filter by them), reviewers cannot invert it, and the server can
(to filter by a pseudonym, and for an admin's audited reveal) without keeping any mapping table.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

PREFIX = "p-"
_CONTEXT = [b"admin-user-pseudonym-v1"]


class Pseudonyms:
    def __init__(self, key: bytes, enabled: bool) -> None:
        # AES-SIV needs a 64-byte key (two AES-256 keys); derive it from any configured secret.
        self._siv = AESSIV(hashlib.sha512(b"pseudonym|" + key).digest())
        self.enabled = enabled

    def pseudonym(self, user_id: str) -> str:
        sealed = self._siv.encrypt(user_id.encode("utf-8"), _CONTEXT)
        return PREFIX + base64.b32encode(sealed).decode("ascii").rstrip("=").lower()

    def display(self, user_id: str) -> str:
        """What a viewer sees for a user: the pseudonym unless pseudonymization is off."""
        if not user_id:
            return ""
        return self.pseudonym(user_id) if self.enabled else user_id

    def resolve(self, reference: str) -> str | None:
        """The user id behind a pseudonym; None when it is not one of ours."""
        if not reference.startswith(PREFIX):
            return None
        body = reference[len(PREFIX) :].upper()
        try:
            sealed = base64.b32decode(body + "=" * (-len(body) % 8))
            return self._siv.decrypt(sealed, _CONTEXT).decode("utf-8")
        except (ValueError, InvalidTag, UnicodeDecodeError):
            return None

    def user_id(self, reference: str) -> str:
        """A pseudonym or a plain user id, as typed in a filter, to a user id. A reference in
        the pseudonym form that this key does not open is refused, never taken as a user id:
        as an id it matches nobody, so a deletion of it would succeed with nothing deleted."""
        if not reference.startswith(PREFIX):
            return reference
        user_id = self.resolve(reference)
        if user_id is None:
            raise UnknownPseudonym(reference)
        return user_id


class UnknownPseudonym(Exception):
    """A `p-...` reference made under another key: another deployment's, or this one's before
    a restart with a random ADMIN_PSEUDONYM_KEY. It names nobody here."""
