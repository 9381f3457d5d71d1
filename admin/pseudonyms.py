"""Stable, opaque user pseudonyms that only this server can turn back into user ids.

A pseudonym is the user id encrypted deterministically with AES-SIV under a key derived from
ADMIN_PSEUDONYM_KEY: the same user always gets the same pseudonym (so reviewers can follow one
person across conversations and filter by them), reviewers cannot invert it, and the server can
(to filter by a pseudonym, and for an admin's audited reveal) without keeping any mapping table.

A rotated key changes every pseudonym, but the audit log keeps the old ones. The keys it had
before (ADMIN_PSEUDONYM_PREVIOUS_KEYS) are only read with: a pseudonym one of them made still
names its user (filters, links, reveals, deletions and exports), and a person's audit records are
looked up under the pseudonyms of every key. Whatever is written or shown uses the current key.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from storage.ids import person_ids

PREFIX = "p-"
_CONTEXT = [b"admin-user-pseudonym-v1"]


def _siv(key: bytes) -> AESSIV:
    # AES-SIV needs a 64-byte key (two AES-256 keys); derive it from any configured secret.
    return AESSIV(hashlib.sha512(b"pseudonym|" + key).digest())


def _seal(siv: AESSIV, user_id: str) -> str:
    sealed = siv.encrypt(user_id.encode("utf-8"), _CONTEXT)
    return PREFIX + base64.b32encode(sealed).decode("ascii").rstrip("=").lower()


class Pseudonyms:
    def __init__(self, key: bytes, enabled: bool, previous_keys: Sequence[bytes] = ()) -> None:
        self._siv = _siv(key)
        self._previous = [_siv(old) for old in dict.fromkeys(previous_keys) if old != key]
        self.enabled = enabled

    @property
    def previous_keys(self) -> int:
        """How many previous keys are read with (a count: the keys are secrets)."""
        return len(self._previous)

    def pseudonym(self, user_id: str) -> str:
        return _seal(self._siv, user_id)

    def of_person(self, user_id: str) -> str:
        """The pseudonym of the person behind a stored user id: that of the first of their ids
        (`person_ids`), so that `dl_<object id>` and the object id name one person alike in
        the pages, the audit log and the refusals recorded by the bot."""
        return self.pseudonym(person_ids(user_id)[0])

    def every_pseudonym(self, user_id: str) -> list[str]:
        """The pseudonyms of a user id under the current key and each previous one (in that
        order): what the audit log may have named them by."""
        return [_seal(siv, user_id) for siv in (self._siv, *self._previous)]

    def resolve(self, reference: str) -> str | None:
        """The user id behind a pseudonym of the current key or a previous one; None when it is
        not one of ours."""
        if not reference.startswith(PREFIX):
            return None
        body = reference[len(PREFIX) :].upper()
        try:
            sealed = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError:
            return None
        for siv in (self._siv, *self._previous):
            try:
                return siv.decrypt(sealed, _CONTEXT).decode("utf-8")
            except (InvalidTag, ValueError, UnicodeDecodeError):
                continue
        return None

    def user_id(self, reference: str) -> str:
        """A pseudonym or a plain user id, as typed in a filter, to a user id. A reference in
        the pseudonym form that no key of ours opens is refused, never taken as a user id:
        as an id it matches nobody, so a deletion of it would succeed with nothing deleted."""
        if not reference.startswith(PREFIX):
            return reference
        user_id = self.resolve(reference)
        if user_id is None:
            raise UnknownPseudonym(reference)
        return user_id

    def current(self, reference: str) -> str:
        """A reference as the current key names it: a pseudonym made with a previous key becomes
        the current key's pseudonym of the same id; anything else stays as it is. Refused as in
        `user_id` when it is in the pseudonym form and no key of ours opens it."""
        if not reference.startswith(PREFIX):
            return reference
        return self.pseudonym(self.user_id(reference))


class UnknownPseudonym(Exception):
    """A `p-...` reference that no key of ours opens: another deployment's, this one's from
    before a key rotation whose old key is not among ADMIN_PSEUDONYM_PREVIOUS_KEYS, or from
    before a restart with a random ADMIN_PSEUDONYM_KEY. It names nobody here."""
