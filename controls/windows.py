"""Counter windows: fixed UTC minute buckets for requests, UTC days for tokens.

A fixed minute bucket (`m:2026-11-21T10:05`) costs one atomic counter update per request and
resets at a time the user can be told exactly. Its known weakness, up to twice the limit across
a minute boundary, is acceptable for a per-user protective limit; a sliding approximation would
need a second read per request for little gain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Counters outlive their window a little (clock skew between instances), then the store drops them.
MINUTE_TTL_SECONDS = 5 * 60
DAY_TTL_SECONDS = 2 * 24 * 3600


@dataclass(frozen=True)
class Window:
    key: str
    starts_at: datetime
    resets_at: datetime
    ttl_seconds: int

    def seconds_left(self, now: datetime) -> int:
        return max(1, int((self.resets_at - now).total_seconds() + 0.999))


def minute_window(now: datetime) -> Window:
    start = now.astimezone(UTC).replace(second=0, microsecond=0)
    return Window(
        f"m:{start:%Y-%m-%dT%H:%M}", start, start + timedelta(minutes=1), MINUTE_TTL_SECONDS
    )


def day_window(now: datetime) -> Window:
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return Window(f"d:{start:%Y-%m-%d}", start, start + timedelta(days=1), DAY_TTL_SECONDS)


def minute_number(window: Window) -> int:
    """A minute window as minutes since the Unix epoch: what the store's usage document keeps."""
    return int(window.starts_at.timestamp()) // 60
