"""SummaryStore contract: delta arithmetic, admin list filters and keyset paging."""

from __future__ import annotations

import asyncio
from datetime import timedelta, timezone

import pytest

from storage.base import Store
from storage.models import ConversationSummary, SummaryQuery
from tests.storage.support import T0, MakeStore, delta


async def test_first_delta_creates_the_summary(store: Store) -> None:
    await store.apply_summary_delta(
        delta(
            "conv-1",
            channel_id="msteams",
            tenant_id="tenant-1",
            title="Quarterly numbers",
            at=T0,
            messages=2,
            prompt_tokens=100,
            completion_tokens=40,
        )
    )
    summary = await store.get_summary("user-1", "conv-1")
    assert summary is not None
    assert summary.id == "conv-1"
    assert (summary.user_id, summary.channel_id, summary.tenant_id) == (
        "user-1",
        "msteams",
        "tenant-1",
    )
    assert summary.title == "Quarterly numbers"
    assert summary.created_at == summary.last_activity_at == T0
    assert (summary.message_count, summary.prompt_tokens, summary.completion_tokens) == (2, 100, 40)
    assert not summary.flagged


async def test_deltas_increment_and_flag(store: Store) -> None:
    await store.apply_summary_delta(delta("conv-1", title="First", at=T0, messages=2))
    await store.apply_summary_delta(
        delta(
            "conv-1",
            title="Second title is ignored",
            at=T0 + timedelta(minutes=5),
            messages=2,
            prompt_tokens=10,
            completion_tokens=5,
            filtered=1,
            errors=1,
            flag_reasons=["filtered"],
        )
    )
    # An out-of-order (older) delta never moves lastActivityAt back.
    await store.apply_summary_delta(
        delta(
            "conv-1",
            at=T0 + timedelta(minutes=1),
            negative_feedback=1,
            flag_reasons=["negative_feedback", "filtered"],
        )
    )
    summary = await store.get_summary("user-1", "conv-1")
    assert summary is not None
    assert summary.title == "First"
    assert summary.created_at == T0
    assert summary.last_activity_at == T0 + timedelta(minutes=5)
    assert summary.message_count == 4
    assert (summary.prompt_tokens, summary.completion_tokens) == (10, 5)
    assert (summary.filtered_count, summary.error_count, summary.negative_feedback_count) == (
        1,
        1,
        1,
    )
    assert summary.flagged
    assert summary.flag_reasons == ["filtered", "negative_feedback"]


async def test_a_dislike_taken_back_is_counted_off_and_its_flag_reason_goes_at_0(
    store: Store,
) -> None:
    dislike = {"negative_feedback": 1, "flag_reasons": ["negative_feedback"]}
    await store.apply_summary_delta(
        delta("conv-1", at=T0, messages=2, filtered=1, flag_reasons=["filtered"])
    )
    await store.apply_summary_delta(delta("conv-1", at=T0, **dislike))
    await store.apply_summary_delta(delta("conv-1", at=T0, **dislike))

    await store.apply_summary_delta(delta("conv-1", at=T0, negative_feedback=-1))
    summary = await store.get_summary("user-1", "conv-1")
    assert summary is not None
    assert summary.negative_feedback_count == 1
    assert summary.flag_reasons == ["filtered", "negative_feedback"]

    await store.apply_summary_delta(delta("conv-1", at=T0, negative_feedback=-1))
    summary = await store.get_summary("user-1", "conv-1")
    assert summary is not None
    assert summary.negative_feedback_count == 0
    assert summary.flag_reasons == ["filtered"] and summary.flagged
    assert summary.filtered_count == 1 and summary.message_count == 2
    listed = await store.list_summaries(SummaryQuery(negative_feedback=True), 10)
    assert listed.items == []
    listed = await store.list_summaries(SummaryQuery(flag_reason="negative_feedback"), 10)
    assert listed.items == []
    listed = await store.list_summaries(SummaryQuery(flag_reason="filtered"), 10)
    assert [s.conversation_id for s in listed.items] == ["conv-1"]


async def test_the_negative_feedback_count_never_goes_below_0(store: Store) -> None:
    # A dislike that no summary counted (given while it could not be read) taken back.
    await store.apply_summary_delta(delta("conv-1", at=T0, messages=2))
    await store.apply_summary_delta(delta("conv-1", at=T0, negative_feedback=-1))
    await store.apply_summary_delta(
        delta("conv-1", at=T0, negative_feedback=1, flag_reasons=["negative_feedback"])
    )
    summary = await store.get_summary("user-1", "conv-1")
    assert summary is not None
    assert summary.negative_feedback_count == 1
    assert summary.flag_reasons == ["negative_feedback"] and summary.flagged

    await store.apply_summary_delta(delta("conv-1", at=T0, negative_feedback=-1))
    summary = await store.get_summary("user-1", "conv-1")
    assert summary is not None
    assert summary.negative_feedback_count == 0
    assert summary.flag_reasons == [] and not summary.flagged
    listed = await store.list_summaries(SummaryQuery(flagged=False), 10)
    assert [s.conversation_id for s in listed.items] == ["conv-1"]


async def test_concurrent_deltas_all_count(make_store: MakeStore) -> None:
    # Two app instances updating one summary: no increment may be lost.
    first, second = await make_store(), await make_store()
    await asyncio.gather(
        *(
            (first if i % 2 else second).apply_summary_delta(
                delta("conv-1", at=T0 + timedelta(seconds=i), messages=1, prompt_tokens=3)
            )
            for i in range(12)
        )
    )
    summary = await first.get_summary("user-1", "conv-1")
    assert summary is not None
    assert (summary.message_count, summary.prompt_tokens) == (12, 36)
    assert summary.last_activity_at == T0 + timedelta(seconds=11)


async def test_get_summary_is_scoped_to_the_user(store: Store) -> None:
    await store.apply_summary_delta(delta("conv-1", user_id="alice"))
    assert await store.get_summary("bob", "conv-1") is None
    assert await store.get_summary("alice", "conv-2") is None


async def test_find_summary_by_conversation_id_alone(store: Store) -> None:
    await store.apply_summary_delta(delta("conv-1", user_id="alice", title="A"))
    await store.apply_summary_delta(delta("conv-2", user_id="bob", title="B"))
    found = await store.find_summary("conv-2")
    assert found is not None
    assert (found.user_id, found.title) == ("bob", "B")
    assert await store.find_summary("conv-3") is None


async def _seed(store: Store) -> None:
    specs = [
        # conversation, user, tenant, channel, minutes, title, filtered, errors, negative
        ("c01", "alice", "t1", "msteams", 1, "Budget plan", 0, 0, 0),
        ("c02", "alice", "t1", "webchat", 2, "Travel policy", 1, 0, 0),
        ("c03", "bob", "t1", "msteams", 3, "budget review", 0, 1, 0),
        ("c04", "bob", "t2", "msteams", 4, "Lunch", 0, 0, 1),
        ("c05", "carol", "t2", "webchat", 5, "BUDGET 2026", 2, 0, 1),
        ("c06", "carol", "t1", "msteams", 6, "Onboarding", 0, 0, 0),
        ("c07", "alice", "t1", "msteams", 7, "Holidays", 0, 0, 0),
        # Same timestamp as c07: the tie-breaker must still page exactly once.
        ("c08", "bob", "t1", "msteams", 7, "Holidays too", 0, 0, 0),
        ("c09", "dave", "t1", "msteams", 7, "Holidays three", 0, 0, 0),
    ]
    for conv, user, tenant, channel, minutes, title, filtered, errors, negative in specs:
        reasons = (["filtered"] if filtered else []) + (["negative_feedback"] if negative else [])
        await store.apply_summary_delta(
            delta(
                conv,
                user_id=user,
                tenant_id=tenant,
                channel_id=channel,
                title=title,
                at=T0 + timedelta(minutes=minutes),
                messages=2,
                filtered=filtered,
                errors=errors,
                negative_feedback=negative,
                flag_reasons=reasons,
            )
        )


async def _all_pages(
    store: Store, query: SummaryQuery, page_size: int
) -> tuple[list[ConversationSummary], int]:
    items: list[ConversationSummary] = []
    pages = 0
    continuation: str | None = None
    while True:
        page = await store.list_summaries(query, page_size, continuation)
        pages += 1
        assert len(page.items) <= page_size
        items.extend(page.items)
        continuation = page.continuation
        if continuation is None:
            return items, pages
        assert pages < 50, "paging does not terminate"


async def test_list_is_newest_first(store: Store) -> None:
    await _seed(store)
    page = await store.list_summaries(SummaryQuery(), 100)
    assert page.continuation is None
    ids = [s.conversation_id for s in page.items]
    assert set(ids[:3]) == {"c07", "c08", "c09"}  # one timestamp: any stable order
    assert ids[3:] == ["c06", "c05", "c04", "c03", "c02", "c01"]
    times = [s.last_activity_at for s in page.items]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("page_size", [1, 2, 4])
async def test_paging_returns_every_item_exactly_once(store: Store, page_size: int) -> None:
    await _seed(store)
    items, pages = await _all_pages(store, SummaryQuery(), page_size)
    ids = [s.conversation_id for s in items]
    assert sorted(ids) == [f"c0{i}" for i in range(1, 10)]
    assert len(ids) == len(set(ids))
    assert pages >= 9 // page_size
    times = [s.last_activity_at for s in items]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (SummaryQuery(user_ids=["alice"]), {"c01", "c02", "c07"}),
        (SummaryQuery(tenant_id="t2"), {"c04", "c05"}),
        (SummaryQuery(channel_id="webchat"), {"c02", "c05"}),
        (
            SummaryQuery(since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=6)),
            {"c03", "c04", "c05"},
        ),
        (SummaryQuery(flagged=True), {"c02", "c04", "c05"}),
        (SummaryQuery(flagged=False, tenant_id="t2"), set()),
        (SummaryQuery(flag_reason="negative_feedback"), {"c04", "c05"}),
        (SummaryQuery(negative_feedback=False, tenant_id="t2"), set()),
        (SummaryQuery(has_errors=True), {"c03"}),
        (SummaryQuery(user_ids=["nobody"]), set()),
        # Several ids (the admin names one person's two ids): across partitions.
        (SummaryQuery(user_ids=["alice", "carol"]), {"c01", "c02", "c05", "c06", "c07"}),
        (SummaryQuery(user_ids=["alice", "nobody"], channel_id="webchat"), {"c02"}),
    ],
)
async def test_list_filters(store: Store, query: SummaryQuery, expected: set[str]) -> None:
    await _seed(store)
    items, _ = await _all_pages(store, query, 2)
    ids = [s.conversation_id for s in items]
    assert set(ids) == expected
    assert len(ids) == len(expected)


async def test_since_and_until_given_with_a_utc_offset_mean_the_same_moments(
    store: Store,
) -> None:
    await _seed(store)
    tokyo = timezone(timedelta(hours=9))
    query = SummaryQuery(
        since=(T0 + timedelta(minutes=3)).astimezone(tokyo),
        until=(T0 + timedelta(minutes=6)).astimezone(tokyo),
    )
    items, _ = await _all_pages(store, query, 2)
    assert sorted(s.conversation_id for s in items) == ["c03", "c04", "c05"]


async def test_activity_written_with_a_utc_offset_sorts_and_filters_by_its_moment(
    store: Store,
) -> None:
    await _seed(store)
    # 09:06:30 UTC, written as 04:06:30-05:00: between c06 (09:06) and c07 (09:07).
    new_york = timezone(timedelta(hours=-5))
    await store.apply_summary_delta(
        delta("c10", at=(T0 + timedelta(minutes=6, seconds=30)).astimezone(new_york))
    )
    page = await store.list_summaries(SummaryQuery(), 100)
    assert [s.conversation_id for s in page.items][3:5] == ["c10", "c06"]
    since = SummaryQuery(since=T0 + timedelta(minutes=6, seconds=15))
    items, _ = await _all_pages(store, since, 2)
    assert sorted(s.conversation_id for s in items) == ["c07", "c08", "c09", "c10"]


async def test_filtered_list_pages_exactly_once(store: Store) -> None:
    await _seed(store)
    items, _ = await _all_pages(store, SummaryQuery(tenant_id="t1", channel_id="msteams"), 2)
    assert sorted(s.conversation_id for s in items) == ["c01", "c03", "c06", "c07", "c08", "c09"]


async def test_a_page_that_holds_the_last_match_has_no_continuation(store: Store) -> None:
    await _seed(store)
    page = await store.list_summaries(SummaryQuery(), 9)
    assert len(page.items) == 9 and page.continuation is None
    # Filtered: the last match (c02) is followed by a row that does not match (c01).
    webchat = await store.list_summaries(SummaryQuery(channel_id="webchat"), 2)
    assert [s.conversation_id for s in webchat.items] == ["c05", "c02"]
    assert webchat.continuation is None
    flagged = await store.list_summaries(SummaryQuery(flagged=True), 2)
    assert [s.conversation_id for s in flagged.items] == ["c05", "c04"]
    assert flagged.continuation is not None
    rest = await store.list_summaries(SummaryQuery(flagged=True), 2, flagged.continuation)
    assert [s.conversation_id for s in rest.items] == ["c02"] and rest.continuation is None


async def test_invalid_continuation_token_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="continuation"):
        await store.list_summaries(SummaryQuery(), 2, "not-a-token")
