"""`app.serve()` settles the garbage collector once the app has started: startup objects are
frozen out of full collections and young collections run less often."""

from __future__ import annotations

import gc

from aiohttp import web

from app import GC_YOUNG_THRESHOLD, _settle_garbage_collector


async def test_startup_objects_are_frozen_and_young_collections_are_rarer() -> None:
    threshold = gc.get_threshold()
    try:
        await _settle_garbage_collector(web.Application())
        assert gc.get_freeze_count() > 10_000  # the modules, clients and tables loaded so far
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert gc.get_threshold()[1:] == threshold[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
