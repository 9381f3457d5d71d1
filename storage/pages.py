"""Regrouping a stream of documents into pages, shared by the stores' paged readers."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TypeVar

T = TypeVar("T")


async def in_pages(items: AsyncGenerator[T, None], size: int) -> AsyncGenerator[list[T], None]:
    """`items` in lists of `size`, the last one shorter; never an empty list. Holds one list.
    Closing it early closes `items` too."""
    if size < 1:
        raise ValueError("a page holds at least one item")
    async with aclosing(items):
        page: list[T] = []
        async for item in items:
            page.append(item)
            if len(page) == size:
                yield page
                page = []
        if page:
            yield page
