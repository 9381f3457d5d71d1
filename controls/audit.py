"""Refusal events: a structured log line and an audit record, never the message text."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from controls.clock import Clock, utc_now
from storage.base import AuditStore, StoreError
from storage.models import AuditRecord

log = logging.getLogger("controls")


class RefusalLog:
    def __init__(
        self,
        audit: AuditStore,
        clock: Clock = utc_now,
        *,
        name_user: Callable[[str], str] | None = None,
    ) -> None:
        """`name_user`: how an audit record names a user (app.py passes the admin pseudonym,
        as deletion records use, so the audit log that outlives a deleted user does not hold
        the user id); without it a record about a user names its scope."""
        self._audit = audit
        self._clock = clock
        self._name_user = name_user

    async def record(
        self, event: str, scope: str, *, user_id: str = "", **detail: str | int
    ) -> None:
        """`event` is e.g. `quota_exceeded`, `tenant_refused`, `channel_refused`; `user_id`
        when the refusal is about one user (the log line keeps the scope)."""
        log.warning(event, extra={"event": event, "scope": scope, **detail})
        now = self._clock()
        target = self._name_user(user_id) if user_id and self._name_user else scope
        record = AuditRecord(
            id=uuid.uuid4().hex,
            day=now.date().isoformat(),
            at=now,
            actor="system",
            action=event,
            target=target,
            detail=dict(detail),
        )
        try:
            await self._audit.append_audit(record)
        except StoreError:
            # The refusal itself stands; only its audit record is missing.
            log.exception("the refusal audit record could not be written", extra={"event": event})
