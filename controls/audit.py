"""Refusal events: a structured log line and an audit record, never the message text."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from controls.clock import Clock, utc_now
from storage.base import AuditStore, StoreError
from storage.models import AuditRecord, user_ref

log = logging.getLogger("controls")


class RefusalLog:
    def __init__(
        self,
        audit: AuditStore,
        clock: Clock = utc_now,
        *,
        name_user: Callable[[str], str] | None = None,
    ) -> None:
        """`name_user`: how a refusal about a user names the user, in its audit record and its
        log line alike (app.py passes the admin pseudonym, as deletion records use: both outlive
        a deleted user, the log in Application Insights too, so neither may hold the user id);
        without it, the user's non-reversible reference (`user:<user_ref>`)."""
        self._audit = audit
        self._clock = clock
        self._name_user = name_user

    async def record(
        self, event: str, scope: str, *, user_id: str = "", **detail: str | int
    ) -> None:
        """`event` is e.g. `quota_exceeded`, `tenant_refused`, `channel_refused`; `user_id`
        when the refusal is about one user: then `scope` (which holds the user id) is named
        neither in the log line nor in the audit record, both name the user as `name_user` does
        (the log line's `scope` is the record's `target`, so the two can be matched)."""
        target = self._target(scope, user_id)
        log.warning(event, extra={"event": event, "scope": target, **detail})
        now = self._clock()
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

    def untold(
        self, event: str, scope: str, count: int, *, user_id: str = "", **detail: str | int
    ) -> None:
        """`count` more refusals like one `record`ed already that were told to the user but not
        audited nor logged one by one (controls.quotas: one record per user, limit and minute):
        one log line, the user named as `record` names them, event `<event>_untold`."""
        log.warning(
            f"{event}_untold",
            extra={
                "event": f"{event}_untold",
                "scope": self._target(scope, user_id),
                "count": count,
                **detail,
            },
        )

    def _target(self, scope: str, user_id: str) -> str:
        if not user_id:
            return scope
        if self._name_user is not None:
            return self._name_user(user_id)
        return f"user:{user_ref(user_id)}"
