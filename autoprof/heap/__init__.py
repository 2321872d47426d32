"""Heap reports: an object census at the trigger and tracemalloc growth over a capture window.

- :mod:`~autoprof.heap.census`: the object census (:func:`object_census`), by type;
- :mod:`~autoprof.heap.holders`: what holds the census's largest objects;
- :mod:`~autoprof.heap.baseline`: censuses compared (:func:`grew_since`);
- :mod:`~autoprof.heap.tracker`: growth over a window with tracemalloc (:class:`HeapTracker`);
- :mod:`~autoprof.heap.text`: heap.txt (:func:`render_heap_text`).
"""

from __future__ import annotations

from autoprof.heap.baseline import CensusBaseline, compare_census, grew_since
from autoprof.heap.census import LARGE_OBJECT, object_census
from autoprof.heap.holders import HOLDER_DEPTH
from autoprof.heap.text import render_heap_text
from autoprof.heap.tracker import HeapTracker

__all__ = [
    "HOLDER_DEPTH",
    "LARGE_OBJECT",
    "CensusBaseline",
    "HeapTracker",
    "compare_census",
    "grew_since",
    "object_census",
    "render_heap_text",
]
