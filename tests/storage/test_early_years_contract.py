"""Times before the year 1000 (reachable through the admin date filters, `since=0999-01-01`) are
stored, compared and read back as times on both stores, and Cosmos DB's fixed-width timestamps
keep four-digit years."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from pydantic import TypeAdapter

from storage.base import Store
from storage.cosmos import _stamp
from storage.models import SummaryQuery
from tests.storage.support import T0, delta, message

STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
EARLY = datetime(999, 12, 31, 23, 59, 59, 5, tzinfo=UTC)


def test_cosmos_timestamps_have_four_digit_years_and_sort_as_times() -> None:
    moments = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9, 5, 6, 7, 8, 9, tzinfo=UTC),
        datetime(99, 1, 1, tzinfo=UTC),
        EARLY,
        datetime(1000, 1, 1, tzinfo=UTC),
        T0,
        T0 + timedelta(microseconds=250_000),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    stamps = [_stamp(moment) for moment in moments]
    assert all(STAMP.fullmatch(stamp) for stamp in stamps), stamps
    assert sorted(stamps) == stamps
    assert _stamp(EARLY) == "0999-12-31T23:59:59.000005Z"
    assert _stamp(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000000Z"
    # Read back as the same moments (pydantic refuses `999-12-31T...`).
    read = TypeAdapter(datetime)
    assert [read.validate_python(stamp) for stamp in stamps] == moments


def test_cosmos_timestamps_keep_their_format_for_usual_years() -> None:
    for moment in (T0, T0 + timedelta(microseconds=250_000), datetime(2026, 11, 21, tzinfo=UTC)):
        assert _stamp(moment) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Any zone is stored as the same moment in UTC.
    tokyo = timezone(timedelta(hours=9))
    assert _stamp(datetime(2026, 11, 1, 18, 0, tzinfo=tokyo)) == "2026-11-01T09:00:00.000000Z"
    assert _stamp(datetime(2026, 11, 1, 9, 0)) == "2026-11-01T09:00:00.000000Z"


async def test_activity_before_the_year_1000_sorts_and_filters_as_a_time(store: Store) -> None:
    await store.apply_summary_delta(delta("early", at=EARLY, messages=1))
    await store.apply_summary_delta(delta("now", at=T0, messages=1))

    page = await store.list_summaries(SummaryQuery(), 10)
    assert [s.conversation_id for s in page.items] == ["now", "early"]
    assert page.items[1].last_activity_at == EARLY
    since = await store.list_summaries(SummaryQuery(since=datetime(999, 1, 1, tzinfo=UTC)), 10)
    assert [s.conversation_id for s in since.items] == ["now", "early"]
    until = await store.list_summaries(SummaryQuery(until=datetime(1000, 1, 1, tzinfo=UTC)), 10)
    assert [s.conversation_id for s in until.items] == ["early"]
    after = await store.list_summaries(SummaryQuery(since=datetime(1000, 1, 1, tzinfo=UTC)), 10)
    assert [s.conversation_id for s in after.items] == ["now"]
    first = await store.list_summaries(SummaryQuery(), 1)
    rest = await store.list_summaries(SummaryQuery(), 1, first.continuation)
    assert [s.conversation_id for s in rest.items] == ["early"] and rest.continuation is None


async def test_a_message_dated_before_the_year_1000_is_read_back(store: Store) -> None:
    await store.add_message(message("conv", 1, created_at=EARLY))
    [stored] = await store.conversation_messages("conv")
    assert stored.created_at == EARLY
