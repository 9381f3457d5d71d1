"""Refusal events: a structured log line and an audit record, never the message text.

A flood of refused messages (a removed organization's users, a user over a limit, a loop of
replies) must not bury reviewers' actions in the audit log: callers record a refusal once per
key (what it names) and UTC minute (`first_this_minute`), every refused message is still told
to its sender, and the others are counted in one `<event>_untold` log line once that minute is
over (within about a second, on this log's clock), or at `close`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from controls.clock import Clock, utc_now
from controls.windows import minute_number, minute_window
from storage.base import AuditStore, StoreError
from storage.models import AuditRecord, user_ref

log = logging.getLogger("controls")

# How often the minutes that are over are looked for, while refusals are being counted.
_TICK_SECONDS = 1.0


@dataclass
class _Told:
    """A refusal recorded in `minute` (minutes since the epoch); `untold`: how many more under
    its key that minute were not recorded. `event`, `scope`, `user_id` and `detail` name them
    in the `<event>_untold` line as the recorded one was named."""

    event: str
    scope: str
    user_id: str
    minute: int
    detail: dict[str, str | int] = field(default_factory=dict)
    untold: int = 0


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
        self._told: dict[Hashable, _Told] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

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

    def first_this_minute(
        self, key: Hashable, event: str, scope: str, *, user_id: str = "", **detail: str | int
    ) -> bool:
        """Whether a refusal is the first under `key` in this UTC minute: then the caller
        `record`s it. Otherwise it is counted, and the count logged in one `<event>_untold`
        line (`scope`, `user_id` and `detail` named as `record` names them) once the minute is
        over. After `close` (shutdown) every refusal is recorded."""
        if self._closed:
            return True
        minute = minute_number(minute_window(self._clock()))
        told = self._told.get(key)
        if told is not None and told.minute == minute:
            told.untold += 1
            return False
        if told is not None:
            self._log_untold(told)
        self._told[key] = _Told(event, scope, user_id, minute, dict(detail))
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(
                self._end_minutes_periodically(), name="refusal-counts"
            )
        return True

    def close(self) -> None:
        """Shutdown: the counts of refusals not recorded are logged now, minute over or not."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        self._end_minutes(math.inf)

    async def _end_minutes_periodically(self) -> None:
        while self._told:
            await asyncio.sleep(_TICK_SECONDS)
            self._end_minutes(minute_number(minute_window(self._clock())))

    def _end_minutes(self, before: float) -> None:
        for key, told in list(self._told.items()):
            if told.minute < before:
                del self._told[key]
                self._log_untold(told)

    def _log_untold(self, told: _Told) -> None:
        if told.untold:
            self.untold(told.event, told.scope, told.untold, user_id=told.user_id, **told.detail)

    def untold(
        self, event: str, scope: str, count: int, *, user_id: str = "", **detail: str | int
    ) -> None:
        """`count` more refusals like one `record`ed already that were told to the user but not
        audited nor logged one by one (`first_this_minute`): one log line, the user named as
        `record` names them, event `<event>_untold`."""
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
