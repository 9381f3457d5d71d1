"""Admin log lines name a request by its route's template, never by its path: the path of a
transcript or an export holds the conversation id, and a Teams conversation id can name its
user."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.admin.test_admin_review import signed_in_admin
from tests.conftest import FaultyAppFactory
from tests.faults import FaultKind

CONVERSATION = "a:1Personal-carol.nakamura@contoso.com"


async def test_a_store_failure_on_a_transcript_logs_the_route_not_the_conversation_id(
    make_faulty_app: FaultyAppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client, store = await make_faulty_app()
    admin: Any = await signed_in_admin(client, caplog)
    store.fail(FaultKind.ERROR, "read")

    for path in (
        f"/admin/api/conversations/{CONVERSATION}",
        f"/admin/conversations/{CONVERSATION}",
    ):
        assert (await admin.get(path)).status == 503

    # The session check reads the store first: that is what fails and is logged.
    logged = [r for r in caplog.records if r.name == "admin.web" and r.levelno >= logging.WARNING]
    assert logged
    for record in logged:
        assert "carol" not in repr(record.__dict__)
        assert "{" in record.__dict__["route"]  # the template, e.g. /admin/conversations/{id}
