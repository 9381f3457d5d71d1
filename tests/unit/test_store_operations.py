"""Every data operation of the `Store` protocol is classed as a read or a write, once."""

from __future__ import annotations

import inspect

from storage.base import READ_OPERATIONS, WRITE_OPERATIONS, Store


def test_every_store_operation_is_a_read_or_a_write() -> None:
    methods = {
        name
        for name, value in inspect.getmembers(Store, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    assert not READ_OPERATIONS & WRITE_OPERATIONS
    assert READ_OPERATIONS | WRITE_OPERATIONS | {"open", "close", "ping"} == methods
