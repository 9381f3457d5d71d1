"""Refusal events: a structured log line and an audit record, never the message text."""

from __future__ import annotations

import logging
import uuid

from controls.clock import Clock, utc_now
from storage.base import AuditStore, StoreError
from storage.models import AuditRecord

log = logging.getLogger("controls")


class RefusalLog:
    def __init__(self, audit: AuditStore, clock: Clock = utc_now) -> None:
        self._audit = audit
        self._clock = clock

    async def record(self, event: str, scope: str, **detail: str | int) -> None:
        """`event` is e.g. `quota_exceeded`, `tenant_refused`, `channel_refused`."""
        log.warning(event, extra={"event": event, "scope": scope, **detail})
        now = self._clock()
        record = AuditRecord(
            id=uuid.uuid4().hex,
            day=now.date().isoformat(),
            at=now,
            actor="system",
            action=event,
            target=scope,
            detail=dict(detail),
        )
        try:
            await self._audit.append_audit(record)
        except StoreError:
            # The refusal itself stands; only its audit record is missing.
            log.exception("the refusal audit record could not be written", extra={"event": event})
