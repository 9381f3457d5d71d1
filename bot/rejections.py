"""Log lines for requests the messaging endpoint turns away, at most two per reason a minute.

Anyone can send `/api/messages` requests without a valid token; one log line each would let
them set the pace of log and Application Insights ingestion. The first rejection for a reason
is logged as it happens; later ones within the minute are only counted, and one line at the
end of that minute says how many there were.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

SUMMARY_SECONDS = 60.0


@dataclass
class _Reason:
    repeated: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class RejectionLog:
    def __init__(self, log: logging.Logger, interval_seconds: float = SUMMARY_SECONDS) -> None:
        self._log = log
        self._interval = interval_seconds
        self._reasons: dict[str, _Reason] = {}

    def rejected(self, reason: str) -> None:
        """`reason`: a fixed sentence (never token contents or message text)."""
        current = self._reasons.get(reason)
        if current is not None:
            current.repeated += 1
            return
        current = self._reasons[reason] = _Reason()
        current.timer = asyncio.get_running_loop().call_later(
            self._interval, self._summarize, reason
        )
        self._log.warning(
            "request rejected: %s", reason, extra={"event": "request_rejected", "reason": reason}
        )

    def close(self) -> None:
        """The counts not yet told are told now (shutdown)."""
        for reason in list(self._reasons):
            self._summarize(reason)

    def _summarize(self, reason: str) -> None:
        current = self._reasons.pop(reason, None)
        if current is None:
            return
        if current.timer is not None:
            current.timer.cancel()
        if current.repeated:
            self._log.warning(
                "request rejected %d more times within %g s of the first: %s",
                current.repeated,
                self._interval,
                reason,
                extra={
                    "event": "request_rejected_repeated",
                    "reason": reason,
                    "count": current.repeated,
                },
            )
