"""The end-to-end chat tests run on both stores (tests/stores.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from config import Settings
from tests.stores import cosmos_server, settings_on_store, store_backend  # noqa: F401


@pytest.fixture
def make_settings(settings_on_store: Callable[..., Settings]) -> Callable[..., Settings]:  # noqa: F811
    return settings_on_store
